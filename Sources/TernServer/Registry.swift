import TernBolt
import TernCore
import TernHTTP1

/// A network filter compiled from config; makes one filter instance per worker and listener.
public protocol NetworkFilterPlan: Sendable {
    func makeFilter(worker: Worker) -> NetworkFilter
}

/// How a network filter type reads its config.
protocol NetworkFilterKind: Sendable {
    func compile(_ config: JSONObject, context: FilterContext, diagnostics: Diagnostics) -> NetworkFilterPlan?
}

/// Network filters by `type`: a new filter is one folder plus one line here.
enum NetworkFilterRegistry {
    static let kinds: [String: NetworkFilterKind] = [
        "proxy": ProxyFilterKind(),
        "tcp_proxy": TCPProxyFilterKind(),
    ]
    /// MOSN's network filters Tern does not have yet.
    static let later: Set<String> = ["udp_proxy", "fault_inject", "tunnel", "rpc_proxy", "dubbo_proxy"]
}

/// Stream protocols by MOSN's names, each built from the proxy filter's config: a new codec is
/// one module plus one line here.
enum ProtocolRegistry {
    static let protocols: [String: @Sendable (JSONObject) -> StreamProtocol] = [
        "Http1": { _ in HTTP1Protocol() },
        "bolt": { BoltProtocol(name: "bolt", settings: boltSettings($0)) },
        "boltv2": { BoltProtocol(name: "boltv2", settings: boltSettings($0)) },
        // MOSN's older name for SOFARPC over bolt.
        "SofaRpc": { BoltProtocol(name: "SofaRpc", settings: boltSettings($0)) },
    ]
    /// The order `Auto` tries them in.
    static let sniffOrder = ["Http1", "bolt"]
    /// Names MOSN knows that Tern does not serve yet.
    static let later: Set<String> = ["Http2", "dubbo", "tars"]
    /// Tern's keys in the proxy config that belong to protocols.
    static let configKeys: Set<String> = ["max_frame_bytes", "upstream_connections_per_host", "heartbeat_interval", "heartbeat_max_misses",
                                           "max_inflight_requests", "upstream_max_concurrent_requests"]

    static func boltSettings(_ c: JSONObject) -> BoltSettings {
        var s = BoltSettings()
        if let v = c.int("max_frame_bytes", min: 1024, max: 1 << 30) { s.maxFrameBytes = v }
        if let v = c.int("upstream_connections_per_host", min: 1, max: 64) { s.connectionsPerHost = v }
        if let v = c.duration("heartbeat_interval", min: 100, max: 3_600_000) { s.heartbeatIntervalMS = v }
        if let v = c.int("heartbeat_max_misses", min: 1, max: 100) { s.heartbeatMaxMisses = v }
        if let v = c.int("max_inflight_requests", min: 1, max: 1 << 20) { s.maxInflightRequests = v }
        if let v = c.int("upstream_max_concurrent_requests", min: 1, max: 1 << 20) { s.upstreamMaxConcurrentRequests = v }
        return s
    }
}
