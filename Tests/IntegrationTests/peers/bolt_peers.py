#!/usr/bin/env python3
"""Bolt peers for Tern's integration tests, built on anthunder (SOFA's Python bolt library).

  server PORT            anthunder's bolt listener serving com.tern.test.EchoService:1.0
                         (method echo -> b"echo:" + body; method slow -> waits body-as-ms then answers)
  silent PORT            accepts bolt connections, reads and never answers (prints "frame" per frame header seen)
  client PORT N THREADS  anthunder clients calling through PORT, N calls per thread, checking each
                         answer against its own request; prints "ok CALLS" or "bad ..." and exits 0/1
"""
import logging
import sys
import threading
import time

logging.basicConfig(level=logging.ERROR)
INTERFACE = "com.tern.test.EchoService:1.0"


class EchoService(object):
    def __init__(self, ctx):
        self.ctx = ctx

    def echo(self, body):
        return b"echo:" + body

    def slow(self, body):
        print("call slow", body.decode(), flush=True)   # tests wait for this line, not for time
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


def silent(port):
    import socket
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print("listening", flush=True)

    def drain(conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return
            print("bytes", len(data), flush=True)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "silent":
        silent(int(sys.argv[2]))
    else:
        call(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
