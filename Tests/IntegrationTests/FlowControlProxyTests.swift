import Foundation
import Glibc
import Testing
import TernTestSupport

/// `flowControlFilter` end to end with two workers: the limit is the process's, not each
/// worker's, and requests over it get the configured status and body (bolt: the mapped error).
@Suite(.serialized, .timeLimit(.minutes(5)))
final class FlowControlProxyTests {
    static let threshold = 40
    let upstream: PythonUpstream
    let boltServerPort = freePort()
    let boltServer: ChildProcess
    let tern: TernProcess
    let httpPort = freePort(), boltPort = freePort()

    init() throws {
        upstream = try PythonUpstream()
        boltServer = try startBoltServer(port: boltServerPort)
        let listeners = """
              { "name": "http", "address": "127.0.0.1:\(httpPort)", "bind_port": true,
                "stream_filters": [{ "type": "flowControlFilter", "config": { "app_name": "t", "global_switch": true, "monitor": false,
                   "limit_key_type": "PATH", "action": { "status": 429, "body": "slow down" },
                   "rules": [{ "resource": "/limited", "grade": 1, "threshold": \(Self.threshold) }] } }],
                "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1",
                   "upstream_protocol": "Http1", "router_config_name": "r" } }] }] },
              { "name": "bolt", "address": "127.0.0.1:\(boltPort)", "bind_port": true,
                "stream_filters": [{ "type": "flowControlFilter", "config": { "global_switch": true,
                   "action": { "status": 503, "body": "busy" },
                   "rules": [{ "resource": "com.tern.test.EchoService:1.0", "threshold": 2 }] } }],
                "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "bolt",
                   "upstream_protocol": "bolt", "router_config_name": "rb" } }] }] }
            """
        let config = streamFilterConfig(listeners: listeners, httpUpstream: upstream.port, boltUpstream: boltServerPort)
        tern = try TernProcess(config: config, waitFor: [httpPort, boltPort], extraArguments: ["--workers", "2"])
    }

    deinit {
        tern.stop()
        boltServer.stop()
        upstream.stop()
    }

    /// Python threads, each a new connection per request (so the kernel spreads them over both
    /// workers' sockets), for `seconds`: one line per request, "status send recv body" with the
    /// monotonic clock Tern's windows count in.
    func load(path: String, seconds: Double, threads: Int = 8) throws -> [(status: Int, sent: Double, received: Double, body: String)] {
        let out = try run("/usr/bin/env", ["python3", "-c", """
            import http.client, threading, time
            # 6: CLOCK_MONOTONIC_COARSE (Linux), the clock Tern's windows count in; Python has no name for it.
            end = time.monotonic() + \(seconds)
            lines, lock = [], threading.Lock()
            def work():
                while time.monotonic() < end:
                    c = http.client.HTTPConnection("127.0.0.1", \(httpPort), timeout=10)
                    t0 = time.clock_gettime(6)
                    c.request("GET", "\(path)")
                    r = c.getresponse(); body = r.read().decode()
                    t1 = time.clock_gettime(6)
                    c.close()
                    with lock: lines.append("%d %.6f %.6f %s" % (r.status, t0, t1, body.strip()))
            ts = [threading.Thread(target=work) for _ in range(\(threads))]
            [t.start() for t in ts]; [t.join() for t in ts]
            print("\\n".join(lines))
            """]).1
        return out.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", maxSplits: 3).map(String.init)
            guard f.count >= 3, let s = Int(f[0]), let a = Double(f[1]), let b = Double(f[2]) else { return nil }
            return (s, a, b, f.count > 3 ? f[3] : "")
        }
    }

    @Test func theLimitHoldsAcrossBothWorkersAndTheExcessGetsTheAction() throws {
        let results = try load(path: "/limited", seconds: 3.2)
        let passed = results.filter { $0.status == 200 }
        let limited = results.filter { $0.status == 429 }
        #expect(passed.count + limited.count == results.count, "other statuses: \(Set(results.map(\.status)))")
        #expect(limited.allSatisfy { $0.body == "slow down" })
        try #require(results.count > 4 * Self.threshold, "too little load to reach the limit: \(results.count)")
        // A 200 whose request was sent and answered within one second of the monotonic clock
        // passed in that second's window: at most `threshold` of them, across both workers
        // (per-worker counting would let up to twice as many through).
        var perSecond: [Int: Int] = [:]
        for r in passed where Int(r.sent) == Int(r.received) { perSecond[Int(r.sent), default: 0] += 1 }
        #expect(perSecond.values.allSatisfy { $0 <= Self.threshold }, "\(perSecond)")
        // Overall: at most `threshold` per window touched, and the full windows in between filled up.
        let windows = Int(results.map(\.received).max()!) - Int(results.map(\.sent).min()!) + 1
        #expect(passed.count <= Self.threshold * windows, "\(passed.count) passed in \(windows) windows")
        #expect(passed.count >= Self.threshold * (windows - 2), "\(passed.count) passed in \(windows) windows")
        // Another path has no rule.
        #expect(try load(path: "/free", seconds: 0.3, threads: 2).allSatisfy { $0.status == 200 })
        // Both workers proxied requests (their counters, logged when Tern stops), so the bound
        // above held for a count the two share.
        tern.child.signal(SIGTERM)
        #expect(tern.child.waitForExit(timeout: 30) != nil)
        var busyWorkers: Set<Int> = []
        let pattern = try NSRegularExpression(pattern: "worker ([0-9]+) cluster up: requests=([0-9]+)")
        let log = tern.child.output
        for m in pattern.matches(in: log, range: NSRange(log.startIndex..., in: log)) {
            if let w = Int(log[Range(m.range(at: 1), in: log)!]), let n = Int(log[Range(m.range(at: 2), in: log)!]), n > 0 { busyWorkers.insert(w) }
        }
        #expect(busyWorkers == [0, 1], "\(log.split(separator: "\n").filter { $0.contains("[stats]") })")
    }

    @Test func boltCallsOverTheLimitGetTheMappedError() throws {
        let client = try ChildProcess(venvPython, [boltPeers, "once", String(boltPort), "echo", "x", "8"], name: "bolt-once")
        #expect(client.waitForExit(timeout: 60) == 0, "\(client.output)")
        let out = client.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("result") || $0.hasPrefix("error") }
        #expect(out.count == 8)
        let passed = out.filter { $0.hasPrefix("result") }.count
        // 8 calls take well under a second: one window, or two if they straddle a boundary.
        #expect(passed >= 2 && passed <= 4, "\(out)")
        // 503 maps to SERVER_THREADPOOL_BUSY, as MOSN maps it.
        #expect(out.filter { $0.hasPrefix("error") }.allSatisfy { $0.contains("SERVER_THREADPOOL_BUSY") }, "\(out)")
    }
}
