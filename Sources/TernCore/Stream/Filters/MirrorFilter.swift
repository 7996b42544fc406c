/// MOSN's `mirror` stream filter: requests whose route has `request_mirror_policies` are copied,
/// in that policy's `percent` of cases, to its shadow cluster: `amplification` copies, each to a
/// host its balancer picks, or with `broadcast` one to every host of the shadow cluster, and then
/// the client is answered 200 by Tern instead of the route's cluster (MOSN's broadcast hijack).
///
/// Copies are fire and forget: the sessions send them on their own upstream connections, never
/// wait for them, never pass their answers on, and drop a copy whose shadow is slower than the
/// client (see `MirrorCopies.maxUnsentBytes`), so a shadow can neither delay nor fail the real
/// request. The filter itself decides nothing per request; the sessions ask the forwarder's
/// `mirrorCopies(for:through:)` once the route is chosen.
public final class MirrorFilter: Sendable {
    public let amplification: Int
    public let broadcast: Bool
    public init(amplification: Int, broadcast: Bool) {
        self.amplification = amplification
        self.broadcast = broadcast
    }
}

/// Where the copies of one request go.
public struct MirrorCopies {
    public let cluster: ClusterRuntime
    public let clusterIndex: Int
    /// One entry per copy: the shadow host (cluster host index).
    public let hosts: [Int]
    /// Tern answers the client itself (200) once the copies are sent; the route's cluster gets nothing.
    public let broadcast: Bool

    /// A copy whose shadow has not taken this many bytes is dropped (its connection closed):
    /// a slow shadow never holds memory for, or pushes back on, the request it copies.
    public static let maxUnsentBytes = 1024 * 1024
    /// Copies one worker keeps going at once; past it new copies are skipped (and counted as
    /// overflows of the shadow cluster).
    public static let maxInFlightPerWorker = 256
}

extension Forwarder {
    /// The copies a listener's `mirror` filter makes of a request routed to `target`; nil when it
    /// makes none (no mirror filter, no mirror policy on the route, or not drawn this time).
    public func mirrorCopies(for target: UpstreamTarget, through filters: StreamFilterChain) -> MirrorCopies? {
        guard let filter = filters.plan.mirror, let policy = target.clusterRoute.mirror else { return nil }
        guard policy.percent >= 100 || filters.random.below(100) < policy.percent else { return nil }
        let cluster = worker.clusters[policy.clusterIndex]
        guard !cluster.config.removed, !cluster.config.hosts.isEmpty else { return nil }
        var hosts: [Int] = []
        if filter.broadcast {
            hosts = Array(cluster.config.hosts.indices)
        } else {
            let context = LoadBalancerContext(downstream: nil)
            for _ in 0..<filter.amplification {
                if let h = cluster.chooseHost(.all, context) { hosts.append(h) }
            }
        }
        cluster.stats.requests += hosts.count
        for h in hosts where h < cluster.stats.hostRequests.count { cluster.stats.hostRequests[h] &+= 1 }
        return MirrorCopies(cluster: cluster, clusterIndex: policy.clusterIndex, hosts: hosts, broadcast: filter.broadcast)
    }
}
