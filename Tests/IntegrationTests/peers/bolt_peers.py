#!/usr/bin/env python3
"""Bolt peers for Tern's integration tests, built on anthunder (SOFA's Python bolt library).

  server PORT            anthunder's bolt listener serving com.tern.test.EchoService:1.0
                         (method echo -> b"echo:" + body; method slow -> waits body-as-ms then answers)
  v2echo PORT [NAME]     a raw bolt server for v1 and v2 frames: answers each request with its content
                         (with NAME instead, when given: a server that says who it is), in the
                         request's version, with a CRC32 when the request carried one
  silent PORT            accepts bolt connections, reads and never answers (prints "frame" per frame header seen)
  client PORT N THREADS  anthunder clients calling through PORT, N calls per thread, checking each
                         answer against its own request; prints "ok CALLS" or "bad ..." and exits 0/1
  once PORT METHOD BODY [N]  N (default 1) anthunder calls of METHOD with BODY through PORT; prints
                         "result BYTES" or "error EXCEPTION" per call and exits 0
"""
import logging
import sys
import threading
import time

logging.basicConfig(level=logging.ERROR)
INTERFACE = "com.tern.test.EchoService:1.0"
PRINT_LOCK = threading.Lock()


class EchoService(object):
    def __init__(self, ctx):
        self.ctx = ctx

    def echo(self, body):
        return b"echo:" + body

    def slow(self, body):
        # Tests wait for this line, not for time: one locked write, so lines from the server's
        # worker threads never interleave.
        with PRINT_LOCK:
            sys.stdout.write("call slow %s\n" % body.decode())
            sys.stdout.flush()
        time.sleep(int(body) / 1000.0)
        return b"slow:" + body


def serve(port):
    # The asyncio listener serves many requests per connection at once and answers each when its
    # worker thread finishes: out of order whenever calls take different times.
    from anthunder.listener.aio_listener import AioListener
    listener = AioListener(("127.0.0.1", port), "tern_test_server", reuse_address=True)
    listener.handler.register_interface(INTERFACE, EchoService)
    print("listening", flush=True)
    listener.run_forever()


def call(port, calls, threads):
    from anthunder import Client
    from mytracer import SpanContext
    Client.mesh_service_address = ("127.0.0.1", port)
    client = Client("tern_test_client")
    failures = []
    done = [0]
    lock = threading.Lock()

    def worker(t):
        for i in range(calls):
            body = ("thread%d-call%d-" % (t, i)).encode() + b"x" * (i * 37 % 300)
            try:
                got = client.invoke_sync(INTERFACE, "echo", body, timeout_ms=5000, spanctx=SpanContext())
            except Exception as e:  # noqa
                with lock:
                    failures.append("thread %d call %d: %r" % (t, i, e))
                continue
            with lock:
                if got != b"echo:" + body:
                    failures.append("thread %d call %d: crossed answer %r" % (t, i, got[:40]))
                else:
                    done[0] += 1

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    if failures:
        print("bad", len(failures), failures[:5], flush=True)
        sys.exit(1)
    print("ok", done[0], flush=True)


def once(port, method, body, n):
    from anthunder import Client
    from mytracer import SpanContext
    Client.mesh_service_address = ("127.0.0.1", port)
    client = Client("tern_test_client")
    for _ in range(n):
        try:
            got = client.invoke_sync(INTERFACE, method, body.encode(), timeout_ms=5000, spanctx=SpanContext())
            print("result", got.decode(errors="replace"), flush=True)
        except Exception as e:  # noqa
            print("error", e, flush=True)


def serve_tcp(port, handle):
    """Accepts connections on 127.0.0.1:port forever, one thread per connection."""
    import socket
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def v2echo(port, name=None):
    import struct
    import zlib

    def serve_conn(conn):
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while True:
                if len(buf) < 2:
                    break
                v2 = buf[0] == 2
                fixed = (24 if v2 else 22)
                if len(buf) < fixed:
                    break
                o = 1 if v2 else 0
                cmd = struct.unpack(">H", buf[2 + o:4 + o])[0]
                rid = struct.unpack(">I", buf[5 + o:9 + o])[0]
                switch = buf[11] if v2 else 0
                at = 10 + o + (1 if v2 else 0) + 4   # after codec, switch (v2) and timeout
                cl, hl, bl = struct.unpack(">HHI", buf[at:at + 8])
                crc = v2 and (switch & 1)
                total = fixed + cl + hl + bl + (4 if crc else 0)
                if len(buf) < total:
                    break
                frame, buf = buf[:total], buf[total:]
                if crc and zlib.crc32(frame[:-4]) != struct.unpack(">I", frame[-4:])[0]:
                    print("bad crc", flush=True)
                    return conn.close()
                content = name.encode() if name else frame[fixed + cl + hl:fixed + cl + hl + bl]
                status = 0
                head = bytes([2, 1]) if v2 else bytes([1])
                resp = head + bytes([0]) + struct.pack(">HBI", 2 if cmd != 0 else 0, 1, rid) + bytes([1])
                if v2:
                    resp += bytes([1 if crc else 0])
                resp += struct.pack(">HHHI", status, 0, 0, len(content)) + content
                if crc:
                    resp += struct.pack(">I", zlib.crc32(resp))
                conn.sendall(resp)

    serve_tcp(port, serve_conn)


def silent(port):
    def drain(conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return
            print("bytes", len(data), flush=True)

    serve_tcp(port, drain)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "v2echo":
        v2echo(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    elif sys.argv[1] == "silent":
        silent(int(sys.argv[2]))
    elif sys.argv[1] == "once":
        once(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    else:
        call(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
