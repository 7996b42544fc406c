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
}
