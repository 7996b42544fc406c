#!/usr/bin/env python3
"""An HTTP/1.1 upstream on a unix domain socket, for Tern's unix socket tests.

Binds the given path (removing nothing: the path must be free; "@name": an abstract socket), prints "ready" on its first line
once it listens, and answers GET with "hello from unix upstream <path>" (the request target) and
POST with "<length> <sha256>" of the body it read (Content-Length). Stops on SIGTERM or when killed.
"""
import hashlib, http.server, socketserver, sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"

    def do_GET(self):
        self.answer(("hello from unix upstream " + self.path).encode())

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        self.answer(("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode())

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-upstream-host", self.headers.get("Host", ""))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if __name__ == "__main__":
    path = sys.argv[1]
    server = Server("\0" + path[1:] if path.startswith("@") else path, Handler)
    print("ready", flush=True)
    server.serve_forever()
