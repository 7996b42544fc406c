import Testing
@testable import TernServer
import TernCore

/// Cluster `keepalive` (MOSN's bolt heartbeats) and `tcp_keepalive` (Tern's, Envoy's names).
struct KeepAliveConfigTests {
    let at = "$.cluster_manager.clusters[0]"
    func cluster(_ extra: String) -> ConfigResult {
        load(config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}], \(extra)"))
    }

    @Test func heartbeatsAndTCPKeepAliveWithTheirDefaults() throws {
        let plain = try #require(cluster("\"lb_type\": \"LB_RANDOM\"").plan?.clusters[0])
        #expect(plain.heartbeat == nil && plain.tcpKeepAlive == .mosnDefault)
        let tuned = try #require(cluster(#""keepalive": {"interval": "2s", "timeout": "500ms"}, "tcp_keepalive": {"keepalive_time": 10, "keepalive_interval": 3, "keepalive_probes": 4}"#).plan?.clusters[0])
        #expect(tuned.heartbeat == UpstreamHeartbeat(intervalMS: 2000, timeoutMS: 500))
        #expect(tuned.tcpKeepAlive == TCPKeepAlive(idleSeconds: 10, intervalSeconds: 3, probes: 4))
        // MOSN's timeout default 1s; an interval of 0 schedules nothing (the listener's heartbeats apply).
        #expect(cluster(#""keepalive": {"interval": "1s"}"#).plan?.clusters[0].heartbeat == UpstreamHeartbeat(intervalMS: 1000, timeoutMS: 1000))
        #expect(cluster(#""keepalive": {"interval": "0s", "timeout": "1s"}"#).plan?.clusters[0].heartbeat == nil)
        #expect(cluster(#""tcp_keepalive": {"keepalive_time": 0}"#).plan?.clusters[0].tcpKeepAlive == nil)
        #expect(cluster(#""tcp_keepalive": {"keepalive_time": 5}"#).plan?.clusters[0].tcpKeepAlive == TCPKeepAlive(idleSeconds: 5, intervalSeconds: 15, probes: 0))
    }

    @Test func badValuesAreErrorsWithTheirPaths() {
        #expect(cluster(#""keepalive": {"interval": "50ms"}"#).diagnostics.errors == ["\(at).keepalive.interval: at least 100ms"])
        #expect(cluster(#""keepalive": {"interval": "x"}"#).diagnostics.errors == ["\(at).keepalive.interval: invalid duration \"x\""])
        #expect(cluster(#""tcp_keepalive": {"keepalive_probes": 0}"#).diagnostics.errors == ["\(at).tcp_keepalive.keepalive_probes: must be between 1 and 127, got 0"])
        #expect(cluster(#""tcp_keepalive": {"keepalive_tme": 3}"#).diagnostics.errors == ["\(at).tcp_keepalive.keepalive_tme: unknown key; did you mean `keepalive_time`?"])
    }
}
