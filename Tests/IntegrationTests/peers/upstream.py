#!/usr/bin/env python3
"""A real HTTP/1.1 upstream for Tern's integration tests (Python's http.server).

Binds 127.0.0.1 (or --bind) on the given port (0: the OS picks), prints the port on its first line, and logs
every request it receives (one line: method target) to --log, so tests can prove a request was
never forwarded. Endpoints:
  /sha            -> sha256 and length of the request body (Content-Length or chunked); also
                     logged as "sha TARGET SHA256 LENGTH"
  /big?n=N[&chunked=1]  -> N bytes of a repeating pattern, Content-Length or chunked
  /slow?ms=N      -> waits N ms, then answers
  /close[?n=N]    -> a close-delimited body (no Content-Length): a short text, or N pattern bytes
  /reset          -> reads the request, then closes the connection without answering
  /malformed      -> a response with two different Content-Length fields, then close
  /stats          -> "connections=N requests=M"
  anything else   -> "hello from upstream <path>" and an x-upstream-seen-headers header
"""
import argparse, hashlib, http.server, socketserver, sys, threading, time, urllib.parse

lock = threading.Lock()
stats = {"connections": 0, "requests": 0}
log_file = None

PATTERN = bytes(range(256)) * 64


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with lock:
            stats["connections"] += 1

    def log_message(self, *args):
        pass

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            body = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body, extra=None):
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        with lock:
            stats["requests"] += 1
            if log_file:
                with open(log_file, "a") as f:
                    f.write(f"{self.command} {self.path}\n")
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        body = self.read_body()
        if url.path == "/sha":
            digest = f"{hashlib.sha256(body).hexdigest()} {len(body)}"
            if log_file:
                with lock, open(log_file, "a") as f:
                    f.write(f"sha {self.path} {digest}\n")
            self.send(200, digest.encode())
        elif url.path == "/big":
            n = int(q.get("n", "0"))
            if q.get("chunked") == "1":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Trailer", "x-checksum")
                self.end_headers()
                sent, h = 0, hashlib.sha256()
                while sent < n:
                    piece = PATTERN[: min(len(PATTERN), n - sent)]
                    h.update(piece)
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    sent += len(piece)
                self.wfile.write(b"0\r\nx-checksum: " + h.hexdigest().encode() + b"\r\n\r\n")
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.end_headers()
                sent = 0
                while sent < n:
                    piece = PATTERN[: min(len(PATTERN), n - sent)]
                    self.wfile.write(piece)
                    sent += len(piece)
        elif url.path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            self.send(200, b"slow done")
            self.wfile.flush()
            if log_file:
                with lock, open(log_file, "a") as f:
                    f.write(f"answered {self.path}\n")
        elif url.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            if "n" in q:
                n, sent = int(q["n"]), 0
                while sent < n:
                    piece = PATTERN[: min(len(PATTERN), n - sent)]
                    self.wfile.write(piece)
                    sent += len(piece)
            else:
                self.wfile.write(b"close-delimited body")
            self.close_connection = True
        elif url.path == "/reset":
            self.close_connection = True
        elif url.path == "/malformed":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
            self.close_connection = True
        elif url.path == "/stats":
            with lock:
                self.send(200, f"connections={stats['connections']} requests={stats['requests']}".encode())
        else:
            seen = ",".join(k.lower() for k in self.headers.keys())
            self.send(200, f"hello from upstream {self.path}".encode(),
                      {"x-upstream-seen-headers": seen, "x-upstream-host": self.headers.get("Host", ""),
                       "Set-Cookie": "a=1", "set-cookie": "b=2"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global log_file
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--log")
    a = ap.parse_args()
    log_file = a.log
    srv = Server((a.bind, a.port), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
