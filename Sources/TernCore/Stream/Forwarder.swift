/// Where one request goes, decided once for every protocol: route → cluster → load balancer.
public struct UpstreamTarget {
    public let route: Route
    public let clusterRoute: ClusterRoute
    public let cluster: ClusterRuntime
    public let clusterIndex: Int
    public let hostIndex: Int
    /// The route's timeout, or the listener's default; 0: none.
    public let timeoutMS: Int64

    public var host: HostConfig { cluster.config.hosts[hostIndex] }
}

public enum ForwardDecision {
    /// Send it to this host.
    case upstream(UpstreamTarget)
    /// The route answers itself (direct response, redirect): the protocol writes the answer.
    case routeAnswer(Route)
    /// No route, or no host: the protocol answers with its error for this value.
    case fail(StreamError, ClusterRuntime?)
}

/// The protocol-neutral part of proxying one request: the routing decision, the per-cluster
/// counters and the one log line for a failure. HTTP/1 and bolt sessions both go through it, so
/// a new protocol only decodes, encodes and maps `StreamError` to its own answer. One per
/// listener and worker (the proxy filter's), shared by its sessions: a session holds a reference,
/// not a copy of the listener's settings.
public final class Forwarder {
    public unowned let worker: Worker
    public let settings: ProxySettings

    public init(worker: Worker, settings: ProxySettings) {
        self.worker = worker
        self.settings = settings
    }

    @inline(__always)
    public func decide<R: RoutableRequest>(_ request: R, from downstream: Connection) -> ForwardDecision {
        guard let route = settings.routes.route(request) else { return .fail(.noRoute, nil) }
        guard case .cluster(let clusterRoute) = route.action else { return .routeAnswer(route) }
        let clusterIndex = clusterRoute.pickCluster(&worker.random)
        let cluster = worker.clusters[clusterIndex]
        cluster.stats.requests += 1
        guard let hostIndex = cluster.balancer.chooseHost(LoadBalancerContext(downstream: downstream)) else {
            return .fail(.noHealthyHost(cluster: cluster.config.name), cluster)
        }
        let timeout = clusterRoute.timeoutMS > 0 ? clusterRoute.timeoutMS : settings.defaultRouteTimeoutMS
        return .upstream(UpstreamTarget(route: route, clusterRoute: clusterRoute, cluster: cluster, clusterIndex: clusterIndex,
                                        hostIndex: hostIndex, timeoutMS: timeout))
    }

    /// Counts and logs a failed request; `answer` is what the client is told (for the log).
    public func failed(_ error: StreamError, cluster: ClusterRuntime?, protocolName: String, answer: String) {
        cluster?.stats.record(error)
        let level: LogLevel
        if case .noRoute = error { level = .info } else { level = .error }
        worker.logger.log(level, "proxy", "listener \(settings.listenerName): \(protocolName) \(answer) \(error.code): \(error.detail) (retry safe: \(error.retrySafe))")
    }
}
