import Foundation
import Glibc
import Testing
import TernTestSupport

/// Finding dead upstream peers in seconds: MOSN's cluster `keepalive` (bolt heartbeats with their
/// own timeout) and TCP keep-alive on upstream sockets (`tcp_keepalive`), through the real binary.
@Suite(.serialized, .timeLimit(.minutes(3)))
final class DeadPeerTests {
    @Test func aClusterKeepaliveFindsASilentBoltUpstreamLongBeforeTheCallTimesOut() throws {
        let silentPort = freePort(), listen = freePort()
        let silent = try ChildProcess(venvPython, [boltPeers, "silent", String(silentPort)], name: "silent")
        defer { silent.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(silentPort) })
        // The listener's heartbeats stay at their 15 s default: only the cluster's can find it.
        let config = boltConfig(listen: listen, upstream: silentPort)
            .replacingOccurrences(of: "\"connect_timeout\": \"1s\",", with: "\"connect_timeout\": \"1s\", \"keepalive\": {\"interval\": \"300ms\", \"timeout\": \"200ms\"},")
            .replacingOccurrences(of: "\"timeout\": \"3s\"", with: "\"timeout\": \"8s\"")
        #expect(config.contains("\"keepalive\"") && config.contains("\"8s\""))
        let tern = try TernProcess(config: config, waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let c = try RawClient(port: listen, timeout: 15)
        defer { c.close() }
        let sent = Date()
        c.send(BoltTestFrame.request(id: 61, service: echoService, method: "echo", body: [1]))
        let r = BoltTestFrame.readResponses(c, 1)
        let waited = Date().timeIntervalSince(sent)
        // Three heartbeats 300 ms apart, each missed after 200 ms: closed in about 1.5 s, the call
        // answered CONNECTION_CLOSED instead of waiting out its 8 s timeout.
        #expect(r.first?.id == 61 && r.first?.status == 0x10, "\(tern.child.output.suffix(800))")
        #expect(waited > 1.0 && waited < 4, "answered after \(waited) s")
        #expect(tern.child.output.contains("missed 3 heartbeats"))
    }

    /// The keep-alive timer of Tern's established connections to `port`, as `ss -o` shows it.
    func keepAliveTimers(to port: UInt16) throws -> [String] {
        let out = try run("/usr/bin/env", ["ss", "-Htno", "state", "established", "dport = :\(port)"]).1
        return out.split(separator: "\n").map { line in
            guard let r = line.range(of: "timer:(") else { return "none" }
            return String(line[r.upperBound...].prefix(while: { $0 != ")" }))
        }
    }

    @Test func upstreamSocketsGetTCPKeepAliveAsConfigured() throws {
        let a = try PythonUpstream(), b = try PythonUpstream(), d = try PythonUpstream()
        defer { a.stop(); b.stop(); d.stop() }
        let listen = freePort()
        let config = """
            { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
                "routers": [{ "router_config_name": "http", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [
                  { "match": {"prefix": "/tuned/"}, "route": {"cluster_name": "tuned"} },
                  { "match": {"prefix": "/off/"}, "route": {"cluster_name": "off"} },
                  { "match": {"prefix": "/"}, "route": {"cluster_name": "default"} }] }] }],
                "listeners": [{ "name": "http", "address": "127.0.0.1:\(listen)", "bind_port": true,
                  "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "http" } }] }] }] }],
              "cluster_manager": { "clusters": [
                { "name": "tuned", "tcp_keepalive": {"keepalive_time": 7, "keepalive_interval": 2, "keepalive_probes": 3}, "hosts": [{"address": "127.0.0.1:\(a.port)"}] },
                { "name": "off", "tcp_keepalive": {"keepalive_time": 0}, "hosts": [{"address": "127.0.0.1:\(b.port)"}] },
                { "name": "default", "hosts": [{"address": "127.0.0.1:\(d.port)"}] }] } }
            """
        let tern = try TernProcess(config: config, waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        // One request each: the upstream connection stays pooled (keep-alive) for ss to see.
        for path in ["/tuned/x", "/off/x", "/x"] {
            let c = try RawClient(port: listen)
            c.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(c.readResponses(1).first?.status == 200)
            c.close()
        }
        let tuned = try keepAliveTimers(to: a.port), off = try keepAliveTimers(to: b.port), plain = try keepAliveTimers(to: d.port)
        // keepalive,<time left, "6.9sec" or "14sec">,<probes sent>: at most 7 s left on the tuned
        // one, up to 15 s by default.
        func secondsLeft(_ timer: String) -> Double {
            Double(String((timer.split(separator: ",").dropFirst().first ?? "").prefix(while: { $0.isNumber || $0 == "." }))) ?? -1
        }
        #expect(tuned.count == 1 && tuned[0].hasPrefix("keepalive,") && secondsLeft(tuned[0]) > 0 && secondsLeft(tuned[0]) <= 7, "\(tuned)")
        #expect(off == ["none"], "\(off)")
        #expect(plain.count == 1 && plain[0].hasPrefix("keepalive,") && secondsLeft(plain[0]) > 7 && secondsLeft(plain[0]) <= 15, "\(plain)")
    }
}
