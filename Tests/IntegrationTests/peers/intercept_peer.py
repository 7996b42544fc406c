#!/usr/bin/env python3
"""A server for the interception tests, run inside a test network namespace.

Binds --host (IPv4 or IPv6) and --port and answers with its name and the address it saw as the
peer, so a test can tell whether a connection came straight from the client or through Tern:
  --mode http  every request -> 200 "<name> saw <peer-ip> <path>"
  --mode echo  on connect writes "<name> saw <peer-ip>\\n", then echoes what it reads
Prints "ready" once listening.
"""
import argparse, http.server, socket, socketserver, sys


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--mode", choices=["http", "echo"], default="http")
    args = ap.parse_args()
    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET

    if args.mode == "http":
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                body = f"{args.name} saw {self.client_address[0]} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        handler = Handler
    else:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.sendall(f"{args.name} saw {self.client_address[0]}\n".encode())
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    self.request.sendall(data)
        handler = Handler

    server = Server((args.host, args.port), handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
