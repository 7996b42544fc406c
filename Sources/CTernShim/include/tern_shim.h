// Thin C wrappers for the Linux calls Glibc's Swift overlay lacks or imports awkwardly
// (epoll_event is packed on x86_64; eventfd/timerfd/accept4 and CPU_* are macros or missing).
#ifndef TERN_SHIM_H
#define TERN_SHIM_H
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

enum {
    TERN_EV_IN = 0x001, TERN_EV_OUT = 0x004, TERN_EV_ERR = 0x008, TERN_EV_HUP = 0x010,
    TERN_EV_RDHUP = 0x2000, TERN_EV_ET = (int)(1u << 31)
};

typedef struct { uint32_t events; uint64_t data; } tern_event;

int tern_epoll_create(void);
int tern_epoll_add(int epfd, int fd, uint32_t events, uint64_t data);
int tern_epoll_mod(int epfd, int fd, uint32_t events, uint64_t data);
int tern_epoll_del(int epfd, int fd);
int tern_epoll_wait(int epfd, tern_event *out, int max, int timeout_ms);

int tern_eventfd(void);
int tern_eventfd_signal(int fd);
int tern_eventfd_drain(int fd);

int tern_timerfd_create(void);
int tern_timerfd_arm_ms(int fd, int64_t ms);

int tern_accept4(int fd);
int tern_socket_tcp(int family);
/// A non-blocking, close-on-exec stream socket of any family (AF_INET/AF_INET6: TCP; AF_UNIX).
int tern_socket_stream(int family);
/// dup(2) with close-on-exec: one worker's copy of a listening socket shared by all workers.
int tern_dup_cloexec(int fd);
int tern_set_reuse(int fd, int reuse_port);
int tern_set_nodelay(int fd);
/// SO_KEEPALIVE with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT (each left to the kernel when 0).
int tern_set_keepalive(int fd, int idle, int interval, int probes);
int tern_socket_error(int fd);
/// Where a connection redirected by iptables REDIRECT was going (SO_ORIGINAL_DST, or
/// IP6T_SO_ORIGINAL_DST for IPv6 sockets); -1 with errno when it was not redirected.
int tern_original_dst(int fd, int family, struct sockaddr_storage *out, socklen_t *len);
/// IP_TRANSPARENT / IPV6_TRANSPARENT: accept connections TPROXY steers to this socket.
int tern_set_transparent(int fd, int family);

int tern_cpu_count_affinity(void);
int64_t tern_monotonic_ms(void);
int64_t tern_monotonic_ns(void);
void tern_block_signals(void);
int tern_wait_signal(void);
/* A handled signal, or 0 when none came within `ms` milliseconds. */
int tern_wait_signal_for(int ms);
int tern_errno(void);
void tern_set_thread_name(const char *name);
/// Raises the soft descriptor limit to the hard one (as HAProxy does); returns the new soft limit.
long tern_raise_nofile_limit(void);

/// A non-blocking, close-on-exec pipe of the default size (tcp_proxy's splice path; larger pipes
/// saved little CPU and count against the per-user pipe page limit); 0 or -1 with errno.
int tern_pipe_nonblock(int *read_end, int *write_end);
/// splice(2) of up to `count` bytes from `in` to `out` (one must be a pipe), moving pages and
/// never blocking: a byte count, 0 at the end of the input, or -1 with errno (EAGAIN: not ready).
long tern_splice(int in, int out, size_t count);

/// Hot upgrade: one descriptor (or none: fd < 0) with `len` bytes over a unix stream socket
/// (SCM_RIGHTS); 0 or -1 with errno.
int tern_send_fd(int sock, int fd, const void *data, size_t len);
/// Receives up to `cap` bytes and at most one descriptor (*fd_out, -1 when none came, made
/// close-on-exec); the byte count, 0 at the end, -1 with errno.
long tern_recv_fd(int sock, void *buf, size_t cap, int *fd_out);
/// The user id of the process at the other end of a unix socket (SO_PEERCRED), or -1.
long tern_peer_uid(int sock);
#endif
