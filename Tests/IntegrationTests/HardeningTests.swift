import Foundation
import Glibc
import Testing
import TernTestSupport

// Tests for connection-handling hardening (issue 7): what happens on a client connection after an
// answer Tern writes itself, slow and silent clients, half-closes, and memory under clients that
// never read. Every wait is bounded: a failing case fails within about 20 s.
// Run them alone with `swift test --filter Hardening`.

extension Tag {
    @Tag static var hardening: Self
}

/// The HTTP config for these tests: one worker's worth of routes covering every kind of answer.
///   /up/X         cluster "up" (the Python upstream), which sees /X
///   /timeout/X    the same with a route timeout of 300 ms
///   /dead/X       cluster "dead" (a port nobody listens on)
///   /direct       direct_response 200 "d"
///   /moved        redirect 301
///   anything else 404 (no route)
func hardeningHTTPConfig(listen: UInt16, upstream: UInt16, dead: UInt16, protocolName: String = "Http1",
                         idleTimeout: String = "90s", routeTimeout: String = "60s") -> String {
    """
    { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
        "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
           "routers": [
             { "match": {"prefix": "/up/"}, "route": {"cluster_name": "up", "prefix_rewrite": "/"} },
             { "match": {"prefix": "/timeout/"}, "route": {"cluster_name": "up", "prefix_rewrite": "/", "timeout": "300ms"} },
             { "match": {"prefix": "/dead/"}, "route": {"cluster_name": "dead"} },
             { "match": {"path": "/direct"}, "direct_response": {"status": 200, "body": "d"} },
             { "match": {"path": "/moved"}, "redirect": {"response_code": 301, "path_redirect": "/elsewhere"} }
           ] }] }],
        "listeners": [{ "name": "l", "address": "127.0.0.1:\(listen)", "bind_port": true, "connection_idle_timeout": "\(idleTimeout)",
           "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "\(protocolName)",
              "upstream_protocol": "Http1", "router_config_name": "r", "route_timeout": "\(routeTimeout)" } }] }] }] }],
      "cluster_manager": { "clusters": [
         { "name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "2s", "hosts": [{ "address": "127.0.0.1:\(upstream)" }] },
         { "name": "dead", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "2s", "hosts": [{ "address": "127.0.0.1:\(dead)" }] } ] } }
    """
}

func get(_ target: String, close: Bool = false) -> String {
    "GET \(target) HTTP/1.1\r\nHost: x\r\n\(close ? "Connection: close\r\n" : "")\r\n"
}

/// Whether `body` is the upstream's /big and /close pattern (byte i is i mod 256) of length `n`.
func isPattern(_ body: [UInt8], length n: Int) -> Bool {
    guard body.count == n else { return false }
    for i in 0..<n where body[i] != UInt8(truncatingIfNeeded: i) { return false }
    return true
}

/// Writes `block` over and over without ever reading, non-blocking, until `totalBytes` are sent,
/// the peer stops taking bytes for `stallSeconds` (it stopped reading: back-pressure works), the
/// overall deadline passes, or `abort` says so (checked every 256 KiB). Returns the bytes sent and
/// why it stopped.
func floodWithoutReading(_ client: RawClient, block: [UInt8], totalBytes: Int, deadline: Double = 20, stallSeconds: Double = 3,
                         abort: () -> Bool) -> (sent: Int, reason: String) {
    let flags = fcntl(client.fd, F_GETFL)
    _ = fcntl(client.fd, F_SETFL, flags | O_NONBLOCK)
    let start = Date()
    var lastProgress = Date()
    var sent = 0, offset = 0, sinceCheck = 0
    while sent < totalBytes {
        if Date().timeIntervalSince(start) > deadline { return (sent, "deadline") }
        if Date().timeIntervalSince(lastProgress) > stallSeconds { return (sent, "stalled") }
        let n = block[offset...].withUnsafeBytes { send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        if n > 0 {
            sent += n
            sinceCheck += n
            offset = (offset + n) % block.count
            lastProgress = Date()
            if sinceCheck >= 256 * 1024 {
                sinceCheck = 0
                if abort() { return (sent, "aborted") }
            }
        } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            var pfd = pollfd(fd: client.fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&pfd, 1, 100)
            if abort() { return (sent, "aborted") }
        } else {
            return (sent, "send failed: errno \(errno)")
        }
    }
    return (sent, "all sent")
}

/// Floods `port` with `block` over and over from a client that never reads: Tern's RSS must stay
/// within baseline + 64 MiB and the flood must stall (Tern stopped reading that client), while
/// another client is still served (`anotherClientServed`, run with the flooder still connected).
func expectFloodStaysBounded(_ tern: TernProcess, _ port: UInt16, block: [UInt8], what: String,
                             anotherClientServed: () throws -> Bool) throws {
    let baseline = tern.child.rssKB
    let limit = baseline + 64 * 1024
    var peak = baseline
    let flooder = try RawClient(port: port)
    let (sent, reason) = floodWithoutReading(flooder, block: block, totalBytes: 200 * 1024 * 1024) {
        peak = max(peak, tern.child.rssKB)
        return peak > limit
    }
    peak = max(peak, tern.child.rssKB)
    #expect(peak <= limit, "RSS \(baseline) KB -> \(peak) KB after \(sent / 1024) KiB of \(what) (\(reason))")
    // Bounded means Tern stopped reading the client: its writes stalled.
    #expect(reason == "stalled", "the flood ended with \(reason) after \(sent / 1024) KiB")
    #expect(try anotherClientServed(), "another client was not served")
    withExtendedLifetime(flooder) {}
}

// MARK: - 1. The connection after an answer Tern writes itself

@Suite(.serialized, .timeLimit(.minutes(5)), .tags(.hardening))
final class HardeningAfterLocalAnswerTests {
    let upstream: PythonUpstream
    let tern: TernProcess
    let port = freePort()

    init() throws {
        upstream = try PythonUpstream()
        tern = try TernProcess(config: hardeningHTTPConfig(listen: port, upstream: upstream.port, dead: freePort()),
                               waitFor: [port], extraArguments: ["--workers", "1"])
    }

    deinit { tern.stop(); upstream.stop() }

    /// (request target, expected status, expected x-tern-error) for each error kind.
    static let errorKinds: [(String, Int, String)] = [
        ("/dead/x", 502, "upstream_connect_failed"),
        ("/up/reset", 502, "upstream_reset"),
        ("/up/malformed", 502, "upstream_malformed_response"),
        ("/timeout/slow?ms=3000", 504, "upstream_request_timeout"),
    ]

    @Test(arguments: errorKinds)
    func hardeningSequentialRequestAfterProxyError(target: String, status: Int, code: String) throws {
        let c = try RawClient(port: port, timeout: 8)
        c.send(get(target))
        let first = c.readResponses(1)
        try #require(first.count == 1, "no answer to \(target)")
        #expect(first[0].status == status && first[0].header("x-tern-error") == code)
        c.send(get("/up/after"))
        let second = c.readResponses(1)
        #expect(second.first?.bodyText == "hello from upstream /after",
                "after \(code): the next request on the connection got \(second.map(\.status)) within 8 s")
    }

    @Test(arguments: errorKinds)
    func hardeningPipelinedRequestAfterProxyError(target: String, status: Int, code: String) throws {
        let c = try RawClient(port: port, timeout: 8)
        c.send(get(target) + get("/up/after"))   // one write
        let r = c.readResponses(2)
        #expect(r.count == 2, "after \(code): \(r.count) of 2 pipelined responses within 8 s")
        #expect(r.first?.status == status && r.first?.header("x-tern-error") == code)
        if r.count == 2 { #expect(r[1].bodyText == "hello from upstream /after") }
    }

    /// A keep-alive client whose proxied request is followed by requests Tern answers itself.
    @Test(arguments: [("/nothing-routes-here", 404), ("/direct", 200), ("/moved", 301)])
    func hardeningLocalAnswerAfterAProxiedExchange(target: String, status: Int) throws {
        let c = try RawClient(port: port, timeout: 8)
        for (i, next) in ["/up/first", target, "/up/second", target].enumerated() {
            c.send(get(next))
            let r = c.readResponses(1)
            #expect(r.first?.status == (next.hasPrefix("/up/") ? 200 : status), "request \(i + 1) (\(next)): \(r.map(\.status)) within 8 s")
            if r.isEmpty { return }
        }
    }

    @Test(arguments: [("/nothing-routes-here", 404), ("/direct", 200), ("/moved", 301)])
    func hardeningPipelinedRequestAfterLocalAnswer(target: String, status: Int) throws {
        let c = try RawClient(port: port, timeout: 8)
        c.send(get(target) + get("/up/after") + get(target) + get("/up/again"))
        let r = c.readResponses(4)
        try #require(r.count == 4, "\(r.count) of 4 pipelined responses within 8 s")
        #expect(r[0].status == status && r[2].status == status)
        #expect(r[1].bodyText == "hello from upstream /after")
        #expect(r[3].bodyText == "hello from upstream /again")
    }
}

/// A cluster with no host answers 503 and the connection serves its next request; the request
/// counts against the cluster without leaving anything in flight (a failure before dispatch must
/// not undo an in-flight count it never made).
@Test(.tags(.hardening)) func hardeningNoHealthyHostIsAnsweredAndCountedExactly() throws {
    let port = freePort()
    let config = hardeningHTTPConfig(listen: port, upstream: freePort(), dead: freePort())
        .replacingOccurrences(of: """
             { "match": {"path": "/direct"},
             """, with: """
             { "match": {"prefix": "/empty/"}, "route": {"cluster_name": "empty"} },
             { "match": {"path": "/direct"},
             """)
        .replacingOccurrences(of: "\"cluster_manager\": { \"clusters\": [", with: """
            "cluster_manager": { "clusters": [
             { "name": "empty", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [] },
            """)
    let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "1"])
    defer { tern.stop() }
    let c = try RawClient(port: port, timeout: 8)
    c.send(get("/empty/x"))
    let first = c.readResponses(1)
    #expect(first.first?.status == 503 && first.first?.header("x-tern-error") == "no_healthy_upstream")
    c.send(get("/direct"))
    #expect(c.readResponses(1).first?.bodyText == "d")
    c.close()
    tern.child.signal(SIGTERM)
    #expect(tern.child.waitForExit(timeout: 10) == 0)
    #expect(tern.child.output.contains("cluster empty: requests=1 in_flight=0"), "\(tern.child.output)")
}

// MARK: - 2, 4, 5, 6, 7. Slow, silent and half-closing clients (HTTP)

@Suite(.serialized, .timeLimit(.minutes(5)), .tags(.hardening))
final class HardeningSlowClientTests {
    let upstream: PythonUpstream

    init() throws { upstream = try PythonUpstream() }
    deinit { upstream.stop() }

    func startTern(protocolName: String = "Http1", idleTimeout: String = "90s", routeTimeout: String = "60s") throws -> (TernProcess, UInt16) {
        let port = freePort()
        let tern = try TernProcess(config: hardeningHTTPConfig(listen: port, upstream: upstream.port, dead: freePort(), protocolName: protocolName,
                                                               idleTimeout: idleTimeout, routeTimeout: routeTimeout),
                                   waitFor: [port], extraArguments: ["--workers", "1"])
        return (tern, port)
    }

    /// 2. A close-delimited body must reach a client that reads late and slowly, whole: the
    /// upstream's FIN arrives while Tern has paused reading it, and must not cut the body short.
    @Test func hardeningCloseDelimitedBodyReachesASlowReaderWhole() throws {
        let (tern, port) = try startTern()
        defer { tern.stop() }
        let n = 5 * 1024 * 1024
        for round in 1...3 {
            let c = try RawClient(port: port, timeout: 10, receiveBuffer: 16 * 1024)
            c.send(get("/up/close?n=\(n)", close: true))
            // A slow client: nothing read for 2 s while the upstream writes and closes, then
            // 16 KiB every 2 ms (Tern keeps pausing the upstream), to the end Tern marks by closing.
            usleep(2_000_000)
            var data: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 16 * 1024)
            let start = Date()
            while Date().timeIntervalSince(start) < 15 {
                let got = buf.withUnsafeMutableBytes { read(c.fd, $0.baseAddress, $0.count) }
                if got <= 0 { break }
                data.append(contentsOf: buf[0..<got])
                usleep(2_000)
            }
            let r = HTTPResponse.parseAll(data)
            #expect(r.count == 1, "round \(round): no complete response in \(data.count) bytes (cut short)")
            if let body = r.first?.body {
                #expect(isPattern(body, length: n), "round \(round): \(body.count) of \(n) bytes")
            }
        }
        #expect(!tern.child.output.contains("upstream_reset"), "Tern logged a false upstream reset:\n\(tern.child.output.suffix(1500))")
    }

    /// 4. A client that never reads a large response is let go after the idle timeout (no
    /// progress), and the upstream connection with it.
    @Test func hardeningClientThatNeverReadsIsClosedAfterTheIdleTimeout() throws {
        let (tern, port) = try startTern(idleTimeout: "1s")
        defer { tern.stop() }
        let baseline = tern.child.openFDs
        let c = try RawClient(port: port, timeout: 5, receiveBuffer: 16 * 1024)
        c.send(get("/up/big?n=50000000"))
        #expect(waitUntil(timeout: 5) { upstream.requestLog.contains("GET /big?n=50000000") })
        let start = Date()
        let released = waitUntil(timeout: 8) { tern.child.openFDs <= baseline }
        #expect(released, "Tern still holds \(tern.child.openFDs - baseline) more descriptors than before the client came, 8 s later")
        if released { #expect(Date().timeIntervalSince(start) < 6) }
        withExtendedLifetime(c) {}
    }

    /// 5. A client of an Auto listener that sends nothing, or one byte and then nothing (its
    /// protocol still unknown), is timed out after the idle timeout, long before the 60 s header timeout.
    @Test(arguments: ["", "G"])
    func hardeningSilentClientOnAutoIsTimedOut(firstBytes: String) throws {
        let (tern, port) = try startTern(protocolName: "Auto", idleTimeout: "1s")
        defer { tern.stop() }
        let c = try RawClient(port: port)
        if !firstBytes.isEmpty { c.send(firstBytes) }
        let (bytes, closed, elapsed) = c.readUntilClosed(timeout: 8)
        #expect(closed, "sent \(firstBytes.debugDescription): still open after 8 s (idle timeout 1 s)")
        #expect(elapsed < 5, "closed after \(elapsed) s")
        // Closed silently, or with a 408 for the head that never completed.
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(bytes.isEmpty || text.hasPrefix("HTTP/1.1 408 "), "\(text.prefix(80))")
    }

    /// 6. With no route timeout (0s), a client that leaves while the upstream never answers must
    /// not leave the upstream connection held for ever.
    @Test func hardeningNoRouteTimeoutDoesNotHoldTheUpstreamOfAGoneClient() throws {
        let (tern, port) = try startTern(idleTimeout: "1s", routeTimeout: "0s")
        defer { tern.stop() }
        let baseline = tern.child.openFDs
        let c = try RawClient(port: port)
        c.send(get("/up/slow?ms=60000"))
        #expect(waitUntil(timeout: 5) { upstream.requestLog.contains("GET /slow?ms=60000") })
        c.close()
        let released = waitUntil(timeout: 6) { tern.child.openFDs <= baseline }
        #expect(released, "6 s after the client left, Tern holds \(tern.child.openFDs - baseline) more descriptors than before it came")
    }

    /// 7. A client that sends its request and then shuts down its write side still gets the
    /// answer, whether the FIN comes with the request or while it is in flight upstream.
    @Test(arguments: [("/up/hello", "hello from upstream /hello"), ("/up/slow?ms=300", "slow done")])
    func hardeningHalfClosedClientGetsASmallResponse(target: String, body: String) throws {
        let (tern, port) = try startTern()
        defer { tern.stop() }
        let c = try RawClient(port: port)
        c.send(get(target))
        if target.contains("slow") {
            #expect(waitUntil(timeout: 5) { upstream.requestLog.contains("GET /slow?ms=300") })
        }
        c.halfClose()
        let (bytes, closed, _) = c.readUntilClosed(timeout: 8)
        let r = HTTPResponse.parseAll(bytes)
        #expect(r.first?.bodyText == body, "got \(bytes.count) bytes: \(String(decoding: bytes.prefix(80), as: UTF8.self))")
        #expect(closed, "Tern should close once it has answered a half-closed client")
    }

    @Test func hardeningHalfClosedClientGetsALargeResponseReadSlowly() throws {
        let (tern, port) = try startTern()
        defer { tern.stop() }
        let n = 5 * 1024 * 1024
        let c = try RawClient(port: port, timeout: 10, receiveBuffer: 64 * 1024)
        c.send(get("/up/big?n=\(n)"))
        c.halfClose()
        usleep(1_000_000)   // a slow reader: Tern must pause, not treat the FIN as an abort
        let (bytes, _, _) = c.readUntilClosed(timeout: 15)
        let r = HTTPResponse.parseAll(bytes)
        #expect(r.count == 1 && isPattern(r.first?.body ?? [], length: n), "got \(bytes.count) bytes, \(r.count) complete responses")
    }

    /// 3. A client that pipelines requests Tern answers itself and never reads: memory stays bounded
    /// and other clients are served.
    @Test func hardeningPipelinedDirectResponsesToAClientThatNeverReadsStayBounded() throws {
        let (tern, port) = try startTern()
        defer { tern.stop() }
        let warm = try RawClient(port: port)
        warm.send(get("/direct"))
        #expect(warm.readResponses(1).first?.status == 200)
        try expectFloodStaysBounded(tern, port, block: Array(String(repeating: get("/direct"), count: 2048).utf8),
                                    what: "pipelined requests") {
            let other = try RawClient(port: port)
            other.send(get("/direct"))
            return other.readResponses(1).first?.bodyText == "d"
        }
    }
}

// MARK: - Bolt: errors on a connection, route_timeout 0s, clients that never read

func hardeningBoltConfig(listen: UInt16, upstream: UInt16, dead: UInt16, routeTimeout: String = "60s", protocolName: String = "bolt") -> String {
    """
    { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
        "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
           "routers": [
             { "match": {"headers": [{"name": "service", "value": "\(echoService)"}]}, "route": {"cluster_name": "up"} },
             { "match": {"headers": [{"name": "service", "value": "com.tern.dead.Service:1.0"}]}, "route": {"cluster_name": "dead"} }
           ] }] }],
        "listeners": [{ "name": "l", "address": "127.0.0.1:\(listen)", "bind_port": true,
           "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "\(protocolName)", "upstream_protocol": "\(protocolName)",
              "router_config_name": "r", "route_timeout": "\(routeTimeout)" } }] }] }] }],
      "cluster_manager": { "clusters": [
         { "name": "up", "type": "SIMPLE", "lb_type": "LB_RANDOM", "connect_timeout": "1s", "hosts": [{ "address": "127.0.0.1:\(upstream)" }] },
         { "name": "dead", "type": "SIMPLE", "lb_type": "LB_RANDOM", "connect_timeout": "1s", "hosts": [{ "address": "127.0.0.1:\(dead)" }] } ] } }
    """
}

@Suite(.serialized, .timeLimit(.minutes(5)), .tags(.hardening))
final class HardeningBoltTests {
    let serverPort = freePort()
    let server: ChildProcess

    init() throws { server = try startBoltServer(port: serverPort) }
    deinit { server.stop() }

    func startTern(upstream: UInt16? = nil, routeTimeout: String = "60s", protocolName: String = "bolt") throws -> (TernProcess, UInt16) {
        let port = freePort()
        let tern = try TernProcess(config: hardeningBoltConfig(listen: port, upstream: upstream ?? serverPort, dead: freePort(),
                                                               routeTimeout: routeTimeout, protocolName: protocolName),
                                   waitFor: [port], extraArguments: ["--workers", "1"])
        return (tern, port)
    }

    /// The failing call of each kind and the status Tern must answer it with.
    static let errorKinds: [(String, Int)] = [("no route", 0x06), ("connect failure", 0x10), ("timeout", 0x07)]

    func failingCall(_ kind: String, id: UInt32) -> [UInt8] {
        switch kind {
        case "no route": return BoltTestFrame.request(id: id, service: "com.other.Service:1.0", method: "echo", body: [1])
        case "connect failure": return BoltTestFrame.request(id: id, service: "com.tern.dead.Service:1.0", method: "echo", body: [1])
        default: return BoltTestFrame.request(id: id, service: echoService, method: "slow", body: Array("3000".utf8), timeoutMS: 300)
        }
    }

    @Test(arguments: errorKinds, ["bolt", "Auto"])
    func hardeningBoltCallAfterErrorAnswer(kind: (String, Int), listenerProtocol: String) throws {
        let (kind, status) = kind
        let (tern, port) = try startTern(protocolName: listenerProtocol)
        defer { tern.stop() }
        // Sequential: the error, read, then a normal call on the same connection.
        let c = try RawClient(port: port, timeout: 8)
        c.send(failingCall(kind, id: 1))
        let first = BoltTestFrame.readResponses(c, 1)
        #expect(first.first?.id == 1 && first.first?.status == status, "\(kind): \(first.map { ($0.id, $0.status) })")
        c.send(BoltTestFrame.request(id: 2, service: echoService, method: "echo", body: Array("after".utf8)))
        let second = BoltTestFrame.readResponses(c, 1)
        #expect(second.first.map { String(decoding: $0.content, as: UTF8.self) } == "echo:after", "\(kind), sequential: no answer to the next call within 8 s")
        // Pipelined: both in one write.
        let p = try RawClient(port: port, timeout: 8)
        p.send(failingCall(kind, id: 3) + BoltTestFrame.request(id: 4, service: echoService, method: "echo", body: Array("piped".utf8)))
        let r = BoltTestFrame.readResponses(p, 2)
        #expect(r.count == 2, "\(kind), pipelined: \(r.count) of 2 answers within 8 s")
        #expect(r.first { $0.id == 3 }?.status == status)
        #expect(r.first { $0.id == 4 }.map { String(decoding: $0.content, as: UTF8.self) } == "echo:piped")
    }

    /// 6. route_timeout 0s means no timeout, not an immediate one.
    @Test func hardeningBoltRouteTimeoutZeroMeansNoTimeout() throws {
        let (tern, port) = try startTern(routeTimeout: "0s")
        defer { tern.stop() }
        let c = try RawClient(port: port, timeout: 8)
        // An answer that takes 300 ms: longer than Tern's 50 ms timeout sweep.
        c.send(BoltTestFrame.request(id: 9, service: echoService, method: "slow", body: Array("300".utf8)))
        let r = BoltTestFrame.readResponses(c, 1)
        #expect(r.first?.status == 0 && r.first.map { String(decoding: $0.content, as: UTF8.self) } == "slow:300",
                "status \(r.first.map { String($0.status, radix: 16) } ?? "none")")
    }

    /// 3. A client flooding heartbeats (answered by Tern itself) without reading: memory bounded.
    @Test func hardeningBoltHeartbeatFloodWithoutReadingStaysBounded() throws {
        let (tern, port) = try startTern()
        defer { tern.stop() }
        try expectBoundedFlood(tern, port, block: (0..<2048).flatMap { BoltTestFrame.heartbeat(id: UInt32($0)) })
    }

    /// 3. A client sending calls to an upstream that never answers, without reading: memory bounded.
    @Test func hardeningBoltCallFloodToASilentUpstreamStaysBounded() throws {
        let silentPort = freePort()
        let silent = try ChildProcess(venvPython, [boltPeers, "silent", String(silentPort)], name: "silent", stderrToNull: true)
        defer { silent.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(silentPort) })
        let (tern, port) = try startTern(upstream: silentPort)
        defer { tern.stop() }
        let body = [UInt8](repeating: 7, count: 64)
        try expectBoundedFlood(tern, port, block: (0..<512).flatMap {
            BoltTestFrame.request(id: UInt32($0 + 1), service: echoService, method: "echo", body: body, timeoutMS: 60_000)
        })
    }

    func expectBoundedFlood(_ tern: TernProcess, _ port: UInt16, block: [UInt8]) throws {
        let warm = try RawClient(port: port)
        warm.send(BoltTestFrame.heartbeat(id: 1))
        #expect(BoltTestFrame.readResponses(warm, 1).count == 1)
        try expectFloodStaysBounded(tern, port, block: block, what: "frames") {
            let other = try RawClient(port: port, timeout: 5)
            other.send(BoltTestFrame.heartbeat(id: 77))
            return BoltTestFrame.readResponses(other, 1).first?.id == 77
        }
    }
}
