import Foundation
import Glibc
import Testing
import TernTestSupport

/// Retries (route `retry_policy`) through the real binary against real and scripted upstreams:
/// connect failures go to another host always; with `retry_on`, resets and 5xx answers of
/// idempotent requests without a body are tried again, after a back-off, within a budget.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class RetryTests {
    let health = HealthCheckTests()

    /// An upstream that reads each request head and closes the connection without answering.
    func resettingPeer(_ count: Counter) throws -> TCPPeer {
        try TCPPeer { fd in
            var buffer = [UInt8](repeating: 0, count: 4096)
            var seen: [UInt8] = []
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                seen += buffer[0..<n]
                if seen.count >= 4 && seen.indices.dropLast(3).contains(where: { seen[$0] == 13 && seen[$0 + 1] == 10 && seen[$0 + 2] == 13 && seen[$0 + 3] == 10 }) { count.add(); break }
            }
            close(fd)
        }
    }

    func start(_ hosts: [UInt16], retry: String?, extra: String = "", admin: UInt16) throws -> (TernProcess, UInt16) {
        let listen = freePort()
        let policy = retry.map { ", \"retry_policy\": \($0)" } ?? ""
        let config = """
            { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
                "routers": [{ "router_config_name": "http", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                   "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "web", "timeout": "5s"\(policy)} }] }] }],
                "listeners": [\(health.listener(listen, "Http1", router: "http"))] }],
              "cluster_manager": { "clusters": [{ "name": "web", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "1s"\(extra),
                 "hosts": [\(health.hosts(hosts))] }] },
              "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": \(admin)}}} }
            """
        return (try TernProcess(config: config, waitFor: [listen, admin], extraArguments: ["--workers", "1"]), listen)
    }

    func stats(_ admin: UInt16) throws -> String { try run("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(admin)/api/v1/stats"]).1 }

    func post(_ port: UInt16, _ path: String) throws -> Int {
        Int(try run("/usr/bin/curl", ["-s", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code}", "--data-binary", "hello", "http://127.0.0.1:\(port)\(path)"]).1) ?? -1
    }

    @Test func connectFailuresGoToAnotherHostWithoutAPolicy() throws {
        let good = try PythonUpstream()
        defer { good.stop() }
        let admin = freePort()
        let (tern, port) = try start([freePort(), good.port], retry: nil, admin: admin)
        defer { tern.stop() }
        let codes = try health.statuses(port, (0..<20).map { "/c/\($0)" })
        #expect(codes.allSatisfy { $0 == 200 }, "\(codes)")
        // A POST too: nothing reached the dead host, so its bytes go on as they were.
        #expect(try (0..<4).map { _ in try post(port, "/sha") }.allSatisfy { $0 == 200 })
        let s = try stats(admin)
        // Round robin moves on at each retry, so the dead host comes first for every request.
        #expect(s.range(of: #""retries_total": ([1-9][0-9]+)"#, options: .regularExpression) != nil, "\(s)")
    }

    @Test func resetsAndServerErrorsOfIdempotentRequestsAreRetriedOthersAreNot() throws {
        let good = try PythonUpstream()
        defer { good.stop() }
        let resets = Counter(), errors = Counter()
        let resetter = try resettingPeer(resets)
        let failing = try health.failingPeer(errors)
        defer { resetter.stop(); failing.stop() }
        let admin = freePort()
        let (tern, port) = try start([resetter.port, failing.port, good.port], retry: #"{"retry_on": true, "num_retries": 3}"#, admin: admin)
        defer { tern.stop() }
        let codes = try health.statuses(port, (0..<12).map { "/r/\($0)" })
        #expect(codes.allSatisfy { $0 == 200 }, "every GET reaches the good host in the end: \(codes)")
        #expect(resets.value > 0 && errors.value > 0, "both bad hosts were tried")
        // A POST has a body: a reset or a 503 is the client's answer, never a second delivery.
        let posts = try (0..<6).map { _ in try post(port, "/p") }
        #expect(posts.contains(502) && posts.contains(503), "\(posts)")
        #expect(tern.child.output.contains("retry 1 of 3 in"))
    }

    @Test func withoutRetryOnAResetIsTheClientsAnswer() throws {
        let good = try PythonUpstream()
        defer { good.stop() }
        let resets = Counter()
        let resetter = try resettingPeer(resets)
        defer { resetter.stop() }
        let admin = freePort()
        let (tern, port) = try start([resetter.port, good.port], retry: #"{"retry_on": false}"#, admin: admin)
        defer { tern.stop() }
        let codes = try health.statuses(port, (0..<6).map { "/n/\($0)" })
        #expect(codes.filter { $0 == 502 }.count == 3 && codes.filter { $0 == 200 }.count == 3, "\(codes)")
    }

    @Test func triesAreBoundedBackedOffAndBudgeted() throws {
        let errors = Counter()
        let a = try health.failingPeer(errors), b = try health.failingPeer(errors)
        defer { a.stop(); b.stop() }
        let admin = freePort()
        let (tern, port) = try start([a.port, b.port], retry: #"{"retry_on": true, "num_retries": 3}"#, admin: admin)
        defer { tern.stop() }
        let started = Date()
        let codes = try health.statuses(port, (0..<10).map { "/b/\($0)" })
        let elapsed = Date().timeIntervalSince(started)
        #expect(codes == Array(repeating: 503, count: 10), "\(codes)")
        // Exactly 1 + 3 tries per request: no storm.
        #expect(errors.value == 40)
        // Back-offs draw below 25, 50 and 100 ms (mean 87 ms a request): 10 requests take time.
        #expect(elapsed > 0.3, "\(elapsed) s")

        // max_retries 1: retries waiting at once are capped for the process.
        let errors2 = Counter()
        let c = try health.failingPeer(errors2), d = try health.failingPeer(errors2)
        defer { c.stop(); d.stop() }
        let admin2 = freePort()
        let (tern2, port2) = try start([c.port, d.port], retry: #"{"retry_on": true, "num_retries": 3}"#,
                                       extra: #", "circuit_breakers": [{"max_retries": 1}]"#, admin: admin2)
        defer { tern2.stop() }
        let clients = (0..<8).map { i in
            try? ChildProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "--max-time", "10", "http://127.0.0.1:\(port2)/budget/\(i)"], name: "curl")
        }
        for client in clients { _ = client?.waitForExit(timeout: 20) }
        #expect(errors2.value < 32, "the budget refused some of the 24 retries: \(errors2.value) tries")
        #expect(try stats(admin2).range(of: #""retry_overflows_total": [1-9]"#, options: .regularExpression) != nil)
    }
    /// Bolt: a call whose connection never connected goes to another host (its bytes never left
    /// Tern), whether the connect failed at once or after it was queued; other failures are the
    /// caller's answer (calls are not known to be idempotent).
    @Test func boltCallsWhoseConnectFailsGoToAnotherHost() throws {
        let serverPort = freePort()
        let server = try startBoltServer(port: serverPort)
        defer { server.stop() }
        let dead = distinctFreePort(avoiding: [serverPort]), dead2 = distinctFreePort(avoiding: [serverPort, dead])
        let listen = freePort()
        func config(_ hosts: [UInt16]) -> String {
            boltConfig(listen: listen, upstream: 0).replacingOccurrences(of: "\"hosts\": [{ \"address\": \"127.0.0.1:0\" }]", with: "\"hosts\": [\(health.hosts(hosts))]")
                .replacingOccurrences(of: "LB_RANDOM", with: "LB_ROUNDROBIN")
        }
        let tern = try TernProcess(config: config([dead, serverPort, dead2]), waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        // Pipelined raw calls: the first go out while the dead hosts' connects are under way.
        let c = try RawClient(port: listen, timeout: 10)
        defer { c.close() }
        for id in 1...12 { c.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "echo", body: [UInt8(id)])) }
        let r = BoltTestFrame.readResponses(c, 12)
        #expect(r.map(\.id).sorted() == Array(1...12) && r.allSatisfy { $0.status == 0 }, "\(r.map { ($0.id, $0.status) })\n\(tern.child.output.suffix(1500))")
        #expect(tern.child.output.contains("retry 1 of 3 on 127.0.0.1:\(serverPort)"))
        // anthunder callers: every call answered SUCCESS although two hosts of three refuse.
        let client = try ChildProcess(venvPython, [boltPeers, "client", String(listen), "30", "4"], name: "bolt-client")
        #expect(client.waitForExit(timeout: 120) == 0, "\(client.output.suffix(800))")
        #expect(client.output.contains("ok 120"))

        // A host whose connects hang (a full backlog) until connect_timeout: the calls queued on
        // that connection go to the live host when the connect times out.
        let (tarpit, tarpitPort) = try listeningSocket(backlog: 0)
        defer { close(tarpit) }
        var fillers: [RawClient] = []
        for _ in 0..<3 { if let f = try? RawClient(port: tarpitPort, timeout: 1) { fillers.append(f) } }
        defer { for f in fillers { f.close() } }
        let slowListen = freePort()
        let slow = try TernProcess(config: config([tarpitPort, serverPort]).replacingOccurrences(of: "127.0.0.1:\(listen)", with: "127.0.0.1:\(slowListen)"),
                                   waitFor: [slowListen], extraArguments: ["--workers", "1"])
        defer { slow.stop() }
        let q = try RawClient(port: slowListen, timeout: 10)
        defer { q.close() }
        for id in 1...6 { q.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "echo", body: [UInt8(id)])) }
        let qr = BoltTestFrame.readResponses(q, 6)
        #expect(qr.map(\.id).sorted() == Array(1...6) && qr.allSatisfy { $0.status == 0 }, "\(qr.map { ($0.id, $0.status) })\n\(slow.child.output.suffix(1500))")
        #expect(slow.child.output.contains("connect_timeout at 127.0.0.1:\(tarpitPort); retry 1 of 3 on 127.0.0.1:\(serverPort)"), "\(slow.child.output.suffix(1500))")

        // Every host dead: each call is answered CONNECTION_CLOSED after its tries, none hangs.
        let allDead = freePort()
        let downListen = freePort()
        let down = try TernProcess(config: config([dead, dead2, allDead]).replacingOccurrences(of: "127.0.0.1:\(listen)", with: "127.0.0.1:\(downListen)"),
                                   waitFor: [downListen], extraArguments: ["--workers", "1"])
        defer { down.stop() }
        let d = try RawClient(port: downListen, timeout: 10)
        defer { d.close() }
        for id in 1...4 { d.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "echo", body: [1])) }
        let dr = BoltTestFrame.readResponses(d, 4)
        #expect(dr.map(\.id).sorted() == [1, 2, 3, 4] && dr.allSatisfy { $0.status == 0x10 }, "\(dr.map { ($0.id, $0.status) })")
        // Each call tried every host once at most: two retries per call, never more.
        let retries = down.child.output.components(separatedBy: "retry ").count - 1
        #expect(retries > 0 && retries <= 8, "\(retries) retries\n\(down.child.output.suffix(1500))")
    }
}
