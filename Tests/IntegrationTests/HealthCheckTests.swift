import Foundation
import Glibc
import Testing
import TernTestSupport

/// Active health checks (`health_check`) and passive outlier detection (`outlier_detection`)
/// against real upstream processes that are killed and restarted: the real binary, two workers
/// (a host found dead must leave every worker's rotation), curl and anthunder as clients.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class HealthCheckTests {
    func config(listeners: String, clusters: String, admin: UInt16? = nil) -> String {
        let router = clusters.contains("\"rpc\"")
            ? #"{ "router_config_name": "bolt", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [{ "match": {"headers": [{"name": "service", "value": ".*", "regex": true}]}, "route": {"cluster_name": "rpc", "timeout": "5s"} }] }] }"#
            : #"{ "router_config_name": "http", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "web", "timeout": "5s"} }] }] }"#
        return """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
            "routers": [\(router)],
            "listeners": [\(listeners)] }],
          "cluster_manager": { "clusters": [\(clusters)] }\(admin.map { #", "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": \#($0)}}}"# } ?? "") }
        """
    }

    func listener(_ port: UInt16, _ protocolName: String, router: String) -> String {
        """
        { "name": "\(router)", "address": "127.0.0.1:\(port)", "bind_port": true,
          "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "\(protocolName)", "upstream_protocol": "\(protocolName)", "router_config_name": "\(router)" } }] }] }
        """
    }

    func hosts(_ ports: [UInt16]) -> String { ports.map { "{ \"address\": \"127.0.0.1:\($0)\" }" }.joined(separator: ", ") }

    /// Each URL once through one curl (keep-alive), the status codes in order.
    func statuses(_ port: UInt16, _ paths: [String]) throws -> [Int] {
        var arguments = ["-s", "--max-time", "10", "-w", "%{http_code}\n"]
        for p in paths { arguments += ["-o", "/dev/null", "http://127.0.0.1:\(port)\(p)"] }
        let codes = try run("/usr/bin/curl", arguments, timeout: 60).1.split(separator: "\n").compactMap { Int($0) }
        #expect(codes.count == paths.count, "one status per request: \(codes)")
        return codes
    }

    func served(_ upstream: PythonUpstream, _ marker: String) -> Int { upstream.requestLog.filter { $0.contains(marker) }.count }

    func logLines(_ tern: TernProcess, _ text: String) -> Int { tern.child.output.components(separatedBy: text).count - 1 }

    @Test func aKilledHostLeavesTheRotationWithinTheCheckTimeAndReturnsAfterRestart() throws {
        let a = try PythonUpstream(), b = try PythonUpstream(), c = try PythonUpstream()
        defer { a.stop(); c.stop() }
        let bPort = b.port
        let listen = freePort()
        let check = #""health_check": { "protocol": "Http1", "timeout": "300ms", "interval": "200ms", "interval_jitter": "20ms", "unhealthy_threshold": 2, "healthy_threshold": 2, "check_config": {"http_check_config": {"path": "/health", "codes": [{"start": 200, "end": 299}]}} }"#
        let tern = try TernProcess(config: config(listeners: listener(listen, "Http1", router: "http"),
                                                  clusters: "{ \"name\": \"web\", \"type\": \"SIMPLE\", \"connect_timeout\": \"1s\", \(check), \"hosts\": [\(hosts([a.port, bPort, c.port]))] }"),
                                   waitFor: [listen], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        // The checker probes every host with the configured GET.
        #expect(waitUntil(timeout: 5) { [a, b, c].allSatisfy { $0.requestLog.contains("GET /health") } })
        let before = "/before-\(UUID().uuidString)"
        #expect(try statuses(listen, (0..<30).map { "\(before)/\($0)" }).allSatisfy { $0 == 200 })
        #expect([a, b, c].allSatisfy { served($0, before) > 0 }, "every host in rotation at start")

        b.stop()
        let killed = Date()
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(bPort) unhealthy after 2 failed http check(s)") == 1 }, "\(tern.child.output.suffix(600))")
        // Two probes 200-220 ms apart, each refused at once: well under the 5 s allowed.
        #expect(Date().timeIntervalSince(killed) < 4)
        let after = "/after-\(UUID().uuidString)"
        let codes = try statuses(listen, (0..<60).map { "\(after)/\($0)" })
        #expect(codes.count == 60 && codes.allSatisfy { $0 == 200 }, "\(codes)")
        #expect(served(a, after) + served(c, after) == 60)

        // Back on the same port: in rotation again after two passed checks.
        let b2 = try PythonUpstream(port: bPort)
        defer { b2.stop() }
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(bPort) healthy again after 2 passed check(s)") == 1 })
        let back = "/back-\(UUID().uuidString)"
        #expect(try statuses(listen, (0..<30).map { "\(back)/\($0)" }).allSatisfy { $0 == 200 })
        #expect(served(b2, back) > 0, "the restarted host takes requests again")
    }

    @Test func tcpChecksByDefaultAndAClusterWithNoHealthyHostAnswers503AtOnce() throws {
        let a = try PythonUpstream()
        let aPort = a.port
        let listen = freePort()
        // No protocol: MOSN's default, a TCP connect.
        let tern = try TernProcess(config: config(listeners: listener(listen, "Http1", router: "http"),
                                                  clusters: "{ \"name\": \"web\", \"type\": \"SIMPLE\", \"health_check\": { \"timeout\": \"300ms\", \"interval\": \"200ms\" }, \"hosts\": [\(hosts([aPort]))] }"),
                                   waitFor: [listen], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        #expect(try statuses(listen, ["/x"]) == [200])
        a.stop()
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(aPort) unhealthy after 1 failed tcp check(s)") == 1 }, "\(tern.child.output.suffix(600))")
        let started = Date()
        let codes = try statuses(listen, (0..<10).map { "/none/\($0)" })
        #expect(codes == Array(repeating: 503, count: 10), "\(codes)")
        #expect(Date().timeIntervalSince(started) < 2, "answered without trying the dead host")
        #expect(tern.child.output.contains("no_healthy_upstream"))
        let a2 = try PythonUpstream(port: aPort)
        defer { a2.stop() }
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(aPort) healthy again") == 1 })
        #expect(try statuses(listen, ["/y"]) == [200])
    }

    @Test func hostsAnswering5xxAreEjectedForLongerEachTimeAndNeverMoreThanTheShareAllowed() throws {
        let good = try PythonUpstream()
        defer { good.stop() }
        // Answers every request with 503 (keep-alive), and counts them.
        let badCount = Counter()
        let bad = try failingPeer(badCount)
        defer { bad.stop() }
        let listen = freePort(), adminPort = freePort()
        let outlier = #""outlier_detection": { "consecutive_5xx": 3, "base_ejection_time": "5s", "max_ejection_percent": 50 }"#
        // One worker: "in a row" counts per worker.
        let tern = try TernProcess(config: config(listeners: listener(listen, "Http1", router: "http"),
                                                  clusters: "{ \"name\": \"web\", \"type\": \"SIMPLE\", \"lb_type\": \"LB_ROUNDROBIN\", \(outlier), \"hosts\": [\(hosts([good.port, bad.port]))] }", admin: adminPort),
                                   waitFor: [listen, adminPort], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        // 5 s ejections: long enough that no request of a round outlives one, even on a loaded machine.
        var codes = try statuses(listen, (0..<20).map { "/o1/\($0)" })
        // Three failures in a row (the 503s; a reset or refusal would count the same) eject it.
        #expect(codes.filter { $0 != 200 }.count == 3 && codes.filter { $0 == 503 }.count >= 2, "\(codes)")
        #expect(tern.child.output.contains("host 127.0.0.1:\(bad.port) ejected for 5000 ms after 3 failures in a row (1 of 2 hosts out)"))
        // Back after the ejection: three more failures eject it for twice as long.
        usleep(5_200_000)
        codes = try statuses(listen, (0..<20).map { "/o2/\($0)" })
        #expect(codes.filter { $0 != 200 }.count == 3, "\(codes)")
        #expect(tern.child.output.contains("ejected for 10000 ms after 3 failures in a row"))
        #expect((4...6).contains(badCount.value))
        // The admin API counts both ejections and shows the host out of rotation now.
        let stats = try run("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(adminPort)/api/v1/stats"]).1
        #expect(stats.contains("\"outlier_ejections_total\": 2") && stats.contains("\"hosts_out_of_rotation\": 1"), "\(stats)")
        // The good host is never ejected: at 50 %, one host of two is the most that may be out.
        #expect(!tern.child.output.contains("host 127.0.0.1:\(good.port) ejected"))
    }

    /// An HTTP/1 upstream that answers every request 503 on a kept connection, counting them.
    func failingPeer(_ count: Counter) throws -> TCPPeer {
        try TCPPeer { fd in
            var buffer = [UInt8](repeating: 0, count: 4096)
            var pending: [UInt8] = []
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                pending += buffer[0..<n]
                while let end = pending.indices.dropLast(3).first(where: { pending[$0] == 13 && pending[$0 + 1] == 10 && pending[$0 + 2] == 13 && pending[$0 + 3] == 10 }) {
                    pending.removeFirst(end + 4)
                    count.add()
                    _ = TCPBytes.writeAll(fd, Array("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nsick".utf8))
                }
            }
            close(fd)
        }
    }

    @Test func theFaultToleranceSendFilterTakesAHostFailingFarAboveTheClusterRateOut() throws {
        let good = try PythonUpstream()
        defer { good.stop() }
        let badCount = Counter()
        let bad = try failingPeer(badCount)
        defer { bad.stop() }
        let listen = freePort()
        let filter = #"{"type": "fault_tolerance", "config": {"enabled": true, "timeWindow": 600, "leastWindowCount": 5, "exceptionRateMultiple": 1.5, "recoverTime": 4000}}"#
        let l = listener(listen, "Http1", router: "http").replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"stream_filters\": [\(filter)],")
        let tern = try TernProcess(config: config(listeners: l, clusters: "{ \"name\": \"web\", \"type\": \"SIMPLE\", \"lb_type\": \"LB_ROUNDROBIN\", \"hosts\": [\(hosts([good.port, bad.port]))] }"),
                                   waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        // Half the answers fail, all from the bad host (rate 1 against the cluster's 0.5): the first
        // answer after a window of 600 ms with at least 5 answers per host measures it and takes
        // the bad host out for 4 s. Rounds go on until that happens (a loaded machine is slow).
        let marker = "host 127.0.0.1:\(bad.port) out of rotation for 4000 ms: "
        var sawFailures = false
        for round in 0..<12 where !tern.child.output.contains(marker) {
            sawFailures = try statuses(listen, (0..<12).map { "/ft1/\(round)/\($0)" }).contains(503) || sawFailures
            usleep(250_000)
        }
        #expect(sawFailures)
        #expect(tern.child.output.contains(marker), "\(tern.child.output.suffix(800))")
        var codes = try statuses(listen, (0..<10).map { "/ft2/\($0)" })
        #expect(codes.allSatisfy { $0 == 200 }, "\(codes)")
        #expect(!tern.child.output.contains("host 127.0.0.1:\(good.port) out of rotation"))
        // Back after recoverTime.
        usleep(4_200_000)
        codes = try statuses(listen, (0..<10).map { "/ft3/\($0)" })
        #expect(codes.contains(503), "the host is back in rotation: \(codes)")
    }

    /// The issue's bar: a host killed under steady load costs at most the requests in flight on
    /// it at that moment (one per client at most), and it takes traffic again after its restart.
    @Test func aHostKilledUnderLoadFailsNoRequestBeyondThoseInFlightAndReturns() throws {
        let a = try PythonUpstream(), b = try PythonUpstream()
        defer { a.stop() }
        let bPort = b.port
        let listen = freePort()
        let check = #""health_check": { "protocol": "Http1", "timeout": "300ms", "interval": "200ms", "unhealthy_threshold": 2, "healthy_threshold": 2, "check_config": {"http_check_config": {"path": "/health"}} }"#
        let tern = try TernProcess(config: config(listeners: listener(listen, "Http1", router: "http"),
                                                  clusters: "{ \"name\": \"web\", \"type\": \"SIMPLE\", \"connect_timeout\": \"1s\", \(check), \"hosts\": [\(hosts([a.port, bPort]))] }"),
                                   waitFor: [listen], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        let clients = 8
        let load = KeepAliveLoad(port: listen, clients: clients) { id, n in "/load-\(id)-\(n)" }
        #expect(waitUntil(timeout: 10) { load.served > 300 && self.served(b, "/load-") > 50 })
        b.stop()
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(bPort) unhealthy after 2 failed http check(s)") == 1 }, "\(tern.child.output.suffix(600))")
        let afterDeath = load.served
        #expect(waitUntil(timeout: 10) { load.served > afterDeath + 300 })
        let b2 = try PythonUpstream(port: bPort)
        defer { b2.stop() }
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(bPort) healthy again after 2 passed check(s)") == 1 })
        #expect(waitUntil(timeout: 10) { self.served(b2, "/load-") > 50 }, "the restarted host takes requests again")
        let result = load.stop()
        // Requests after the death find the host refusing (a connect failure, tried on the other
        // host) or out of rotation: only those already sent to it can fail.
        #expect(result.failed <= clients, "\(result.failed) failed: \(result.failures)")
    }

    @Test func boltHeartbeatChecksTakeADeadBoltServerOutWithNoFailedCall() throws {
        let p1 = freePort(), p2 = freePort()
        let s1 = try startBoltServer(port: p1)
        var s2: ChildProcess? = try startBoltServer(port: p2)
        defer { s1.stop(); s2?.stop() }
        let listen = freePort()
        let check = #""health_check": { "protocol": "bolt", "timeout": "500ms", "interval": "200ms" }"#
        let tern = try TernProcess(config: config(listeners: listener(listen, "bolt", router: "bolt"),
                                                  clusters: "{ \"name\": \"rpc\", \"type\": \"SIMPLE\", \"connect_timeout\": \"1s\", \(check), \"hosts\": [\(hosts([p1, p2]))] }"),
                                   waitFor: [listen], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        func calls(_ n: Int) throws -> [String] {
            let client = try ChildProcess(venvPython, [boltPeers, "once", String(listen), "echo", "hc", String(n)], name: "bolt-once")
            #expect(client.waitForExit(timeout: 60) == 0, "\(client.output)")
            return client.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("result") || $0.hasPrefix("error") }
        }
        #expect(try calls(10) == Array(repeating: "result echo:hc", count: 10))
        s2?.stop(); s2 = nil
        #expect(waitUntil(timeout: 5) { self.logLines(tern, "host 127.0.0.1:\(p2) unhealthy after 1 failed bolt heartbeat check(s)") == 1 }, "\(tern.child.output.suffix(600))")
        #expect(try calls(20) == Array(repeating: "result echo:hc", count: 20))
        s2 = try startBoltServer(port: p2)
        #expect(waitUntil(timeout: 10) { self.logLines(tern, "host 127.0.0.1:\(p2) healthy again") == 1 }, "\(tern.child.output.suffix(600))")
        #expect(try calls(10) == Array(repeating: "result echo:hc", count: 10))
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
