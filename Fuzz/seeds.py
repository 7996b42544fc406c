#!/usr/bin/env python3
"""Writes the seed corpus under Fuzz/corpus/<target>/ (run from anywhere; rewrites the seeds only).

Protocol targets start each input with four control bytes (see the target's check in
Sources/TernFuzzChecks); `ctl(...)` builds them. The config target takes plain JSON.
"""
import json, os, struct, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def ctl(c0=0x80, c1=0x01, c2=0x00, c3=0x00):
    return bytes([c0, c1, c2, c3])


# HTTP/1 requests: byte 0 split point, byte 1 bit 0 byte-by-byte, byte 2 bit 7 small limits.
requests = {
    "get": "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    "post-length": "POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "pipelined": "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "chunked-trailers": "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    "http10-keepalive": "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    "expect-continue": "PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    "connection-options": "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-drop, keep-alive\r\nX-Drop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nKeep-Alive: 5\r\n\r\n",
    "absolute-form": "GET http://example.com:8080/p?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    "options-star": "\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "many-headers": "GET / HTTP/1.1\r\nHost: a\r\n" + "".join(f"X-H{i}: v{i} \t\r\n" for i in range(12)) + "\r\n",
    "bad-bare-lf": "GET / HTTP/1.1\nHost: a\r\n\r\n",
    "bad-fold": "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  more\r\n\r\n",
    "bad-dup-length": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad-te-cl": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
}
for name, text in requests.items():
    write("http-request", name, ctl() + text.encode())
write("http-request", "small-limits", ctl(c0=0x40, c2=0x8C, c3=0x03) + requests["many-headers"].encode())

# HTTP/1 responses: byte 3 bits 4-7 pick the request method (0 GET, 1 HEAD).
responses = {
    "ok-length": ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: x\r\n\r\nhi", 0),
    "no-content": ("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0),
    "chunked": ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 0),
    "continue-then-ok": ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 0),
    "http10-close": ("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", 0),
    "head": ("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 0x10),
    "no-reason": ("HTTP/1.1 404\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 0),
    "bad-status": ("HTTP/1.1 20 OK\r\n\r\n", 0),
}
for name, (text, method) in responses.items():
    write("http-response", name, ctl(c3=method) + text.encode())

# Chunked bodies: bytes 0-1 cut points, byte 2 bit 7 small limits, byte 3 bit 7 byte-by-byte.
bodies = {
    "simple": "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "extensions": "5;a=1;b=\"q\"\r\nhello\r\nA \t;x\r\n0123456789\r\n0;last\r\n\r\n",
    "trailers": "3\r\nabc\r\n0\r\nX-Sum: 42\r\nX-Other: y\r\n\r\n",
    "upper-hex": "1F\r\n" + "x" * 31 + "\r\n0\r\n\r\nafter",
    "bad-size": "zz\r\n",
    "bad-data-length": "3\r\nabcd\r\n0\r\n\r\n",
}
for name, text in bodies.items():
    write("chunked", name, ctl(c0=0x55, c1=0xAA, c3=0x80) + text.encode())
write("chunked", "small-limits", ctl(c0=0x60, c1=0xC0, c2=0x90, c3=0x32) + bodies["trailers"].encode())


# Bolt frames (laid out here from the format, independently of the codec): byte 0 bit 7 small
# frame limit, byte 1 prefix cut, bytes 2-3 the copy's new id.
def bolt(v2=False, kind=1, cmd=1, rid=7, status_or_timeout=3000, cls=b"", headers=(), content=b"", crc=False, raw_headers=b""):
    hdr = raw_headers + b"".join(struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v for k, v in headers)
    b = bytes([2, 1] if v2 else [1]) + bytes([kind]) + struct.pack(">H", cmd) + bytes([1]) + struct.pack(">I", rid) + bytes([1])
    if v2:
        b += bytes([1 if crc else 0])
    b += struct.pack(">H", status_or_timeout) if kind == 0 else struct.pack(">I", status_or_timeout)
    b += struct.pack(">HHI", len(cls), len(hdr), len(content)) + cls + hdr + content
    if crc:
        b += struct.pack(">I", zlib.crc32(b) & 0xFFFFFFFF)
    return b


svc = [(b"service", b"com.example.Echo:1.0"), (b"sofa_head_method_name", b"echo")]
frames = {
    "v1-request": bolt(cls=b"com.alipay.sofa.rpc.core.request.SofaRequest", headers=svc, content=b"\x01\x02payload"),
    "v1-response": bolt(kind=0, cmd=2, status_or_timeout=0, cls=b"com.alipay.sofa.rpc.core.response.SofaResponse", content=b"ok"),
    "v1-heartbeats": bolt(cmd=0, rid=1, status_or_timeout=1000) + bolt(kind=0, cmd=0, rid=1, status_or_timeout=0),
    "v1-oneway": bolt(kind=2, headers=[(b"k", b"")], content=b"x"),
    "v2-request": bolt(v2=True, headers=svc, content=b"abc"),
    "v2-request-crc": bolt(v2=True, headers=svc, content=b"abc", crc=True),
    "v2-response-crc": bolt(v2=True, kind=0, cmd=2, status_or_timeout=0, content=b"done", crc=True),
    "v2-heartbeat": bolt(v2=True, cmd=0, status_or_timeout=1000),
    "null-values": bolt(raw_headers=struct.pack(">I", 1) + b"k" + struct.pack(">II", 0xFFFFFFFF, 0xFFFFFFFF) + struct.pack(">I", 0), headers=[(b"a", b"b")]),
    "pipelined-mixed": bolt(rid=1, headers=svc) + bolt(v2=True, rid=2, crc=True) + bolt(kind=0, cmd=2, rid=3, status_or_timeout=0),
    "bad-header-map": bolt(headers=[(b"key", b"value")])[:-1] + b"\x00",
}
for name, data in frames.items():
    write("bolt", name, ctl(c0=0x00, c1=0x90, c2=0x12, c3=0x34) + data)
write("bolt", "small-limit", ctl(c0=0x90, c1=0x30) + frames["v2-request-crc"])


# MOSN-shaped configs.
def proxy(down, up, router, **extra):
    return {"type": "proxy", "config": dict(downstream_protocol=down, upstream_protocol=up, router_config_name=router, **extra)}


def listener(name, port, *filters, **extra):
    return dict(name=name, address=f"127.0.0.1:{port}", bind_port=True, filter_chains=[{"filters": list(filters)}], **extra)


def server(routers, listeners, **extra):
    return {"servers": [dict(default_log_path="stdout", default_log_level="INFO", routers=routers, listeners=listeners, **extra)]}


def cluster(name, *addresses, **extra):
    return {"name": name, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [{"address": a} for a in addresses]} | extra


http = server(
    [{"router_config_name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*.example.com", "api.*", "exact.org:80"],
      "request_headers_to_add": [{"header": {"key": "x-from", "value": "tern"}, "append": False}],
      "routers": [
          {"match": {"path": "/exact"}, "route": {"cluster_name": "app", "timeout": "1.5s", "prefix_rewrite": "/p"}},
          {"match": {"regex": "/v[0-9]+/.*"}, "route": {"cluster_name": "app", "host_rewrite": "h"}},
          {"match": {"prefix": "/w", "headers": [{"name": "x-env", "value": "^pre.*$", "regex": True}]},
           "route": {"weighted_clusters": [{"cluster": {"name": "app", "weight": 60}}, {"cluster": {"name": "other", "weight": 40}}]}},
          {"match": {"prefix": "/go"}, "redirect": {"response_code": 301, "path_redirect": "/gone", "scheme_redirect": "https"}},
          {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": "hi\n"}},
      ]}]}],
    [listener("l", 2045, proxy("Http1", "Http1", "r", route_timeout="2m30s", request_header_timeout="500ms",
                                max_request_head_bytes=8192, max_header_count=50), connection_idle_timeout="90s")],
    graceful_timeout="30s", processor=2)
http["cluster_manager"] = {"clusters": [cluster("app", "127.0.0.1:8080", "127.0.0.1:8081", connect_timeout="3s", idle_timeout="1h"),
                                        cluster("other", "127.0.0.1:9090", max_request_per_conn=100, conn_buffer_limit_bytes=65536)]}
write("config", "http.json", json.dumps(http, indent=1))

bolt_config = server(
    [{"router_config_name": "b", "virtual_hosts": [{"name": "rpc", "domains": ["*"], "routers": [
        {"match": {"headers": [{"name": "service", "value": "com.example.Echo:1.0"}]}, "route": {"cluster_name": "rpc"}}]}]}],
    [listener("b", 2046, proxy("X", "X", "b", extend_config={"sub_protocol": "bolt"}, max_frame_bytes=1048576,
                                heartbeat_interval="15s", heartbeat_max_misses=3, upstream_connections_per_host=2))])
bolt_config["cluster_manager"] = {"clusters": [cluster("rpc", "127.0.0.1:12200")]}
write("config", "bolt.json", json.dumps(bolt_config))

auto = server(
    [{"router_config_name": "a", "virtual_hosts": [{"name": "all", "domains": ["*"], "routers": [
        {"match": {"prefix": "/"}, "route": {"cluster_name": "c"}}]}]}],
    [listener("auto", 0, proxy("Auto", "Auto", "a"))])
auto["cluster_manager"] = {"clusters": [cluster("c", "[::1]:80", lb_type="LB_RANDOM")]}
auto["admin"] = {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 34901}}}
write("config", "auto-ignored-keys.json", json.dumps(auto))

write("config", "bad-duration.json", json.dumps(server([], [listener("l", 1, proxy("Http1", "Http1", "none"))], graceful_timeout="1x")))
write("config", "json-edges.json", '{"s": "\\u00e9\\ud83d\\ude00\\n\\/", "n": [-0, 1.5e3, 1E-2, 123456789012345678901234567890], "t": true, "f": false, "z": null}')

# Route regexes: pattern, a zero byte, subject.
regex_seeds = {
    "anchored-path": b"^/api/v[0-9]+/users/[0-9]+/profile$\x00/api/v2/users/42/profile",
    "backtracking": b"^/r/(a+)+$\x00/r/" + b"a" * 40 + b"!",
    "sofa-service": b"com\\.alipay\\..*Service:1\\.0\x00com.alipay.test.EchoService:1.0",
    "flags-classes": b"(?i)^[[:alpha:]]\\w*\\b(?:x|y|)\\d{2,4}$\x00Abc_9 x123",
    "dot-newline": b"(?s)a.b|(?m)^c$\x00a\nb\nc\n",
    "utf8": b"^\xc3\xa9+[^\xe2\x82\xac]?$\x00\xc3\xa9\xc3\xa9\xff",
    "empty": b"\x00anything",
    "refused": b"(a)\\1(?=b)\x00ab",
}
for name, data in regex_seeds.items():
    write("regex", name, data)


# TLS server_name extension bodies (RFC 6066), as read from a ClientHello.
def sni(*entries, list_len=None):
    body = b"".join(bytes([t]) + struct.pack(">H", len(n)) + n for t, n in entries)
    return struct.pack(">H", len(body) if list_len is None else list_len) + body

write("sni", "one-name", sni((0, b"alpha.test")))
write("sni", "other-type-first", sni((1, b"x"), (0, b"secure.test")))
write("sni", "list-longer-than-data", sni((0, b"abc"), list_len=200))
write("sni", "name-past-list", sni((0, b"abcdef"), list_len=5))
write("sni", "empty-list", sni())


# Whole ClientHello records for the SNI router (`client-hello`): byte 0 picks a prefix length.
def client_hello(extensions, session_id=b"", suites=b"\x13\x01", record_len=None, hello_type=1):
    body = b"\x03\x03" + bytes(range(32)) + bytes([len(session_id)]) + session_id
    body += struct.pack(">H", len(suites)) + suites + b"\x01\x00"
    if extensions is not None:
        ext = b"".join(struct.pack(">HH", t, len(d)) + d for t, d in extensions)
        body += struct.pack(">H", len(ext)) + ext
    hello = bytes([hello_type]) + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hello) if record_len is None else record_len) + hello

write("client-hello", "sni-after-another", b"\xff" + client_hello([(0xff01, b"\x00"), (0, sni((0, b"a.example")))], session_id=bytes(32)))
write("client-hello", "cut-in-the-middle", b"\x60" + client_hello([(0, sni((0, b"b.example")))]))
write("client-hello", "no-extensions", b"\xff" + client_hello(None))
write("client-hello", "no-sni", b"\xff" + client_hello([(10, b"\x00\x02\x00\x1d")]))
write("client-hello", "record-too-long", b"\xff" + client_hello([(0, sni((0, b"x")))], record_len=0x4001))
write("client-hello", "not-client-hello", b"\xff" + client_hello([(0, sni((0, b"x")))], hello_type=2))
write("client-hello", "plain-text", b"\xff" + b"GET / HTTP/1.1\r\n\r\n")

# Header values ip_access reads a client address from (X-Real-IP and the like).
for name, value in {"ipv4": "203.0.113.7", "ipv4-port": "203.0.113.7:8080", "ipv6": "2001:db8::1",
                    "ipv6-brackets-port": "[2001:db8::1]:443", "mapped": " ::ffff:10.1.2.3 ", "list": "10.0.0.1, 10.0.0.2",
                    "host": "example.com:80", "empty-port": "10.0.0.1:"}.items():
    write("client-address", name, value)

# JWTs as jwt_authn reads them from a request header (`jwt-token`): the token's text only.
def jwt(header, payload, signature=b"sig"):
    import base64
    b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
    return b(header) + b"." + b(payload) + b"." + b(signature)

write("jwt-token", "rs256-claims", jwt(b'{"alg":"RS256","kid":"k1","typ":"JWT"}',
      b'{"iss":"https://issuer.example","aud":["a","b"],"exp":1800000000,"nbf":1700000000.5,"sub":"x"}', bytes(256)))
write("jwt-token", "es256-aud-string", jwt(b'{"alg":"ES256"}', b'{"aud":"tern","iss":"i\\u00e9\\n"}', bytes(64)))
write("jwt-token", "alg-none", jwt(b'{"alg":"none"}', b'{}', b""))
write("jwt-token", "nested", jwt(b'{"alg":"RS256","x":{"y":[1,2,{"z":null}]}}', b'{"a":[[[[true,false]]]],"exp":-1e3}'))
write("jwt-token", "padded", jwt(b'{"alg":"RS256"}', b'{}') + b"=")
write("jwt-token", "two-parts", b"eyJhbGciOiJSUzI1NiJ9.e30")
write("jwt-token", "long", jwt(b'{"alg":"RS256"}', b'{"p":"' + b"a" * 6200 + b'"}'))


# DNS answers as the STRICT_DNS resolver reads them (`dns-answer`): the whole UDP message.
def dns_answer(qid, name, rtype, rdatas, flags=0x8180, ttl=30, cname=None):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.strip(".").split(".")) + b"\0"
    out = struct.pack("!HHHHHH", qid, flags, 1, len(rdatas) + (1 if cname else 0), 0, 0) + q + struct.pack("!HH", rtype, 1)
    owner = b"\xc0\x0c"
    if cname:
        target = b"".join(bytes([len(l)]) + l.encode() for l in cname.strip(".").split(".")) + b"\0"
        at = len(out) + 12
        out += owner + struct.pack("!HHIH", 5, 1, ttl, len(target)) + target
        owner = bytes([0xC0, at])
    for d in rdatas:
        out += owner + struct.pack("!HHIH", rtype, 1, ttl, len(d)) + d
    return out


write("dns-answer", "a-two", dns_answer(0x1234, "svc.test.", 1, [bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])]))
write("dns-answer", "aaaa", dns_answer(0x0101, "svc.test.", 28, [bytes(15) + b"\x01"]))
write("dns-answer", "cname-a", dns_answer(0x0202, "www.example.com.", 1, [bytes([192, 0, 2, 7])], cname="real.example.com."))
write("dns-answer", "nxdomain", dns_answer(0x0303, "gone.test.", 1, [], flags=0x8183))
write("dns-answer", "truncated", dns_answer(0x0404, "big.test.", 1, [bytes([1, 2, 3, 4])], flags=0x8380))
write("dns-answer", "pointer-loop", struct.pack("!HHHHHH", 0x0505, 0x8180, 1, 1, 0, 0) + b"\x01a\x00\x00\x01\x00\x01" + b"\xc0\x1d\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04\x01\x02\x03\x04")
