#!/usr/bin/env python3
"""A DNS server for Tern's STRICT_DNS tests (UDP on 127.0.0.1, standard library only).

Prints its port on the first line. Every query is logged to --log as "query NAME TYPE". The
answers come from --answers, a JSON file read again for each query, so a test changes them by
rewriting it:
  {"mode": "answer" | "silent" | "servfail" | "nxdomain",
   "ttl": 30,
   "names": {"svc.test.": ["127.0.0.1", "127.0.0.2"]}}
Names are compared without case; a name not listed gets NXDOMAIN. Only A and AAAA are answered.
"""
import argparse, json, socket, struct, sys


def read_name(msg, off):
    labels = []
    while True:
        n = msg[off]
        if n == 0:
            return ".".join(labels) + ".", off + 1
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    log = open(a.log, "a", buffering=1)
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            qid, flags, qd = struct.unpack("!HHH", msg[:6])
            name, end = read_name(msg, 12)
            qtype, qclass = struct.unpack("!HH", msg[end:end + 4])
        except Exception:
            continue
        log.write("query %s %d\n" % (name.lower(), qtype))
        with open(a.answers) as f:
            conf = json.load(f)
        mode = conf.get("mode", "answer")
        if mode == "silent":
            continue
        question = msg[12:end + 4]
        addresses = {k.lower(): v for k, v in conf.get("names", {}).items()}.get(name.lower())
        rcode = 0
        if mode == "servfail":
            rcode = 2
        elif mode == "nxdomain" or addresses is None:
            rcode = 3
        answers = b""
        count = 0
        if rcode == 0:
            for text in addresses:
                family = socket.AF_INET6 if ":" in text else socket.AF_INET
                rtype = 28 if family == socket.AF_INET6 else 1
                if rtype != qtype:
                    continue
                data = socket.inet_pton(family, text)
                answers += struct.pack("!HHHIH", 0xC00C, rtype, 1, int(conf.get("ttl", 30)), len(data)) + data
                count += 1
        header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
        sock.sendto(header + question + answers, peer)


if __name__ == "__main__":
    sys.exit(main())
