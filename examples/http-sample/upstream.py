#!/usr/bin/env python3
"""The tiny upstream of the http-sample: answers every request on 127.0.0.1:8080 with the path
and the x-via-tern header it saw."""
import http.server


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"hello from the app: path={self.path} x-via-tern={self.headers.get('x-via-tern')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Hello).serve_forever()
