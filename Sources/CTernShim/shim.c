#define _GNU_SOURCE
#include "tern_shim.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netfilter_ipv4.h>
#include <sched.h>
#include <signal.h>
#include <pthread.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <string.h>

int tern_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev; memset(&ev, 0, sizeof ev);
    ev.events = events; ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}
int tern_epoll_add(int epfd, int fd, uint32_t events, uint64_t data) { return ctl(epfd, EPOLL_CTL_ADD, fd, events, data); }
int tern_epoll_mod(int epfd, int fd, uint32_t events, uint64_t data) { return ctl(epfd, EPOLL_CTL_MOD, fd, events, data); }
int tern_epoll_del(int epfd, int fd) { return ctl(epfd, EPOLL_CTL_DEL, fd, 0, 0); }

int tern_epoll_wait(int epfd, tern_event *out, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) { out[i].events = evs[i].events; out[i].data = evs[i].data.u64; }
    return n;
}

int tern_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
int tern_eventfd_signal(int fd) { uint64_t one = 1; return (int)write(fd, &one, sizeof one); }
int tern_eventfd_drain(int fd) { uint64_t v; return (int)read(fd, &v, sizeof v); }

int tern_timerfd_create(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }
int tern_timerfd_arm_ms(int fd, int64_t ms) {
    struct itimerspec its; memset(&its, 0, sizeof its);
    if (ms > 0) { its.it_value.tv_sec = ms / 1000; its.it_value.tv_nsec = (ms % 1000) * 1000000; }
    return timerfd_settime(fd, 0, &its, NULL);
}

int tern_accept4(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }
int tern_socket_stream(int family) { return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }
int tern_socket_tcp(int family) { return tern_socket_stream(family); }
int tern_dup_cloexec(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 0); }
int tern_set_reuse(int fd, int reuse_port) {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return -1;
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) return -1;
    return 0;
}
int tern_set_nodelay(int fd) { int one = 1; return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
int tern_set_keepalive(int fd, int idle, int interval, int probes) {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0) return -1;
    if (idle > 0 && setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0) return -1;
    if (interval > 0 && setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) < 0) return -1;
    if (probes > 0 && setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes) < 0) return -1;
    return 0;
}
int tern_socket_error(int fd) {
    int err = 0; socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
}
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h, which clashes with glibc's headers).
#define TERN_IP6T_SO_ORIGINAL_DST 80
int tern_original_dst(int fd, int family, struct sockaddr_storage *out, socklen_t *len) {
    if (family == AF_INET6) {
        *len = sizeof(struct sockaddr_in6);
        if (getsockopt(fd, SOL_IPV6, TERN_IP6T_SO_ORIGINAL_DST, out, len) == 0) return 0;
        // An IPv4 client on a dual-stack IPv6 socket was redirected by the IPv4 table.
    }
    *len = sizeof(struct sockaddr_in);
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, len);
}
int tern_set_transparent(int fd, int family) {
    int one = 1;
    if (family == AF_INET6) return setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
    return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
}

int tern_cpu_count_affinity(void) {
    cpu_set_t set; CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return (int)sysconf(_SC_NPROCESSORS_ONLN);
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}
int64_t tern_monotonic_ms(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
int64_t tern_monotonic_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static sigset_t handled_signals(void) {
    sigset_t set; sigemptyset(&set);
    sigaddset(&set, SIGTERM); sigaddset(&set, SIGINT); sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP); sigaddset(&set, SIGUSR1);
    return set;
}
void tern_block_signals(void) {
    sigset_t set = handled_signals();
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}
int tern_wait_signal(void) {
    sigset_t set = handled_signals(); int sig = 0;
    if (sigwait(&set, &sig) != 0) return -1;
    return sig;
}
int tern_wait_signal_for(int ms) {
    sigset_t set = handled_signals();
    struct timespec limit = { ms / 1000, (long)(ms % 1000) * 1000000L };
    int sig = sigtimedwait(&set, NULL, &limit);
    return sig > 0 ? sig : 0;   /* 0: the time passed (or EINTR) with no signal */
}
int tern_errno(void) { return errno; }
void tern_set_thread_name(const char *name) { char n[16]; strncpy(n, name, 15); n[15] = 0; pthread_setname_np(pthread_self(), n); }

#include <sys/resource.h>
long tern_raise_nofile_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); getrlimit(RLIMIT_NOFILE, &rl); }
    return (long)rl.rlim_cur;
}

int tern_pipe_nonblock(int *read_end, int *write_end) {
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    *read_end = fds[0]; *write_end = fds[1];
    return 0;
}
long tern_splice(int in, int out, size_t count) {
    return (long)splice(in, NULL, out, NULL, count, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

#include <sys/socket.h>
int tern_send_fd(int sock, int fd, const void *data, size_t len) {
    struct iovec iov = { (void *)data, len };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov; msg.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf; msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    return n == (ssize_t)len ? 0 : -1;
}
long tern_recv_fd(int sock, void *buf, size_t cap, int *fd_out) {
    struct iovec iov = { buf, cap };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov; msg.msg_iovlen = 1;
    msg.msg_control = control.buf; msg.msg_controllen = sizeof(control.buf);
    *fd_out = -1;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            memcpy(fd_out, CMSG_DATA(c), sizeof(int));
        }
    }
    return (long)n;
}
long tern_peer_uid(int sock) {
    struct ucred cred; socklen_t len = sizeof(cred);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return (long)cred.uid;
}
