#!/usr/bin/env python3
"""Instructions Tern executes per proxied request, counted by callgrind (repeatable, unlike timings).

Runs `tern start --workers 1` under `valgrind --tool=callgrind` twice against a local upstream
(served by this script), once with FEW and once with MANY requests after the same warm-up, and
prints (total(MANY) - total(FEW)) / (MANY - FEW): start-up, warm-up and shutdown cancel out.

  scripts/instructions_per_request.py [--bin .build/release/tern] [--protocol http|bolt]
                                      [--conns 1] [--few 200] [--many 2200] [--keep]
                                      [--stream-filters JSON | --stream-filters policy] [--access-log]
                                      [--config TEMPLATE (as http.sh's TERN_CONFIG)]

--conns C: C keep-alive connections in lock step (one request on each, then every answer), so
epoll hands Tern several ready connections per wake-up; 1 is a strictly sequential client.
The HTTP upstream answers like nginx serving a 12-byte file; the bolt upstream echoes 128 bytes.
--stream-filters: the listener's stream_filters (a JSON list); "policy" is ip_access with 20 CIDRs
that do not hold the client plus a fault filter that matches no request (docs/filters.md).
--access-log: the listener writes an access log in MOSN's default format (the writer thread's
instructions count too).
"""
import argparse, os, re, shutil, signal, socket, struct, subprocess, sys, tempfile, threading, time

HTTP_REQUEST = (b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\n"
                b"Accept: */*\r\n\r\n")
HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 17:00:00 GMT\r\n"
                 b"Content-Type: application/octet-stream\r\nContent-Length: 12\r\n"
                 b"Last-Modified: Mon, 23 Nov 2026 16:00:00 GMT\r\nConnection: keep-alive\r\n"
                 b"ETag: \"6560f0a0-c\"\r\nAccept-Ranges: bytes\r\n\r\nxxxxxxxxxxxx")
BOLT_CLASS = b"com.alipay.sofa.rpc.core.request.SofaRequest"


def bolt_headers(*kv):
    return b"".join(struct.pack(">I", len(s)) + s for s in kv)


BOLT_HEADERS = bolt_headers(b"service", b"com.example.EchoService:1.0", b"sofa_head_method_name", b"echo")


def bolt_request(rid, content=b"x" * 128):
    # proto 1, type request, cmd 1 (rpc request), ver2 1, id, codec 1 (hessian2), timeout 3000 ms
    return (struct.pack(">BBHBIBIHHI", 1, 1, 1, 1, rid, 1, 3000, len(BOLT_CLASS), len(BOLT_HEADERS), len(content))
            + BOLT_CLASS + BOLT_HEADERS + content)


def read_exact(sock, n, buf):
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def read_http_response(sock, buf):
    """Reads one Content-Length response; returns the bytes left over."""
    while b"\r\n\r\n" not in buf:
        buf = read_exact(sock, len(buf) + 1, buf)
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("unexpected answer: %r" % head[:80])
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    rest = read_exact(sock, length, rest)
    return rest[length:]


def read_bolt_frame(sock, buf, request_header):
    size = 22 if request_header else 20
    buf = read_exact(sock, size, buf)
    cl, hl, bl = struct.unpack(">HHI", buf[size - 8:size])
    total = size + cl + hl + bl
    buf = read_exact(sock, total, buf)
    return buf[:total], buf[total:]


def serve(listener, handle):
    def loop():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def http_upstream(conn):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                buf = read_exact(conn, len(buf) + 1, buf)
            _, _, buf = buf.partition(b"\r\n\r\n")
            conn.sendall(HTTP_RESPONSE)
    except (EOFError, OSError):
        conn.close()


def bolt_upstream(conn):
    buf = b""
    try:
        while True:
            frame, buf = read_bolt_frame(conn, buf, True)
            rid = frame[5:9]
            cl, hl, bl = struct.unpack(">HHI", frame[14:22])
            cls, content = frame[22:22 + cl], frame[22 + cl + hl:]
            conn.sendall(bytes([1, 0, 0, 2, 1]) + rid + bytes([1, 0, 0]) + struct.pack(">HHI", cl, 0, bl) + cls + content)
    except (EOFError, OSError):
        conn.close()


POLICY_FILTERS = ('[{"type": "ip_access", "config": {"default_action": "allow", "ips": [{"action": "deny", "addrs": [%s]}]}}, '
                  '{"type": "fault", "config": {"abort": {"status": 503, "percentage": 100}, '
                  '"headers": [{"name": "x-chaos", "value": "on"}]}}]'
                  % ", ".join('"10.%d.0.0/16"' % i for i in range(20)))


def config(protocol, listen, upstream, log, stream_filters=None, access_log=None):
    proto = '"downstream_protocol": "Http1", "upstream_protocol": "Http1"' if protocol == "http" else \
            '"downstream_protocol": "bolt", "upstream_protocol": "bolt"'
    match = '{"prefix": "/"}' if protocol == "http" else \
            '{"headers": [{"name": "service", "value": ".*", "regex": true}]}'
    return """{ "servers": [{ "default_log_path": "%s", "default_log_level": "ERROR",
  "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
     "routers": [{ "match": %s, "route": {"cluster_name": "up"} }] }] }],
  "listeners": [{ "name": "l", "address": "%s", "bind_port": true,%s
     "filter_chains": [{ "filters": [{ "type": "proxy", "config": { %s, "router_config_name": "r" } }] }] }] }],
  "cluster_manager": { "clusters": [{ "name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
     "max_request_per_conn": 1000000, "hosts": [{ "address": "%s" }] }] } }""" % (
        log, match, listen, (' "stream_filters": %s,' % stream_filters if stream_filters else "") +
        (' "access_logs": [{"log_path": "%s"}],' % access_log if access_log else ""), proto, upstream)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def connect(port, deadline):
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def drive(protocol, port, conns, rounds):
    """Sends rounds × conns requests in lock step and checks every answer."""
    deadline = time.monotonic() + 60
    socks = [connect(port, deadline) for _ in range(conns)]
    bufs = [b""] * conns
    rid = 0
    for _ in range(rounds):
        for s in socks:
            rid += 1
            s.sendall(HTTP_REQUEST if protocol == "http" else bolt_request(rid))
        for i, s in enumerate(socks):
            if protocol == "http":
                bufs[i] = read_http_response(s, bufs[i])
            else:
                frame, bufs[i] = read_bolt_frame(s, bufs[i], False)
                if frame[10:12] != b"\x00\x00":
                    raise RuntimeError("bolt status %r" % frame[10:12])
    for s in socks:
        s.close()


def count(args, upstream_port, requests, warmup):
    work = tempfile.mkdtemp(prefix="tern-callgrind.")
    port = free_port()
    cfg = os.path.join(work, "tern.json")
    with open(cfg, "w") as f:
        if args.config:
            # http.sh's TERN_CONFIG templates: {{LISTEN}}, {{UPSTREAM}}, {{LOG}}.
            with open(args.config) as t:
                f.write(t.read().replace("{{LISTEN}}", "127.0.0.1:%d" % port).replace("{{UPSTREAM}}", "127.0.0.1:%d" % upstream_port)
                        .replace("{{LOG}}", os.path.join(work, "tern.log")))
        else:
            filters = POLICY_FILTERS if args.stream_filters == "policy" else args.stream_filters
            f.write(config(args.protocol, "127.0.0.1:%d" % port, "127.0.0.1:%d" % upstream_port, os.path.join(work, "tern.log"), filters,
                           os.path.join(work, "access.log") if args.access_log else None))
    out = os.path.join(work, "callgrind.out")
    tern = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             args.bin, "start", "-c", cfg, "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        drive(args.protocol, port, args.conns, warmup // args.conns)
        drive(args.protocol, port, args.conns, requests // args.conns)
    finally:
        tern.send_signal(signal.SIGINT)
        try:
            _, err = tern.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            tern.kill()
            raise
    with open(out) as f:
        totals = [int(m.group(1)) for m in re.finditer(r"^(?:summary|totals): (\d+)", f.read(), re.M)]
    if not totals:
        sys.exit("no callgrind totals; valgrind said:\n" + err.decode(errors="replace")[-2000:])
    if args.keep:
        print("callgrind profile (%d requests): %s" % (requests, out), file=sys.stderr)
    else:
        shutil.rmtree(work)
    return totals[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=".build/release/tern")
    p.add_argument("--protocol", choices=["http", "bolt"], default="http")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--few", type=int, default=200)
    p.add_argument("--many", type=int, default=2200)
    p.add_argument("--stream-filters", default=None, help='the listener\'s stream_filters as JSON, or "policy"')
    p.add_argument("--access-log", action="store_true", help="the listener writes an access log in MOSN's default format")
    p.add_argument("--config", default=None, help="a config template as http.sh's TERN_CONFIG takes ({{LISTEN}}, {{UPSTREAM}}, {{LOG}})")
    p.add_argument("--keep", action="store_true", help="keep the callgrind profiles (for callgrind_annotate)")
    args = p.parse_args()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    serve(listener, http_upstream if args.protocol == "http" else bolt_upstream)
    upstream_port = listener.getsockname()[1]
    few = count(args, upstream_port, args.few, args.warmup)
    many = count(args, upstream_port, args.many, args.warmup)
    print("%s %s conns=%d: %d instructions (%d requests), %d (%d requests) -> %.0f instructions/request"
          % (args.bin, args.protocol, args.conns, few, args.few, many, args.many,
             (many - few) / (args.many - args.few)))


if __name__ == "__main__":
    main()
