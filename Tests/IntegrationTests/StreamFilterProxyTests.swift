import Foundation
import Glibc
import Testing
import TernTestSupport

/// A config around `listeners`: router "r" sends HTTP to cluster "up", router "rb" sends bolt calls
/// for services com.tern.* to cluster "bolt".
func streamFilterConfig(listeners: String, httpUpstream: UInt16, boltUpstream: UInt16) -> String {
    """
    { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
        "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                       "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "up", "timeout": "5s"} }] }] },
                    { "router_config_name": "rb", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                       "routers": [{ "match": {"headers": [{"name": "service", "value": "com\\\\.tern\\\\..*", "regex": true}]},
                                     "route": {"cluster_name": "bolt", "timeout": "5s"} }] }] }],
        "listeners": [\(listeners)] }],
      "cluster_manager": { "clusters": [
         { "name": "up", "type": "SIMPLE", "connect_timeout": "2s", "hosts": [{ "address": "127.0.0.1:\(httpUpstream)" }] },
         { "name": "bolt", "type": "SIMPLE", "connect_timeout": "2s", "hosts": [{ "address": "127.0.0.1:\(boltUpstream)" }] }] } }
    """
}

/// `stream_filters` end to end: the real binary (one worker, so the delay test shares it) between
/// curl / raw sockets / anthunder and real upstreams (Python's http.server, anthunder's server).
@Suite(.serialized, .timeLimit(.minutes(5)))
final class StreamFilterProxyTests {
    let upstream: PythonUpstream
    let boltServerPort = freePort()
    let boltServer: ChildProcess
    let tern: TernProcess
    /// Listener ports by name (each listener has its own stream_filters).
    let ports: [String: UInt16]

    static let listeners: [(name: String, protocolName: String, filters: String)] = [
        ("denyLocal", "Http1", #"{"type": "ip_access", "config": {"header": "", "default_action": "allow", "ips": [{"action": "deny", "addrs": ["10.0.0.0/8", "127.0.0.0/8"]}]}}"#),
        ("defaultDenyAllowed", "Http1", #"{"type": "ip_access", "config": {"default_action": "deny", "ips": [{"action": "allow", "addrs": ["127.0.0.1"]}]}}"#),
        ("defaultDenyOther", "Http1", #"{"type": "ip_access", "config": {"default_action": "deny", "ips": [{"action": "allow", "addrs": ["10.0.0.0/8", "::1"]}]}}"#),
        ("header", "Http1", #"{"type": "ip_access", "config": {"header": "X-Real-IP", "default_action": "allow", "ips": [{"action": "deny", "addrs": ["203.0.113.0/24", "2001:db8::/32"]}]}}"#),
        ("payload", "Http1", #"{"type": "payload_limit", "config": {"max_entity_size": 1000, "http_status": 413}}"#),
        ("abort", "Http1", #"{"type": "fault", "config": {"abort": {"status": 503, "percentage": 50}}}"#),
        ("delay", "Http1", #"{"type": "fault", "config": {"delay": {"fixed_delay": "600ms", "percentage": 100}, "upstream_cluster": "up", "headers": [{"name": "x-delay", "value": "yes"}]}}"#),
        ("delayThenLimit", "Http1", #"{"type": "payload_limit", "config": {"max_entity_size": 1000}}, {"type": "fault", "config": {"delay": {"fixed_delay": "100ms", "percentage": 100}, "headers": [{"name": "x-delay", "value": "yes"}]}}"#),
        ("boltDeny", "bolt", #"{"type": "ip_access", "config": {"default_action": "allow", "ips": [{"action": "deny", "addrs": ["127.0.0.1"]}]}}"#),
        ("boltPolicy", "bolt", #"{"type": "payload_limit", "config": {"max_entity_size": 100}}, {"type": "fault", "config": {"abort": {"status": 503, "percentage": 100}, "headers": [{"name": "sofa_head_method_name", "value": "echo"}]}}, {"type": "fault", "config": {"delay": {"fixed_delay": "400ms", "percentage": 100}, "headers": [{"name": "sofa_head_method_name", "value": "slow"}]}}"#),
    ]

    init() throws {
        upstream = try PythonUpstream()
        boltServer = try startBoltServer(port: boltServerPort)
        var ports: [String: UInt16] = [:]
        for l in Self.listeners { ports[l.name] = distinctFreePort(avoiding: Array(ports.values)) }
        self.ports = ports
        let listeners = Self.listeners.map { l in
            """
            { "name": "\(l.name)", "address": "127.0.0.1:\(ports[l.name]!)", "bind_port": true, "stream_filters": [\(l.filters)],
              "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "\(l.protocolName)",
                 "upstream_protocol": "\(l.protocolName)", "router_config_name": "\(l.protocolName == "bolt" ? "rb" : "r")" } }] }] }
            """
        }.joined(separator: ",\n")
        let config = streamFilterConfig(listeners: listeners, httpUpstream: upstream.port, boltUpstream: boltServerPort)
        tern = try TernProcess(config: config, waitFor: Array(ports.values), extraArguments: ["--workers", "1"])
    }

    deinit {
        tern.stop()
        boltServer.stop()
        upstream.stop()
    }

    func port(_ name: String) -> UInt16 { ports[name]! }

    /// curl's status code and body for one request.
    func curl(_ name: String, _ path: String, _ extra: [String] = []) throws -> (status: Int, body: String) {
        let out = try run("/usr/bin/curl", ["-s", "--max-time", "20", "-w", "\n%{http_code}"] + extra + ["http://127.0.0.1:\(port(name))\(path)"]).1
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? -1, lines.dropLast().joined(separator: "\n"))
    }

    func upstreamSaw(_ marker: String) -> Bool { upstream.requestLog.contains { $0.hasSuffix(marker) } }

    // MARK: ip_access

    @Test func deniedAddressesGet403AndTheUpstreamSeesNothing() throws {
        let marker = "/denied-\(UUID().uuidString)"
        let r = try curl("denyLocal", marker)
        #expect(r.status == 403)
        // Python's urllib, a second real client.
        let py = try run("/usr/bin/env", ["python3", "-c", """
            import urllib.request, urllib.error
            try:
                urllib.request.urlopen("http://127.0.0.1:\(port("denyLocal"))\(marker)-py", timeout=10)
                print("no error")
            except urllib.error.HTTPError as e:
                print(e.code)
            """]).1
        #expect(py.trimmingCharacters(in: .whitespacesAndNewlines) == "403")
        // The upstream is reached through other listeners, and its log is written as requests arrive.
        #expect(try curl("defaultDenyAllowed", "/probe-\(marker)").status == 200)
        #expect(waitUntil(timeout: 5) { self.upstreamSaw("/probe-\(marker)") })
        #expect(!upstream.requestLog.contains("GET \(marker)") && !upstream.requestLog.contains("GET \(marker)-py"), "\(upstream.requestLog.suffix(5))")
    }

    @Test func defaultActionsApplyWhenNoListContainsTheClient() throws {
        #expect(try curl("defaultDenyAllowed", "/allowed").status == 200)
        let denied = try curl("defaultDenyOther", "/not-listed")
        #expect(denied.status == 403)
        #expect(denied.body.contains("ip_access"))
    }

    @Test func theHeaderNamedInTheConfigGivesTheClientAddress() throws {
        #expect(try curl("header", "/h1", ["-H", "X-Real-IP: 203.0.113.9"]).status == 403)
        #expect(try curl("header", "/h2", ["-H", "X-Real-IP: [2001:db8::5]:443"]).status == 403)
        #expect(try curl("header", "/h3", ["-H", "X-Real-IP: 198.51.100.1"]).status == 200)
        // No header: the connection's own address (127.0.0.1), which no list denies.
        #expect(try curl("header", "/h4").status == 200)
    }

    @Test func localAnswersKeepTheConnectionForItsNextRequestsSequentialAndPipelined() throws {
        let c = try RawClient(port: port("denyLocal"))
        for i in 0..<3 {
            c.send("GET /k\(i) HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = c.readResponses(1)
            try #require(r.count == 1)
            #expect(r[0].status == 403)
            #expect(r[0].header("x-tern-error") == "ip_access_denied")
            #expect(r[0].header("connection") == nil)
        }
        c.send((0..<5).map { "GET /p\($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined())
        let pipelined = c.readResponses(5)
        #expect(pipelined.count == 5 && pipelined.allSatisfy { $0.status == 403 })
        // HTTP/1.0 without keep-alive: answered, then closed.
        c.send("GET /last HTTP/1.0\r\n\r\n")
        let end = c.readUntilClosed(timeout: 5)
        #expect(end.closed)
        #expect(String(decoding: end.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 403"))
    }

    // MARK: payload_limit

    @Test func payloadLimitByContentLength() throws {
        let marker = "/big-\(UUID().uuidString)"
        let big = try curl("payload", marker, ["--data-binary", String(repeating: "x", count: 1001)])
        #expect(big.status == 413)
        #expect(try curl("payload", "/sha", ["--data-binary", String(repeating: "y", count: 1000)]).status == 200)
        #expect(try curl("defaultDenyAllowed", "/probe-\(marker)").status == 200)
        #expect(waitUntil(timeout: 5) { self.upstreamSaw("/probe-\(marker)") })
        #expect(!upstream.requestLog.contains("POST \(marker)"), "\(upstream.requestLog.suffix(5))")
        // A refused body is never read: the answer says close, and the connection ends cleanly.
        let c = try RawClient(port: port("payload"))
        c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + String(repeating: "z", count: 5000))
        let end = c.readUntilClosed(timeout: 5)
        let text = String(decoding: end.bytes, as: UTF8.self)
        #expect(end.closed && text.hasPrefix("HTTP/1.1 413") && text.contains("connection: close"))
    }

    @Test func payloadLimitByChunkedBodyAsItStreams() throws {
        let (small, smallSum) = try temporaryPatternFile(size: 900)
        let (large, _) = try temporaryPatternFile(size: 300_000)
        defer { try? FileManager.default.removeItem(atPath: small); try? FileManager.default.removeItem(atPath: large) }
        let ok = try curl("payload", "/sha", ["-H", "Transfer-Encoding: chunked", "--data-binary", "@\(small)"])
        #expect(ok.status == 200 && ok.body == "\(smallSum) 900")
        // Over the limit: the head already went upstream; that exchange is reset and curl gets the
        // 413 (not a connection reset), although most of its body was never read.
        for _ in 0..<3 {
            let refused = try curl("payload", "/sha", ["-H", "Transfer-Encoding: chunked", "--data-binary", "@\(large)"])
            #expect(refused.status == 413, "\(refused)")
        }
        // The upstream still serves: the reset exchange's connection was not pooled.
        #expect(try curl("payload", "/after").status == 200)
        // A client that writes its whole 4 MB body before it reads: Tern answers, sends its FIN
        // and drops the rest of the body as it comes, so the writes succeed and the 413 is read
        // (closing with the body unread would reset the connection under the client's writes).
        let naive = try run("/usr/bin/env", ["python3", "-c", """
            import socket
            s = socket.create_connection(("127.0.0.1", \(port("payload"))), timeout=10)
            s.sendall(b"POST /sha HTTP/1.1\\r\\nHost: x\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")
            chunk = b"%x\\r\\n" % 65536 + b"q" * 65536 + b"\\r\\n"
            try:
                for _ in range(64):
                    s.sendall(chunk)
                s.sendall(b"0\\r\\n\\r\\n")
            except OSError as e:
                print("write failed", e)
            data = b""
            try:
                while True:
                    got = s.recv(65536)
                    if not got:
                        break
                    data += got
            except OSError as e:
                print("read failed", e)
            print(data.split(b"\\r\\n")[0].decode())
            """]).1
        #expect(naive.trimmingCharacters(in: .whitespacesAndNewlines) == "HTTP/1.1 413 Content Too Large", "\(naive)")
    }

    @Test func aRefusedBodyLingersAtMostTwoSecondsEvenAfterADelayOnTheConnection() throws {
        let c = try RawClient(port: port("delayThenLimit"), timeout: 10)
        c.send("GET /first HTTP/1.1\r\nHost: x\r\nX-Delay: yes\r\n\r\n")
        #expect(c.readResponses(1).first?.status == 200)
        // Over the limit in its first chunk, and the client neither finishes nor closes.
        c.send("POST /sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + String(repeating: "b", count: 2000) + "\r\n")
        let end = c.readUntilClosed(timeout: 8)
        #expect(String(decoding: end.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 413"))
        #expect(end.closed)   // Tern's FIN, right after the answer
        // Tern keeps reading (and dropping) for at most 2 s, then closes: a byte written after
        // that gets a reset, which a later write reports.
        let start = Date()
        var refused = false
        while !refused && Date().timeIntervalSince(start) < 8 {
            let n = [UInt8(ascii: "b")].withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
            if n < 0 { refused = true } else { usleep(50_000) }
        }
        let elapsed = Date().timeIntervalSince(start)
        #expect(refused && elapsed > 1.5 && elapsed < 4, "refused \(refused) after \(elapsed) s")
    }

    // MARK: fault

    @Test func faultAbortsAboutItsPercentageOfRequestsOnOneKeptConnection() throws {
        let c = try RawClient(port: port("abort"), timeout: 10)
        let n = 400
        var aborted = 0, proxied = 0
        for i in 0..<(n / 20) {
            // 20 pipelined requests per write, all on one keep-alive connection.
            c.send((0..<20).map { "GET /a\(i)-\($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined())
            let r = c.readResponses(20)
            try #require(r.count == 20)
            aborted += r.filter { $0.status == 503 && $0.header("x-tern-error") == "fault_injected" }.count
            proxied += r.filter { $0.status == 200 && $0.bodyText.hasPrefix("hello from upstream") }.count
        }
        #expect(aborted + proxied == n)
        // Binomial(400, 0.5): standard deviation 10; 60 is six of them (a false failure about 1 in 10^9).
        #expect(abs(aborted - n / 2) <= 60, "aborted \(aborted) of \(n)")
    }

    @Test func faultDelayHoldsOnlyMatchingRequestsAndNeverTheWorker() throws {
        let delayed = try RawClient(port: port("delay"), timeout: 10)
        let other = try RawClient(port: port("delay"), timeout: 10)
        let start = Date()
        delayed.send("GET /slowed HTTP/1.1\r\nHost: x\r\nX-Delay: yes\r\n\r\n")
        // The same (only) worker answers a request without the header meanwhile, at once.
        let otherStart = Date()
        other.send("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
        let quick = other.readResponses(1)
        let quickElapsed = Date().timeIntervalSince(otherStart)
        #expect(quick.first?.bodyText == "hello from upstream /quick")
        #expect(quickElapsed < 0.4, "\(quickElapsed)")
        let slow = delayed.readResponses(1)
        let slowElapsed = Date().timeIntervalSince(start)
        #expect(slow.first?.bodyText == "hello from upstream /slowed")
        #expect(slowElapsed >= 0.6 && slowElapsed < 2.0, "\(slowElapsed)")
        // The delayed connection serves its next requests (pipelined, one delayed) afterwards.
        delayed.send("GET /n1 HTTP/1.1\r\nHost: x\r\n\r\nGET /n2 HTTP/1.1\r\nHost: x\r\nX-Delay: yes\r\n\r\nGET /n3 HTTP/1.1\r\nHost: x\r\n\r\n")
        let next = delayed.readResponses(3)
        #expect(next.map(\.bodyText) == ["hello from upstream /n1", "hello from upstream /n2", "hello from upstream /n3"])
        // A delayed request's body, part of it sent during the delay, reaches the upstream whole.
        let (file, sum) = try temporaryPatternFile(size: 200_000)
        defer { try? FileManager.default.removeItem(atPath: file) }
        for framing in [[], ["-H", "Transfer-Encoding: chunked"]] {
            let posted = try curl("delay", "/sha", framing + ["-H", "X-Delay: yes", "--data-binary", "@\(file)"])
            #expect(posted.status == 200 && posted.body == "\(sum) 200000", "\(framing): \(posted)")
        }
    }

    // MARK: bolt

    func boltCalls(_ name: String, method: String, body: String, count: Int = 1) throws -> [String] {
        let client = try ChildProcess(venvPython, [boltPeers, "once", String(port(name)), method, body, String(count)], name: "bolt-once")
        #expect(client.waitForExit(timeout: 60) == 0, "\(client.output)")
        return client.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("result") || $0.hasPrefix("error") }
    }

    @Test func boltCallsFromDeniedAddressesGetAnErrorAndNeverReachTheServer() throws {
        let marker = String(Int.random(in: 100_000...999_999))
        let out = try boltCalls("boltDeny", method: "slow", body: marker, count: 3)
        #expect(out.count == 3)
        // MOSN's mapping of 403 for bolt: SERVER_EXCEPTION.
        #expect(out.allSatisfy { $0.hasPrefix("error") && $0.contains("SERVER_EXCEPTION") }, "\(out)")
        #expect(!boltServer.output.contains("call slow \(marker)"))
    }

    @Test func boltPayloadLimitAndFaultAnswerWithBoltErrors() throws {
        let passes = try boltCalls("boltPolicy", method: "slow", body: "5")
        #expect(passes == ["result slow:5"])
        let tooLarge = try boltCalls("boltPolicy", method: "slow", body: String(repeating: "9", count: 200))
        #expect(tooLarge.count == 1 && tooLarge[0].hasPrefix("error"), "\(tooLarge)")
        let aborted = try boltCalls("boltPolicy", method: "echo", body: "x")
        #expect(aborted.count == 1 && aborted[0].contains("SERVER_THREADPOOL_BUSY"), "\(aborted)")
    }

    @Test func boltDelayedCallsAreHeldOnTheLoopAndAnsweredAfterTheDelay() throws {
        let c = try RawClient(port: port("boltPolicy"), timeout: 10)
        let start = Date()
        c.send(BoltTestFrame.request(id: 7, service: echoService, method: "slow", body: Array("1".utf8)))
        c.send(BoltTestFrame.heartbeat(id: 8))
        // The heartbeat on the same connection is answered while the call waits.
        let first = BoltTestFrame.readResponses(c, 1)
        #expect(first.first?.id == 8)
        #expect(Date().timeIntervalSince(start) < 0.3)
        let second = BoltTestFrame.readResponses(c, 1)
        #expect(second.first?.id == 7 && String(decoding: second.first?.content ?? [], as: UTF8.self) == "slow:1")
        #expect(Date().timeIntervalSince(start) >= 0.4)
    }
}
