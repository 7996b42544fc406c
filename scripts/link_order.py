#!/usr/bin/env python3
"""Writes Sources/tern/link-order.txt: every function of the tern binary that runs when Tern starts
and proxies (HTTP/1 plain and over TLS, bolt), as callgrind saw them. The release link places these
first and side by side (lld --symbol-ordering-file), so the pages of code a running Tern touches
are few and contiguous instead of spread over 5 MB of text (the static Swift runtime's functions
are in their own sections, so they move too). A stale list costs resident memory, never
correctness: regenerate after large changes.

  scripts/link_order.py [--bin .build/release/tern] [--out Sources/tern/link-order.txt]
"""
import argparse, os, re, signal, socket, ssl, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from instructions_per_request import (HTTP_REQUEST, bolt_request, read_bolt_frame, read_http_response, serve,
                                      http_upstream, bolt_upstream, free_port, connect)

CONFIG = """{ "servers": [{ "default_log_path": "%(log)s", "default_log_level": "ERROR",
  "routers": [{ "router_config_name": "h", "virtual_hosts": [{ "name": "h", "domains": ["*"],
       "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "http"} }] }] },
     { "router_config_name": "b", "virtual_hosts": [{ "name": "b", "domains": ["*"],
       "routers": [{ "match": {"headers": [{"name": "service", "value": ".*", "regex": true}]}, "route": {"cluster_name": "bolt"} }] }] }],
  "listeners": [
    { "name": "http", "address": "127.0.0.1:%(http)d", "bind_port": true, "filter_chains": [{ "filters": [{ "type": "proxy",
      "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "h" } }] }] },
    { "name": "tls", "address": "127.0.0.1:%(tls)d", "bind_port": true, "filter_chains": [{
      "tls_context": { "status": true, "cert_chain": "%(cert)s", "private_key": "%(key)s" },
      "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "h" } }] }] },
    { "name": "bolt", "address": "127.0.0.1:%(bolt)d", "bind_port": true, "filter_chains": [{ "filters": [{ "type": "proxy",
      "config": { "downstream_protocol": "bolt", "upstream_protocol": "bolt", "router_config_name": "b" } }] }] }] }],
  "cluster_manager": { "clusters": [
    { "name": "http", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [{ "address": "127.0.0.1:%(up_http)d" }] },
    { "name": "bolt", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [{ "address": "127.0.0.1:%(up_bolt)d" }] }] } }"""


def upstream(handle):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    serve(s, handle)
    return s.getsockname()[1]


def workload(ports, deadline):
    for _ in range(50):   # keep-alive HTTP, then a connection per request
        s = connect(ports["http"], deadline)
        rest = b""
        for _ in range(4):
            s.sendall(HTTP_REQUEST)
            rest = read_http_response(s, rest)
        s.close()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for _ in range(30):
        t = context.wrap_socket(connect(ports["tls"], deadline), server_hostname="order.tern.test")
        rest = b""
        for _ in range(3):
            t.sendall(HTTP_REQUEST)
            rest = read_http_response(t, rest)
        t.close()
    for _ in range(20):
        s = connect(ports["bolt"], deadline)
        rest = b""
        for i in range(8):
            s.sendall(bolt_request(i + 1))
            _, rest = read_bolt_frame(s, rest, False)
        s.close()


def functions_of(profile, binary):
    """Symbol names callgrind attributes to `binary`, in first-seen order."""
    objects, names, seen, result, current = {}, {}, set(), [], None
    compressed = re.compile(r"^\((\d+)\)(?: (.*))?$")
    def resolve(table, text):
        m = compressed.match(text)
        if not m:
            return text
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1))
    for line in open(profile, errors="replace"):
        key, _, value = line.rstrip("\n").partition("=")
        if key in ("ob", "cob"):
            name = resolve(objects, value)
            if key == "ob":
                current = name
        elif key in ("fn", "cfn"):
            name = resolve(names, value)
            if key == "fn" and current and os.path.realpath(current) == binary and name and name not in seen \
                    and not name.startswith("0x"):
                seen.add(name)
                result.append(name)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=".build/release/tern")
    p.add_argument("--out", default="Sources/tern/link-order.txt")
    args = p.parse_args()
    binary = os.path.realpath(args.bin)
    work = tempfile.mkdtemp(prefix="tern-order-")
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=order.tern.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    ports = {"http": free_port(), "tls": free_port(), "bolt": free_port(),
             "up_http": upstream(http_upstream), "up_bolt": upstream(bolt_upstream)}
    config = os.path.join(work, "tern.json")
    with open(config, "w") as f:
        f.write(CONFIG % dict(ports, log=os.path.join(work, "tern.log"), cert=cert, key=key))
    profile = os.path.join(work, "callgrind.out")
    tern = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + profile,
                             binary, "start", "-c", config, "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        workload(ports, time.monotonic() + 120)
    finally:
        tern.send_signal(signal.SIGTERM)
        _, err = tern.communicate(timeout=120)
    names = functions_of(profile, binary)
    if len(names) < 500:
        sys.exit("only %d functions found; valgrind said:\n%s" % (len(names), err.decode(errors="replace")[-2000:]))
    with open(args.out, "w") as f:
        f.write("".join(n + "\n" for n in names))
    print("%s: %d functions" % (args.out, len(names)))


if __name__ == "__main__":
    main()
