import Foundation
import Glibc
import Testing
import TernTestSupport

/// End-to-end tests: the real `tern` binary between real HTTP clients (curl, raw sockets) and a
/// real HTTP server (Python's http.server).
@Suite(.serialized, .timeLimit(.minutes(5)))
final class HTTPProxyTests {
    let upstream: PythonUpstream
    let tern: TernProcess
    let port: UInt16

    deinit {
        tern.stop()
        upstream.stop()
    }

    init() throws {
        upstream = try PythonUpstream()
        port = freePort()
        tern = try TernProcess(config: proxyConfig(listen: port, upstream: upstream.port, routeTimeout: "1s",
                                                   extraProxyConfig: ", \"max_request_body_bytes\": 33554432"),
                               waitFor: [port], extraArguments: ["--workers", "2"])
    }

    func curl(_ args: [String]) throws -> String {
        try run("/usr/bin/curl", ["-s", "--max-time", "20"] + args).1
    }

    @Test func simpleGetThroughProxy() throws {
        let body = try curl(["http://127.0.0.1:\(port)/hello?x=1"])
        #expect(body == "hello from upstream /hello?x=1")
    }

    @Test func hopByHopAndConnectionNamedHeadersAreRemoved() throws {
        let c = try RawClient(port: port)
        c.send("GET /h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n")
        let r = c.readResponses(1)
        try #require(r.count == 1)
        let seen = r[0].header("x-upstream-seen-headers") ?? ""
        #expect(seen.contains("x-kept"))
        #expect(!seen.contains("x-secret"))
        #expect(!seen.contains("keep-alive"))
        #expect(!seen.contains("te"))
        // Repeated fields stay apart.
        #expect(r[0].headers("set-cookie") == ["a=1", "b=2"])
    }

    @Test func chunkedUploadOfSeveralMegabytesKeepsItsChecksum() throws {
        let size = 5 * 1024 * 1024 + 123
        let (path, expected) = try temporaryPatternFile(size: size)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let chunked = try curl(["-H", "Transfer-Encoding: chunked", "--data-binary", "@\(path)", "http://127.0.0.1:\(port)/sha"])
        #expect(chunked == "\(expected) \(size)")
        let plain = try curl(["--data-binary", "@\(path)", "http://127.0.0.1:\(port)/sha"])
        #expect(plain == "\(expected) \(size)")
    }

    @Test func largeDownloadsStreamWithChecksumAndTrailers() throws {
        let n = 6 * 1024 * 1024 + 7
        for chunked in ["0", "1"] {
            let c = try RawClient(port: port, timeout: 20)
            c.send("GET /big?n=\(n)&chunked=\(chunked) HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = c.readResponses(1)
            try #require(r.count == 1)
            #expect(r[0].body.count == n)
            var ok = true
            for i in stride(from: 0, to: n, by: 4099) where r[0].body[i] != UInt8(i % 256) { ok = false }
            #expect(ok)
            if chunked == "1" {
                #expect(r[0].trailers.first?.0 == "x-checksum")
            }
        }
    }

    @Test func keepAliveReusesOneUpstreamConnection() throws {
        let before = try upstream.connectionCount()
        let c = try RawClient(port: port)
        for i in 0..<20 {
            c.send("GET /k\(i) HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = c.readResponses(1)
            try #require(r.count == 1)
            #expect(r[0].bodyText == "hello from upstream /k\(i)")
        }
        let after = try upstream.connectionCount()
        // 20 requests on one client connection: at most one new upstream connection (plus the stats probe itself).
        #expect(after - before <= 2)
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let c = try RawClient(port: port)
        c.send("GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readResponses(3)
        try #require(r.count == 3)
        #expect(r[0].bodyText == "hello from upstream /p1")
        #expect(r[1].bodyText == "slow done")
        #expect(r[2].bodyText == "hello from upstream /p3")
    }

    @Test func slowUpstreamGives504AtRouteTimeout() throws {
        let start = Date()
        let c = try RawClient(port: port)
        c.send("GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readResponses(1)
        try #require(r.count == 1)
        #expect(r[0].status == 504)
        #expect(r[0].header("x-tern-error") == "upstream_request_timeout")
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed >= 0.9 && elapsed < 2.5)
    }

    @Test func closeDelimitedUpstreamBodyIsReframedForTheClient() throws {
        let c = try RawClient(port: port)
        c.send("GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readResponses(2)
        try #require(r.count == 2)
        #expect(r[0].bodyText == "close-delimited body")
        #expect(r[0].header("transfer-encoding") == "chunked")
        #expect(r[1].bodyText == "hello from upstream /after")
    }

    @Test func headAnd100ContinueAndHTTP10() throws {
        let c = try RawClient(port: port)
        c.send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        let head = c.readHead()
        #expect(head.hasPrefix("HTTP/1.1 200 "))
        #expect(head.contains("Content-Length: \("hello from upstream /h".utf8.count)\r\n"))
        // The connection is still usable: no body bytes were expected after the HEAD response.
        c.send("GET /after-head HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.readResponses(1).first?.bodyText == "hello from upstream /after-head")
        // Expect: 100-continue answered by Tern before the body is sent.
        let e = try RawClient(port: port)
        e.send("POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        var buf = [UInt8](repeating: 0, count: 100)
        let n = read(e.fd, &buf, 100)
        #expect(n > 0 && String(decoding: buf[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue"))
        e.send("hello")
        let er = e.readResponses(1)
        #expect(er.first?.bodyText.hasSuffix(" 5") == true)
        // HTTP/1.0 without keep-alive: answered, then closed.
        let h = try RawClient(port: port)
        h.send("GET /ten HTTP/1.0\r\n\r\n")
        let text = h.readString()
        #expect(text.contains("hello from upstream /ten"))
        #expect(text.lowercased().contains("connection: close"))
    }

    @Test(arguments: [
        ("POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        ("POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
        ("POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
        ("POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("GET /s HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
        ("GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
        ("GET /s HTTP/1.1\r\nHost: x\r\nX\u{1}A: a\r\n\r\n", 400),
        ("GET /s HTTP/1.1\r\n\r\n", 400),
        ("GET /s HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("GET /s HTTP/1.1\nHost: x\n\n", 400),
        ("POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
        ("POST /s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ])
    func malformedAndSmugglingRequestsAreRefusedAndNeverForwarded(request: String, status: Int) throws {
        let c = try RawClient(port: port)
        c.send(request + "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = c.readString()
        #expect(text.hasPrefix("HTTP/1.1 \(status) "), "got: \(text.prefix(80))")
        #expect(text.lowercased().contains("connection: close"))
        // Each case has its own upstream: nothing at all may have reached it.
        #expect(upstream.requestLog.isEmpty, "forwarded: \(upstream.requestLog)")
    }

    @Test func oversizedHeadGets431() throws {
        let c = try RawClient(port: port)
        c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 70_000) + "\r\n\r\n")
        #expect(c.readString().hasPrefix("HTTP/1.1 431 "))
        let many = try RawClient(port: port)
        many.send("GET / HTTP/1.1\r\nHost: x\r\n" + (0..<150).map { "X-\($0): v\r\n" }.joined() + "\r\n")
        #expect(many.readString().hasPrefix("HTTP/1.1 431 "))
    }

    @Test func clientGoneBeforeTheResponseKeepsTheUpstreamConnection() throws {
        // One worker, so every client shares one pool.
        let port = freePort()
        let tern = try TernProcess(config: proxyConfig(listen: port, upstream: upstream.port, logLevel: "DEBUG"), waitFor: [port], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let w = try RawClient(port: port)   // one warm upstream connection in the pool
        w.send("GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        _ = w.readResponses(1)
        let before = try upstream.connectionCount()
        let c = try RawClient(port: port)
        c.send("GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(waitUntil(timeout: 5) { upstream.requestLog.contains { $0.contains("/slow") } })
        c.close()
        // The slow answer is sent, Tern drops it and the connection returns to the pool (its
        // debug log says so a second time).
        #expect(waitUntil(timeout: 5) { tern.child.output.components(separatedBy: "returned to the pool").count == 3 })
        w.send("GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(w.readResponses(1).first?.bodyText == "hello from upstream /again")
        // Only the stats probes themselves opened connections.
        let after = try upstream.connectionCount()
        #expect(after - before <= 1, "before \(before) after \(after): \(tern.child.output) \(upstream.requestLog)")
    }

    @Test func clientGoneMidResponseLeaksNothing() throws {
        // Warm up so pools and buffers exist, then take the baseline.
        _ = try curl(["http://127.0.0.1:\(port)/warm"])
        #expect(waitUntil(timeout: 5) { tern.child.openFDs > 0 })
        let baseline = tern.child.openFDs
        for _ in 0..<5 {
            let c = try RawClient(port: port)
            c.send("GET /big?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            var buf = [UInt8](repeating: 0, count: 4096)
            _ = read(c.fd, &buf, buf.count)
            c.close()
        }
        // Tern closes both sides; descriptors return to the baseline (+ at most the warm pool connection).
        #expect(waitUntil(timeout: 10) { tern.child.openFDs <= baseline + 1 }, "fds: \(tern.child.openFDs) baseline \(baseline)")
        #expect(try curl(["http://127.0.0.1:\(port)/still-ok"]) == "hello from upstream /still-ok")
    }
}

@Suite(.serialized, .timeLimit(.minutes(3)))
struct ProcessBehaviourTests {
    @Test func upstreamDownGives502() throws {
        let port = freePort(), dead = freePort()
        let tern = try TernProcess(config: proxyConfig(listen: port, upstream: dead), waitFor: [port], extraArguments: ["--workers", "1"])
        let c = try RawClient(port: port)
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readResponses(1)
        try #require(r.count == 1)
        #expect(r[0].status == 502)
        #expect(r[0].header("x-tern-error") == "upstream_connect_failed")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("connect to 127.0.0.1:\(dead) failed") })
    }

    @Test func sigtermDrainsASlowRequestThenExitsZero() throws {
        let upstream = try PythonUpstream()
        let port = freePort()
        let tern = try TernProcess(config: proxyConfig(listen: port, upstream: upstream.port), waitFor: [port])
        let c = try RawClient(port: port)
        c.send("GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(waitUntil(timeout: 5) { upstream.requestLog.contains { $0.contains("/slow") } })
        tern.child.signal(SIGTERM)
        let r = c.readResponses(1)
        #expect(r.first?.status == 200)
        #expect(r.first?.bodyText == "slow done")
        #expect(tern.child.waitForExit(timeout: 10) == 0)
        #expect(!canConnect(port))
    }

    @Test func validateReportsErrorsWithJSONPaths() throws {
        let path = NSTemporaryDirectory() + "tern-bad-\(UUID().uuidString).json"
        try """
        { "servers": [{ "listeners": [{ "name": "l", "address": "127.0.0.1:notaport",
            "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http9", "router_config_name": "r" } }] }] }],
          "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
            "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "missing"} }] }] }] }],
          "cluster_manager": { "clusters": [{ "name": "c", "lb_type": "LB_NOPE", "connect_timeout": "soon", "hosts": [] }] },
          "tracing": {} }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let p = try ChildProcess(TestPaths.ternBinary, ["validate", "-c", path], name: "validate")
        #expect(p.waitForExit(timeout: 10) == 1)
        let out = p.output
        #expect(out.contains("$.servers[0].listeners[0].address"))
        #expect(out.contains("$.servers[0].routers[0].virtual_hosts[0].routers[0].route.cluster_name"))
        #expect(out.contains("$.cluster_manager.clusters[0].lb_type"))
        #expect(out.contains("$.cluster_manager.clusters[0].connect_timeout"))
        #expect(out.contains("warning: $.tracing"))
        // start refuses the same file before listening.
        let s = try ChildProcess(TestPaths.ternBinary, ["start", "-c", path], name: "start")
        #expect(s.waitForExit(timeout: 10) == 1)
    }

    @Test func slowHeadersGet408AndIdleConnectionsClose() throws {
        let upstream = try PythonUpstream()
        let port = freePort()
        let config = proxyConfig(listen: port, upstream: upstream.port, extraProxyConfig: ", \"request_header_timeout\": \"400ms\"")
            .replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"connection_idle_timeout\": \"1s\",")
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "1"])
        defer { tern.stop(); upstream.stop() }
        // A client dripping its head byte by byte never completes it: 408 at the header timeout,
        // although every byte counts as activity.
        let slow = try RawClient(port: port, timeout: 5)
        let start = Date()
        var answer = ""
        for byte in Array("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8) {
            slow.send([byte])
            var pfd = pollfd(fd: slow.fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 50) > 0 { answer = slow.readString(); break }
        }
        if answer.isEmpty { answer = slow.readString() }
        #expect(answer.hasPrefix("HTTP/1.1 408 "), "\(answer)")
        #expect(Date().timeIntervalSince(start) < 3)
        // An idle keep-alive connection is closed after connection_idle_timeout.
        let idle = try RawClient(port: port, timeout: 5)
        idle.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(idle.readResponses(1).first?.status == 200)
        let idleStart = Date()
        #expect(idle.readAll().isEmpty)   // EOF from Tern, no bytes
        let waited = Date().timeIntervalSince(idleStart)
        #expect(waited > 0.8 && waited < 3, "\(waited)")
    }

    @Test func hostileInputLeavesMemoryAndDescriptorsAtBaseline() throws {
        let upstream = try PythonUpstream()
        let port = freePort()
        let tern = try TernProcess(config: proxyConfig(listen: port, upstream: upstream.port, logLevel: "FATAL"), waitFor: [port], extraArguments: ["--workers", "1"])
        defer { tern.stop(); upstream.stop() }
        let bad = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 70_000) + "\r\n\r\n",
            "\u{16}\u{3}\u{1}garbage\r\n\r\n",
            "POST /sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdefXX",
            "POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + String(repeating: "b", count: 30_000),
        ]
        func storm() throws {
            for round in 0..<60 {
                for (index, text) in bad.enumerated() {
                    let c = try RawClient(port: port, timeout: 5)
                    c.send(text)
                    // Half read the error answer to the end; the rest, and the unfinished upload
                    // always, hang up at once.
                    if round % 2 == 0 && index < bad.count - 1 { _ = c.readAll() }
                    c.close()
                }
            }
        }
        _ = try run("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/warm"])
        try storm()
        #expect(waitUntil(timeout: 10) { try! run("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/ok"]).1 == "hello from upstream /ok" })
        let afterFirst = tern.child.rssKB, fdsAfterFirst = tern.child.openFDs
        try storm()
        try storm()
        #expect(waitUntil(timeout: 10) { tern.child.openFDs <= fdsAfterFirst })
        let afterThird = tern.child.rssKB
        // Two more storms cost nothing lasting: no growth beyond allocator noise.
        #expect(afterThird - afterFirst < 1024, "RSS \(afterFirst) KB -> \(afterThird) KB")
        #expect(try run("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/still"]).1 == "hello from upstream /still")
    }

    @Test func versionPrints() throws {
        let (status, out) = try run(TestPaths.ternBinary, ["version"])
        #expect(status == 0)
        #expect(out.hasPrefix("tern version "))
    }
}

/// The configs under examples/, run as they are (fixed ports, as their READMEs say).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ExampleTests {
    @Test func quickstartAnswersThroughThreeListeners() throws {
        let tern = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/quickstart/config.json", encoding: .utf8),
                                   waitFor: [2045, 2046, 2047])
        let (status, body) = try run("/usr/bin/curl", ["-s", "--max-time", "10", "http://localhost:2045/"])
        #expect(status == 0)
        #expect(body == "Hello from Tern: client side 2045 -> server side 2046 -> app 2047\n")
        tern.stop()
    }

    @Test func sofarpcSampleCarriesAnthunderCallsThroughTwoTernProcesses() throws {
        try #require(!canConnect(8080), "port 8080 is taken by another process; the example needs it")
        let app = try ChildProcess(TestPaths.root + "/.venv/bin/python", [TestPaths.peers + "/bolt_peers.py", "server", "8080"], name: "rpc")
        defer { app.stop() }
        #expect(waitUntil(timeout: 15) { canConnect(8080) })
        let server = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/sofarpc/server.json", encoding: .utf8), waitFor: [2046])
        let client = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/sofarpc/client.json", encoding: .utf8), waitFor: [2045])
        let caller = try ChildProcess(TestPaths.root + "/.venv/bin/python", [TestPaths.peers + "/bolt_peers.py", "client", "2045", "20", "4"], name: "caller")
        #expect(caller.waitForExit(timeout: 60) == 0, "\(caller.output)")
        #expect(caller.output.contains("ok 80"))
        client.stop()
        server.stop()
    }

    @Test func httpSampleCrossesTwoTernProcesses() throws {
        try #require(!canConnect(8080), "port 8080 is taken by another process; the example needs it")
        let app = try ChildProcess("/usr/bin/env", ["python3", TestPaths.root + "/examples/http-sample/upstream.py"], name: "app")
        defer { app.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(8080) })
        let server = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/http-sample/server.json", encoding: .utf8), waitFor: [2046])
        let client = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/http-sample/client.json", encoding: .utf8), waitFor: [2045])
        let (_, body) = try run("/usr/bin/curl", ["-s", "--max-time", "10", "http://localhost:2045/hello"])
        #expect(body == "hello from the app: path=/hello x-via-tern=server-side\n")
        client.stop()
        server.stop()
    }

    @Test func tcpProxyExamplesCarryHTTPAsBytesAndFallBackForOtherBytes() throws {
        try #require(!canConnect(8080) && !canConnect(9090), "ports 8080/9090 are taken by another process; the example needs them")
        let app = try ChildProcess("/usr/bin/env", ["python3", TestPaths.root + "/examples/http-sample/upstream.py"], name: "app")
        defer { app.stop() }
        let echo = try echoPeer(port: 9090)
        defer { echo.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(8080) })
        let l4 = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/tcp-proxy/config.json", encoding: .utf8), waitFor: [2045])
        defer { l4.stop() }
        #expect(try run("/usr/bin/curl", ["-s", "--max-time", "10", "http://localhost:2045/hello"]).1 == "hello from the app: path=/hello x-via-tern=None\n")
        let fallback = try TernProcess(config: String(contentsOfFile: TestPaths.root + "/examples/tcp-proxy/fallback.json", encoding: .utf8), waitFor: [2046])
        defer { fallback.stop() }
        #expect(try run("/usr/bin/curl", ["-s", "--max-time", "10", "http://localhost:2046/hi"]).1 == "hello from the app: path=/hi x-via-tern=http-codec\n")
        let raw = try RawClient(port: 2046)
        raw.send("hello, not http\n")
        #expect(TCPBytes.readExactly(raw.fd, 16) == Array("hello, not http\n".utf8))
    }
}

/// Route features end to end: rewrites, header edits, redirects, direct responses, weights, limits.
@Suite(.serialized, .timeLimit(.minutes(3)))
final class RouteFeatureTests {
    let upstream: PythonUpstream
    let tern: TernProcess
    let port = freePort()

    init() throws {
        upstream = try PythonUpstream()
        let config = """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
            "routers": [{ "router_config_name": "r",
               "request_headers_to_add": [{"header": {"key": "x-from-config", "value": "1"}}],
               "virtual_hosts": [
                 { "name": "api", "domains": ["api.example.com", "*.api.test"],
                   "response_headers_to_add": [{"header": {"key": "x-vhost", "value": "api"}}],
                   "routers": [
                     { "match": {"prefix": "/old/"}, "route": {"cluster_name": "up", "prefix_rewrite": "/new/", "host_rewrite": "rewritten.internal",
                         "request_headers_to_add": [{"header": {"key": "x-added", "value": "yes"}}],
                         "request_headers_to_remove": ["x-secret"],
                         "response_headers_to_remove": ["set-cookie"] } },
                     { "match": {"path": "/moved"}, "redirect": {"response_code": 308, "host_redirect": "new.example.com", "path_redirect": "/here"} },
                     { "match": {"prefix": "/", "headers": [{"name": "x-canary", "value": "ON", "case_sensitive": false}]},
                       "direct_response": {"status": 299, "body": "canary"} },
                     { "match": {"regex": "^/items/[0-9]+$"}, "route": {"cluster_name": "up"} }
                   ] },
                 { "name": "fallback", "domains": ["*"], "routers": [ { "match": {"prefix": "/"}, "direct_response": {"status": 503, "body": "fallback"} } ] }
               ] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\(port)", "bind_port": true,
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "router_config_name": "r",
                  "max_request_body_bytes": 1000 } }] }] }] }],
          "cluster_manager": { "clusters": [{ "name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
             "hosts": [{ "address": "127.0.0.1:\(upstream.port)" }] }] } }
        """
        tern = try TernProcess(config: config, waitFor: [port])
    }

    deinit { tern.stop(); upstream.stop() }

    func send(_ text: String) throws -> HTTPResponse? {
        let c = try RawClient(port: port)
        c.send(text)
        return c.readResponses(1).first
    }

    @Test func prefixAndHostRewriteAndHeaderEdits() throws {
        let r = try #require(try send("GET /old/thing?q=1 HTTP/1.1\r\nHost: api.example.com:8443\r\nX-Secret: s\r\n\r\n"))
        #expect(r.bodyText == "hello from upstream /new/thing?q=1")
        #expect(upstream.requestLog.last == "GET /new/thing?q=1")
        #expect(r.header("x-upstream-host") == "rewritten.internal")
        let names = r.header("x-upstream-seen-headers") ?? ""
        #expect(names.contains("x-added") && names.contains("x-from-config"))
        #expect(!names.contains("x-secret"))
        #expect(r.header("x-vhost") == "api")
        #expect(r.headers("set-cookie").isEmpty)   // removed from the response on this route
        // Another route of the same host keeps x-secret and Host as sent, and the cookies.
        let other = try #require(try send("GET /items/7 HTTP/1.1\r\nHost: x.api.test\r\nX-Secret: s\r\n\r\n"))
        #expect(other.header("x-upstream-seen-headers")?.contains("x-secret") == true)
        #expect(other.header("x-upstream-host") == "x.api.test")
        #expect(other.headers("set-cookie") == ["a=1", "b=2"])
    }

    @Test func redirectDirectResponseRegexAndFallbackHost() throws {
        let moved = try #require(try send("GET /moved HTTP/1.1\r\nHost: api.example.com\r\n\r\n"))
        #expect(moved.status == 308)
        #expect(moved.header("location") == "http://new.example.com/here")
        let canary = try #require(try send("GET /any HTTP/1.1\r\nHost: api.example.com\r\nX-Canary: on\r\n\r\n"))
        #expect(canary.status == 299 && canary.bodyText == "canary")
        let noRegex = try #require(try send("GET /items/7x HTTP/1.1\r\nHost: api.example.com\r\n\r\n"))
        #expect(noRegex.status == 404)
        let other = try #require(try send("GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n"))
        #expect(other.status == 503 && other.bodyText == "fallback")
    }

    @Test func bodyLimitGives413ForLengthAndForChunks() throws {
        let big = try #require(try send("POST /items/1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5000\r\n\r\n"))
        #expect(big.status == 413)
        let chunks = "POST /items/2 HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" +
            String(repeating: "100\r\n" + String(repeating: "z", count: 256) + "\r\n", count: 5) + "0\r\n\r\n"
        let c = try RawClient(port: port)
        c.send(chunks)
        let text = c.readString()
        #expect(text.hasPrefix("HTTP/1.1 413 "), "\(text.prefix(60))")
    }
}
