import Foundation
import Glibc
import Synchronization
import Testing
import TernTestSupport

// tcp_proxy against in-process TCP peers (TernTestSupport/TCPPeer.swift): large transfers both
// ways, half-close in each direction, resets, connect failures retried on another host, idle
// timeout, back-pressure, and MOSN's fallback from the proxy filter. Every wait is bounded.
// Run them alone with `swift test --filter TCPProxy`.

extension Tag {
    @Tag static var l4: Self
}

func tcpProxyFilter(cluster: String = "up", extra: String = "") -> String {
    #"{ "type": "tcp_proxy", "config": { "cluster": "\#(cluster)"\#(extra) } }"#
}

func clusterJSON(_ name: String, ports: [UInt16], lbType: String = "LB_ROUNDROBIN", connectTimeout: String = "2s") -> String {
    let hosts = ports.map { #"{ "address": "127.0.0.1:\#($0)" }"# }.joined(separator: ", ")
    return #"{ "name": "\#(name)", "type": "SIMPLE", "lb_type": "\#(lbType)", "connect_timeout": "\#(connectTimeout)", "hosts": [\#(hosts)] }"#
}

/// An echo peer: returns every byte; on the client's FIN it sends `trailer` and closes.
func echoPeer(port: UInt16 = 0, trailer: [UInt8] = []) throws -> TCPPeer {
    try TCPPeer(port: port) { fd in
        let end = TCPBytes.readToEnd(fd) { TCPBytes.writeAll(fd, $0) }
        if end == .eof { TCPBytes.writeAll(fd, trailer) }
        close(fd)
    }
}

/// Each byte-moving test runs with copies (the default), with splice(2) from the first byte, and
/// with splice once a pair turns out to be bulk (`TERN_TCP_SPLICE`, docs/behaviour.md).
let spliceModes = ["0", "1", "bulk"]

@Suite(.tags(.l4), .serialized)
struct TCPProxyTests {
    @Test(arguments: spliceModes) func twoHundredMegabytesEachWayArriveWholeAndTheClientsFinIsPassedOn(splice: String) throws {
        let peer = try echoPeer(trailer: Array("bye".utf8))
        defer { peer.stop() }
        let port = freePort()
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(), clusters: clusterJSON("up", ports: [peer.port])), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let client = try RawClient(port: port, timeout: 20)
        let pattern = PatternBlock()
        let total = 200 * 1_048_576
        let sent = SharedFlag()
        let fd = client.fd
        // Sending and reading at once: the echo comes back while the rest is still going out.
        Thread.detachNewThread {
            let ok = pattern.send(fd, total: total)
            shutdown(fd, Int32(SHUT_WR))
            sent.set(ok)
        }
        var checker = PatternBlock.Checker(pattern)
        var tail: [UInt8] = []
        let end = TCPBytes.readToEnd(client.fd) { chunk in
            let echoed = min(chunk.count, max(0, total - checker.received))
            checker.add(UnsafeRawBufferPointer(rebasing: chunk[0..<echoed]))
            tail.append(contentsOf: chunk[echoed...])
        }
        #expect(sent.isSet)
        #expect(end == .eof)
        #expect(checker.received == total && checker.matches)
        // The upstream answered after the client's FIN: the FIN went through as a half-close.
        #expect(tail == Array("bye".utf8))
    }

    @Test(arguments: spliceModes) func theUpstreamsFinIsPassedOnAndTheClientCanStillSend(splice: String) throws {
        let heard = Mutex<[UInt8]>([])
        let peer = try TCPPeer { fd in
            TCPBytes.writeAll(fd, Array("hello".utf8))
            shutdown(fd, Int32(SHUT_WR))
            _ = TCPBytes.readToEnd(fd) { chunk in heard.withLock { $0.append(contentsOf: chunk) } }
            close(fd)
        }
        defer { peer.stop() }
        let port = freePort()
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(), clusters: clusterJSON("up", ports: [peer.port])), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let client = try RawClient(port: port, timeout: 5)
        var got: [UInt8] = []
        #expect(TCPBytes.readToEnd(client.fd) { got.append(contentsOf: $0) } == .eof)
        #expect(got == Array("hello".utf8))
        // The client's direction is still open after the upstream's FIN.
        client.send("still here")
        client.halfClose()
        #expect(waitUntil(timeout: 5) { heard.withLock { $0 } == Array("still here".utf8) })
    }

    @Test(arguments: spliceModes) func anUpstreamResetReachesTheClientAsAReset(splice: String) throws {
        let peer = try TCPPeer { fd in
            _ = TCPBytes.readExactly(fd, 4)
            TCPBytes.reset(fd)
        }
        defer { peer.stop() }
        let port = freePort()
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(), clusters: clusterJSON("up", ports: [peer.port])), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let client = try RawClient(port: port, timeout: 5)
        client.send("ping")
        let started = Date()
        let end = TCPBytes.readToEnd(client.fd) { _ in }
        #expect(end == .reset, "a reset upstream must not look like a clean end to the client")
        #expect(Date().timeIntervalSince(started) < 3)
    }

    @Test(arguments: spliceModes) func aClientResetClosesTheUpstreamAndTernServesTheNext(splice: String) throws {
        let ended = Mutex<[TCPBytes.End]>([])
        let peer = try TCPPeer { fd in
            let end = TCPBytes.readToEnd(fd) { TCPBytes.writeAll(fd, $0) }
            ended.withLock { $0.append(end) }
            close(fd)
        }
        defer { peer.stop() }
        let port = freePort()
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(), clusters: clusterJSON("up", ports: [peer.port])), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let first = try RawClient(port: port, timeout: 5)
        first.send("abc")
        #expect(TCPBytes.readExactly(first.fd, 3) == Array("abc".utf8))
        TCPBytes.reset(first.fd)
        first.close()   // already closed by reset; marks it so
        // Two pairs ended: Tern's readiness probe (a clean end) and the client that reset.
        #expect(waitUntil(timeout: 5) { ended.withLock { $0 }.count == 2 }, "\(ended.withLock { $0 })")
        #expect(ended.withLock { $0 }.sorted { "\($0)" < "\($1)" } == [.eof, .reset], "\(ended.withLock { $0 })")
        let second = try RawClient(port: port, timeout: 5)
        second.send("next")
        #expect(TCPBytes.readExactly(second.fd, 4) == Array("next".utf8))
    }

    @Test func aRefusedHostIsRetriedOnAnotherAndAllRefusedClosesTheClient() throws {
        let peer = try echoPeer()
        defer { peer.stop() }
        let dead = freePort()
        let port = freePort(), allDeadPort = freePort()
        let config = """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "listeners": [
            { "name": "some", "address": "127.0.0.1:\(port)", "filter_chains": [{ "filters": [\(tcpProxyFilter(cluster: "mixed"))] }] },
            { "name": "none", "address": "127.0.0.1:\(allDeadPort)", "filter_chains": [{ "filters": [\(tcpProxyFilter(cluster: "dead"))] }] } ] }],
          "cluster_manager": { "clusters": [\(clusterJSON("mixed", ports: [dead, peer.port], lbType: "LB_RANDOM")), \(clusterJSON("dead", ports: [dead, dead]))] } }
        """
        let tern = try TernProcess(config: config, waitFor: [port, allDeadPort])
        defer { tern.stop() }
        // Random picks: about half the connections try the dead host first; all must get through.
        // (Tern's readiness probe went through too, hence counting from here.)
        #expect(waitUntil(timeout: 3) { peer.accepted == 1 })
        for i in 0..<12 {
            let client = try RawClient(port: port, timeout: 5)
            client.send("n\(i)")
            #expect(TCPBytes.readExactly(client.fd, "n\(i)".utf8.count) == Array("n\(i)".utf8), "connection \(i)")
        }
        #expect(peer.accepted == 13)
        let client = try RawClient(port: allDeadPort, timeout: 5)
        let r = client.readUntilClosed(timeout: 5)
        #expect(r.closed && r.bytes.isEmpty)
        #expect(waitUntil(timeout: 3) { tern.child.output.contains("upstream_connect_failed") }, "\(tern.child.output)")
    }

    @Test(arguments: spliceModes) func anIdlePairIsClosedAndABusyOneIsNot(splice: String) throws {
        let peer = try echoPeer()
        defer { peer.stop() }
        let port = freePort()
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(extra: #", "idle_timeout": "1s""#),
                                                    clusters: clusterJSON("up", ports: [peer.port])), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let idle = try RawClient(port: port, timeout: 5)
        let busy = try RawClient(port: port, timeout: 5)
        busy.send("x")
        #expect(TCPBytes.readExactly(busy.fd, 1) == [UInt8(ascii: "x")])
        let started = Date()
        // The busy pair moves a byte every 300 ms for 2.5 s: past the 1 s idle timeout, still open.
        while Date().timeIntervalSince(started) < 2.5 {
            busy.send("y")
            #expect(TCPBytes.readExactly(busy.fd, 1) == [UInt8(ascii: "y")])
            usleep(300_000)
        }
        let r = idle.readUntilClosed(timeout: 3)
        #expect(r.closed, "the idle pair is closed by the 1 s idle timeout")
        busy.send("z")
        #expect(TCPBytes.readExactly(busy.fd, 1) == [UInt8(ascii: "z")])
        #expect(tern.child.output.contains("no byte moved"))
    }

    @Test(arguments: spliceModes) func anUpstreamThatDoesNotReadStopsTheClientInsteadOfGrowingTern(splice: String) throws {
        let release = SharedFlag()
        let checked = Mutex<(Int, Bool)>((0, false))
        let pattern = PatternBlock()
        let peer = try TCPPeer(timeout: 30) { fd in
            // Reads nothing until told, then checks everything.
            while !release.isSet { usleep(10_000) }
            var checker = PatternBlock.Checker(pattern)
            _ = TCPBytes.readToEnd(fd) { checker.add($0) }
            checked.withLock { $0 = (checker.received, checker.matches) }
            close(fd)
        }
        defer { peer.stop() }
        let port = freePort()
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(), clusters: clusterJSON("up", ports: [peer.port])), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let baseline = tern.child.rssKB
        let pipeEndsBefore = tern.child.openPipeEnds
        let client = try RawClient(port: port, timeout: 30)
        let total = 100 * 1_048_576
        let done = SharedFlag()
        let fd = client.fd
        Thread.detachNewThread {
            _ = pattern.send(fd, total: total)
            shutdown(fd, Int32(SHUT_WR))
            done.set()
        }
        // The sender stalls (kernel buffers plus Tern's watermark are far below 100 MB)...
        usleep(1_500_000)
        #expect(!done.isSet)
        let grown = tern.child.rssKB - baseline
        #expect(grown < 16 * 1024, "Tern grew by \(grown) KB while the upstream did not read")
        // The mode is the one asked for: a pipe per direction once a pair splices (bulk: after
        // 1 MiB; with "1" the readiness probe's pair, which the stalled peer keeps open, may add
        // its own four).
        let pipeEnds = tern.child.openPipeEnds - pipeEndsBefore
        switch splice {
        case "0": #expect(pipeEnds == 0, "\(pipeEnds) new pipe ends with copies")
        case "bulk": #expect(pipeEnds == 4, "\(pipeEnds) new pipe ends with TERN_TCP_SPLICE=bulk")
        default: #expect(pipeEnds >= 4, "\(pipeEnds) new pipe ends with TERN_TCP_SPLICE=1")
        }
        // ...and everything arrives intact once the upstream reads.
        release.set()
        #expect(waitUntil(timeout: 30) { checked.withLock { $0.0 } == total }, "\(checked.withLock { $0 })")
        #expect(checked.withLock { $0.1 })
    }

    /// MOSN's proxy-fallback-example: one port, HTTP to the HTTP cluster, anything else to tcp_proxy.
    @Test(arguments: spliceModes) func unknownProtocolFallsBackToTcpProxyWithItsBytesIntact(splice: String) throws {
        let http = try PythonUpstream()
        defer { http.stop() }
        let peer = try echoPeer(trailer: Array("bye".utf8))
        defer { peer.stop() }
        let port = freePort()
        let routers = #"{ "router_config_name": "router_to_http_server", "virtual_hosts": [{ "name": "server_hosts", "domains": ["*"], "routers": [{ "match": { "prefix": "/" }, "route": { "cluster_name": "server_http_cluster" } }] }] }"#
        let filters = #"{ "type": "proxy", "config": { "fallback_for_unknown_protocol": true, "downstream_protocol": "Auto", "upstream_protocol": "Http1", "router_config_name": "router_to_http_server" } }, "#
            + tcpProxyFilter(cluster: "server_tcp_cluster")
        let clusters = clusterJSON("server_http_cluster", ports: [http.port], lbType: "LB_RANDOM") + ", " + clusterJSON("server_tcp_cluster", ports: [peer.port], lbType: "LB_RANDOM")
        let tern = try TernProcess(config: l4Config(listen: port, filters: filters, clusters: clusters, routers: routers), waitFor: [port], environment: ["TERN_TCP_SPLICE": splice])
        defer { tern.stop() }
        let web = try RawClient(port: port)
        web.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(web.readResponses(1).first?.status == 200)
        let raw = try RawClient(port: port)
        let message: [UInt8] = [0x00, 0xff, 0x10] + Array("not a protocol Tern knows, sent whole".utf8)
        raw.send(message)
        #expect(TCPBytes.readExactly(raw.fd, message.count) == message)
        raw.send("more")
        #expect(TCPBytes.readExactly(raw.fd, 4) == Array("more".utf8))
        // A client that sends its bytes and its FIN at once: the sniffer reads both before it
        // hands the connection on, and the FIN must still reach the upstream (which answers it).
        let brief = try RawClient(port: port)
        brief.send("unknown and done")
        brief.halfClose()
        var got: [UInt8] = []
        #expect(TCPBytes.readToEnd(brief.fd) { got.append(contentsOf: $0) } == .eof)
        #expect(got == Array("unknown and donebye".utf8))
    }

    /// A host whose connect fails at once (a unix socket that does not exist) is skipped, and the
    /// next try makes exactly one upstream connection (an earlier loop made a second one behind
    /// it, which leaked).
    @Test func aHostThatFailsAtOnceIsSkippedWithOneConnectionToTheNext() throws {
        let peer = try echoPeer()
        defer { peer.stop() }
        let port = freePort()
        let missing = NSTemporaryDirectory() + "tern-missing-\(UUID().uuidString).sock"
        let cluster = #"{ "name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [{ "address": "unix:\#(missing)" }, { "address": "127.0.0.1:\#(peer.port)" }, { "address": "127.0.0.1:\#(peer.port)" }] }"#
        let tern = try TernProcess(config: l4Config(listen: port, filters: tcpProxyFilter(), clusters: cluster, logLevel: "DEBUG"), waitFor: [port])
        defer { tern.stop() }
        #expect(waitUntil(timeout: 3) { peer.accepted == 1 })   // Tern's readiness probe
        for i in 0..<6 {
            let client = try RawClient(port: port, timeout: 5)
            client.send("c\(i)")
            #expect(TCPBytes.readExactly(client.fd, 2) == Array("c\(i)".utf8))
        }
        usleep(200_000)
        #expect(peer.accepted == 7, "each client connection makes one upstream connection")
    }

    /// MOSN's tcpproxy-sample config shape, ports substituted: validates and carries traffic.
    @Test func mosnTcpProxySampleShapeRuns() throws {
        let peer = try echoPeer()
        defer { peer.stop() }
        let port = freePort()
        let config = """
        { "servers": [{ "default_log_path": "stdout", "listeners": [{ "name": "proxyListener", "address": "127.0.0.1:\(port)",
            "bind_port": true, "log_path": "stdout", "filter_chains": [{ "tls_context": {}, "filters": [{ "type": "tcp_proxy",
              "config": { "cluster": "serverCluster", "routes": [{ "cluster": "serverCluster" }] } }] }] }] }],
          "cluster_manager": { "clusters": [{ "Name": "serverCluster", "type": "SIMPLE", "lb_type": "LB_RANDOM",
            "max_request_per_conn": 1024, "conn_buffer_limit_bytes": 32768, "hosts": [{ "address": "127.0.0.1:\(peer.port)" }] }] } }
        """
        let tern = try TernProcess(config: config, waitFor: [port])
        defer { tern.stop() }
        let client = try RawClient(port: port)
        client.send("sample")
        #expect(TCPBytes.readExactly(client.fd, 6) == Array("sample".utf8))
    }

    @Test func routesPickTheClusterBySourceAddress() throws {
        let a = try TCPPeer { fd in TCPBytes.writeAll(fd, Array("A".utf8)); close(fd) }
        let b = try TCPPeer { fd in TCPBytes.writeAll(fd, Array("B".utf8)); close(fd) }
        defer { a.stop(); b.stop() }
        let port = freePort()
        let routes = #", "routes": [ { "cluster": "a", "source_addrs": [{ "address": "127.0.0.2", "length": 32 }] }, { "cluster": "b" } ]"#
        let filter = #"{ "type": "tcp_proxy", "config": { "stat_prefix": "by_source"\#(routes) } }"#
        let tern = try TernProcess(config: l4Config(listen: port, filters: filter, clusters: clusterJSON("a", ports: [a.port]) + ", " + clusterJSON("b", ports: [b.port])),
                                   waitFor: [port])
        defer { tern.stop() }
        func answer(from source: String) throws -> String {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            _ = withIPv4Address(source, port: 0) { bind(fd, $0, $1) }
            let rc = withIPv4Address("127.0.0.1", port: port) { connect(fd, $0, $1) }
            guard rc == 0 else { throw TestError("connect from \(source) failed: errno \(errno)") }
            return String(decoding: TCPBytes.readExactly(fd, 1) ?? [], as: UTF8.self)
        }
        #expect(try answer(from: "127.0.0.2") == "A")
        #expect(try answer(from: "127.0.0.1") == "B")
    }
}
