import Foundation
import Glibc
import Testing
import TernTestSupport

/// `circuit_breakers` through the real binary with two workers (the limits are the process's, not
/// a worker's): a threaded HTTP upstream with a slow path, anthunder's bolt server with a slow
/// method, and a port that completes no handshake (pending connects).
@Suite(.serialized, .timeLimit(.minutes(5)))
final class CircuitBreakerTests {
    let upstream: PythonUpstream
    let boltServerPort = freePort()
    let boltServer: ChildProcess
    /// A listening socket with a backlog of one that never accepts: once the backlog is full, the
    /// kernel answers no SYN, so a connect to it stays pending until its timeout.
    let tarpit: Int32
    let tarpitPort: UInt16
    var tarpitFillers: [RawClient] = []
    let tern: TernProcess
    let httpPort = freePort()
    let boltPort = freePort()

    deinit {
        tern.stop()
        upstream.stop()
        boltServer.stop()
        for c in tarpitFillers { c.close() }
        close(tarpit)
    }

    init() throws {
        upstream = try PythonUpstream()
        boltServer = try startBoltServer(port: boltServerPort)
        (tarpit, tarpitPort) = try listeningSocket(backlog: 0)
        let routes = """
            { "match": {"prefix": "/req/"}, "route": {"cluster_name": "requests", "prefix_rewrite": "/", "timeout": "10s"} },
            { "match": {"prefix": "/conn/"}, "route": {"cluster_name": "connections", "prefix_rewrite": "/", "timeout": "10s"} },
            { "match": {"prefix": "/pending/"}, "route": {"cluster_name": "pending", "prefix_rewrite": "/", "timeout": "10s"} }
            """
        let config = """
            { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
                "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [\(routes)] }] },
                            { "router_config_name": "rb", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                               "routers": [{ "match": {"headers": [{"name": "service", "value": ".*", "regex": true}]},
                                             "route": {"cluster_name": "bolt", "timeout": "10s"} }] }] }],
                "listeners": [
                  { "name": "http", "address": "127.0.0.1:\(httpPort)", "bind_port": true, "filter_chains": [{ "filters": [{ "type": "proxy",
                     "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }] },
                  { "name": "bolt", "address": "127.0.0.1:\(boltPort)", "bind_port": true, "filter_chains": [{ "filters": [{ "type": "proxy",
                     "config": { "downstream_protocol": "bolt", "upstream_protocol": "bolt", "router_config_name": "rb" } }] }] }] }],
              "cluster_manager": { "clusters": [
                 { "name": "requests", "connect_timeout": "2s", "circuit_breakers": [{"max_requests": 3}],
                   "hosts": [{ "address": "127.0.0.1:\(upstream.port)" }] },
                 { "name": "connections", "connect_timeout": "2s", "circuit_breakers": [{"max_connections": 1}],
                   "hosts": [{ "address": "127.0.0.1:\(upstream.port)" }] },
                 { "name": "pending", "connect_timeout": "2s", "circuit_breakers": [{"max_pending_requests": 1}],
                   "hosts": [{ "address": "127.0.0.1:\(tarpitPort)" }] },
                 { "name": "bolt", "connect_timeout": "2s", "circuit_breakers": [{"max_requests": 2}],
                   "hosts": [{ "address": "127.0.0.1:\(boltServerPort)" }] }] } }
            """
        tern = try TernProcess(config: config, waitFor: [httpPort, boltPort], extraArguments: ["--workers", "2"])
    }

    /// Sends `paths` at once, each on its own connection, and reads every answer.
    /// Sends `paths` at once, each on its own connection, and reads every answer (nil: none came).
    func concurrently(_ paths: [String]) throws -> [HTTPResponse?] {
        let clients = try paths.map { _ in try RawClient(port: httpPort, timeout: 15) }
        defer { for c in clients { c.close() } }
        for (c, p) in zip(clients, paths) { c.send("GET \(p) HTTP/1.1\r\nHost: x\r\n\r\n") }
        return clients.map { $0.readResponses(1).first }
    }

    func statuses(_ responses: [HTTPResponse?]) -> [Int] { responses.map { $0?.status ?? 0 }.sorted() }

    @Test func maxRequestsHoldsAcrossWorkersAndFreesItsSlotsWhateverEndedTheRequest() throws {
        // Six slow requests on six connections (spread over both workers): three pass.
        let first = try concurrently((0..<6).map { "/req/slow?ms=1500&i=\($0)" })
        #expect(statuses(first) == [200, 200, 200, 503, 503, 503])
        #expect(first.compactMap { $0 }.filter { $0.status == 503 }.allSatisfy { $0.header("x-tern-error") == "upstream_overflow" })
        #expect(upstream.requestLog.filter { $0.hasPrefix("GET /slow?ms=1500&i=") }.count == 3)
        // Failed exchanges (the upstream resets) end too: their slots come back.
        let resets = try concurrently((0..<3).map { "/req/reset?i=\($0)" })
        #expect(statuses(resets) == [502, 502, 502])
        // A client that leaves mid-request frees its slot as well.
        let quitter = try RawClient(port: httpPort)
        quitter.send("GET /req/slow?ms=800&i=quit HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(waitUntil(timeout: 5) { self.upstream.requestLog.contains { $0.contains("i=quit") } })
        quitter.close()
        // Then three at once pass again, and a fourth is refused.
        // (The upstream logs its answer as it sends it: Tern may still be reading it, so poll.)
        var again: [Int] = []
        #expect(waitUntil(timeout: 10) {
            again = self.statuses((try? self.concurrently((0..<4).map { "/req/slow?ms=600&j=\($0)" })) ?? [])
            return again == [200, 200, 200, 503]
        }, "\(again)")
    }

    @Test func maxConnectionsLimitsOpenConnectionsPerHost() throws {
        let two = try concurrently(["/conn/slow?ms=1000&a", "/conn/slow?ms=1000&b"])
        #expect(statuses(two) == [200, 503])
        // One at a time they share the pooled connection: all pass.
        for i in 0..<5 {
            let one = try concurrently(["/conn/x\(i)"])
            #expect(statuses(one) == [200])
        }
    }

    @Test func maxPendingRequestsRefusesWhileAConnectIsStillPending() throws {
        // Fill the tarpit's backlog so the next connects hang.
        for _ in 0..<3 { if let c = try? RawClient(port: tarpitPort, timeout: 1) { tarpitFillers.append(c) } }
        #expect(tarpitFillers.count == 1, "the backlog holds one connection")
        let hanging = try RawClient(port: httpPort, timeout: 10)
        defer { hanging.close() }
        hanging.send("GET /pending/a HTTP/1.1\r\nHost: x\r\n\r\n")
        // Its connect is under way (the kernel shows it SYN-SENT) before the second is sent.
        #expect(waitUntil(timeout: 5) {
            ((try? run("/usr/bin/env", ["ss", "-Htn", "state", "syn-sent", "dport = :\(self.tarpitPort)"]))?.1 ?? "").contains("127.0.0.1")
        })
        // The second, while the first still waits for its connect: refused at once.
        var refused: HTTPResponse?
        let start = Date()
        #expect(waitUntil(timeout: 5) {
            let r = (try? self.concurrently(["/pending/b"]))?.first ?? nil
            if r?.status == 503 { refused = r; return true }
            return false
        })
        #expect(refused?.header("x-tern-error") == "upstream_overflow")
        #expect(Date().timeIntervalSince(start) < 1.9, "refused before the first connect timed out")
        // The first ends at its connect timeout; the pending slot is free again after it.
        let first = hanging.readResponses(1).first
        #expect(first.map { [502, 504].contains($0.status) } == true, "\(String(describing: first?.status))")
        let later = try concurrently(["/pending/c"]).first ?? nil
        #expect(later.map { [502, 504].contains($0.status) } == true, "not refused: \(String(describing: later?.status))")
    }

    @Test func boltCallsOverMaxRequestsGetThreadpoolBusy() throws {
        let c = try RawClient(port: boltPort, timeout: 15)
        defer { c.close() }
        for id in 1...5 { c.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "slow", body: Array("1200".utf8))) }
        let answers = BoltTestFrame.readResponses(c, 5)
        #expect(answers.count == 5)
        // SUCCESS is 0, SERVER_THREADPOOL_BUSY 4.
        #expect(answers.filter { $0.status == 0 }.count == 2, "\(answers.map { ($0.id, $0.status, String(decoding: $0.content, as: UTF8.self)) })")
        #expect(answers.filter { $0.status == 4 }.count == 3, "\(answers.map { ($0.id, $0.status) })")
        // Slots freed: two more pass.
        for id in 6...7 { c.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "slow", body: Array("100".utf8))) }
        #expect(BoltTestFrame.readResponses(c, 2).map(\.status) == [0, 0])
    }
}

/// A TCP socket on 127.0.0.1 listening with `backlog`, never accepting; its port.
func listeningSocket(backlog: Int32) throws -> (Int32, UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard bound == 0, listen(fd, backlog) == 0 else { throw TestError("tarpit: bind/listen failed") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return (fd, UInt16(bigEndian: address.sin_port))
}
