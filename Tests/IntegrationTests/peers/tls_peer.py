"""TLS peers for the SNI passthrough tests.

server: a TLS server with its own certificate; prints its port, then answers each line a client
        sends with "backend=NAME sni=SERVER_NAME line=LINE".
client: connects, handshakes with SNI (optionally writing its ClientHello one byte at a time),
        sends one line and prints "cn=PEER_CN answer=ANSWER", or "error=..." and exits 1.
"""
import argparse
import socket
import ssl
import sys
import threading
import time


def serve(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    seen = {}

    def remember(sslobj, name, _ctx):
        seen[id(sslobj)] = name

    context.sni_callback = remember
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def handle(raw):
        try:
            with context.wrap_socket(raw, server_side=True) as tls:
                name = seen.pop(id(tls), None)
                reader = tls.makefile("rb")
                for line in reader:
                    answer = "backend=%s sni=%s line=%s\n" % (args.name, name, line.decode().strip())
                    tls.sendall(answer.encode())
        except (OSError, ssl.SSLError):
            pass

    while True:
        raw, _ = listener.accept()
        threading.Thread(target=handle, args=(raw,), daemon=True).start()


def connect(args):
    context = ssl.create_default_context(cafile=args.ca)
    context.check_hostname = False   # the test reads the certificate's name itself
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=args.sni or None)
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # one segment per byte when trickling
    first = True

    def send_pending():
        nonlocal first
        data = outgoing.read()
        if first and args.trickle and data:
            for b in data:
                sock.sendall(bytes([b]))
                time.sleep(0.0005)
        elif data:
            sock.sendall(data)
        if data:
            first = False

    def receive():
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the peer")
        incoming.write(data)

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                send_pending()
                receive()
        send_pending()
        cert = tls.getpeercert()
        cn = dict(x[0] for x in cert["subject"]).get("commonName")
        tls.write(b"hello\n")
        send_pending()
        answer = b""
        while not answer.endswith(b"\n"):
            try:
                answer += tls.read(4096)
            except ssl.SSLWantReadError:
                receive()
        print("cn=%s answer=%s" % (cn, answer.decode().strip()), flush=True)
    except Exception as e:   # noqa: BLE001 - any failure is the test's answer
        print("error=%s" % e, flush=True)
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--ca", required=True)
    c.add_argument("--sni", default="")
    c.add_argument("--trickle", action="store_true")
    args = p.parse_args()
    serve(args) if args.mode == "server" else connect(args)


if __name__ == "__main__":
    main()
