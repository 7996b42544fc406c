/// Where one request goes, decided once for every protocol: route → cluster → load balancer.
public struct UpstreamTarget {
    public let route: Route
    public let clusterRoute: ClusterRoute
    public let cluster: ClusterRuntime
    public let clusterIndex: Int
    public let hostIndex: Int
    /// The route's timeout, or the listener's default; 0: none.
    public let timeoutMS: Int64
    /// The hosts the route's entry allows (a retry picks among them again).
    public var subset: HostSubset = .all

    /// The same target on another host (a retry).
    public func on(host: Int) -> UpstreamTarget {
        var t = UpstreamTarget(route: route, clusterRoute: clusterRoute, cluster: cluster, clusterIndex: clusterIndex, hostIndex: host, timeoutMS: timeoutMS)
        t.subset = subset
        return t
    }

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
    public private(set) var settings: ProxySettings
    /// This listener's stream filters on this worker; nil when it has none, so a session's check
    /// per request is one nil test.
    public private(set) var filters: StreamFilterChain?

    /// The worker's access-log buffers (kept here: reaching them through the unowned worker costs
    /// a strong retain per line).
    let accessLogOutput: AccessLogOutput?

    public init(worker: Worker, settings: ProxySettings) {
        self.worker = worker
        accessLogOutput = worker.accessLogOutput
        self.settings = settings
        filters = settings.streamFilters.map { StreamFilterChain(plan: $0) }
        worker.forwarders.append(self)
    }

    /// A reload: the next request uses these (a session reads its settings through here).
    public func replace(settings new: ProxySettings) {
        settings = new
        filters = new.streamFilters.map { StreamFilterChain(plan: $0) }
    }

    @inline(__always)
    public func decide<R: RoutableRequest>(_ request: R, from downstream: Connection) -> ForwardDecision {
        downstream.counters?.stats.requests &+= 1
        guard let route = settings.routes.route(request) else { return .fail(.noRoute, nil) }
        guard case .cluster(let clusterRoute) = route.action else { return .routeAnswer(route) }
        let entry = clusterRoute.pickCluster(&worker.random)
        let clusterIndex = entry.clusterIndex
        let cluster = worker.clusters[clusterIndex]
        cluster.stats.requests += 1
        if let breaker = cluster.breaker, !breaker.admitsRequest {
            return .fail(.overflow(cluster: cluster.config.name, limit: .maxRequests), cluster)
        }
        var context = LoadBalancerContext(downstream: downstream)
        if cluster.usesHashKey { context.hashKey = clusterRoute.hashPolicy.hash(request, from: downstream) }
        guard let hostIndex = cluster.chooseHost(entry.subset, context) else {
            return .fail(.noHealthyHost(cluster: cluster.config.name), cluster)
        }
        if hostIndex < cluster.stats.hostRequests.count { cluster.stats.hostRequests[hostIndex] &+= 1 }
        let timeout = clusterRoute.timeoutMS > 0 ? clusterRoute.timeoutMS : settings.defaultRouteTimeoutMS
        var target = UpstreamTarget(route: route, clusterRoute: clusterRoute, cluster: cluster, clusterIndex: clusterIndex,
                                    hostIndex: hostIndex, timeoutMS: timeout)
        target.subset = entry.subset
        return .upstream(target)
    }

    /// Logs a request a stream filter answered itself; counted against the chosen cluster, if any.
    public func filtered(_ answer: LocalAnswer, cluster: ClusterRuntime?, protocolName: String, reply: String) {
        cluster?.stats.recordResponse(httpStatus: answer.status)
        worker.logger.info("proxy", "listener \(settings.listenerName): \(protocolName) \(reply) \(answer.code) (stream filter)")
    }

    /// Writes a finished request's access-log line(s) (the listener has access logs) and closes the record.
    public func logAccess(_ record: AccessLogRecord) {
        guard let plan = settings.accessLogs, let output = accessLogOutput else { record.close(); return }
        output.write(record, plan: plan)
    }

    /// Counts and logs a failed request; `answer` is what the client is told (for the log).
    public func failed(_ error: StreamError, cluster: ClusterRuntime?, protocolName: String, answer: String) {
        cluster?.stats.record(error)
        let level: LogLevel
        if case .noRoute = error { level = .info } else { level = .error }
        worker.logger.log(level, "proxy", "listener \(settings.listenerName): \(protocolName) \(answer) \(error.code): \(error.detail) (retry safe: \(error.retrySafe))")
    }
}

/// Where a delayed request's filters carry on: the phase and filter index, and the routing
/// decision when it was already made (a delay after routing).
public struct FilterResumePoint {
    public let phase: FilterPhase
    public let index: Int
    public let target: UpstreamTarget?
}

/// What the stream filters and the router made of one request.
public enum FilteredDecision {
    /// Past every filter: the router's decision, as `Forwarder.decide` gives it without filters.
    case forward(ForwardDecision)
    /// A filter answers the request itself (counted against `cluster` when routing had chosen one).
    case answer(LocalAnswer, cluster: ClusterRuntime?)
    /// A filter holds the request: the session keeps it, waits `ms` on a loop timer and then
    /// calls `resume(_:from:through:at:)` with `resume`.
    case delay(ms: Int64, resume: FilterResumePoint)
}

extension Forwarder {
    /// The request through the listener's stream filters: those before routing, the router, then
    /// those after it (they see the chosen cluster). Sessions call this only when `filters` is
    /// set; without filters they call `decide(_:from:)` directly.
    public func decide<R: StreamRequest>(_ request: R, from downstream: Connection, through filters: StreamFilterChain) -> FilteredDecision {
        filterAndRoute(request, downstream, filters, from: 0, delayDone: false)
    }

    /// `decide(_:from:through:)` for a fresh request (`resuming` nil), `resume` for a delayed one.
    @inline(__always)
    public func decide<R: StreamRequest>(_ request: R, from downstream: Connection, through filters: StreamFilterChain,
                                         resuming point: FilterResumePoint?) -> FilteredDecision {
        if let point { return resume(request, from: downstream, through: filters, at: point) }
        return decide(request, from: downstream, through: filters)
    }

    /// The same for a request a filter delayed, from where it stopped.
    public func resume<R: StreamRequest>(_ request: R, from downstream: Connection, through filters: StreamFilterChain,
                                         at point: FilterResumePoint) -> FilteredDecision {
        guard point.phase == .afterRoute else { return filterAndRoute(request, downstream, filters, from: point.index, delayDone: true) }
        // An after-route delay always carries its routing decision.
        guard let target = point.target else { return .forward(.fail(.noRoute, nil)) }
        return afterRoute(request, downstream, filters, target, from: point.index, delayDone: true)
    }

    @inline(__always)
    private func filterAndRoute<R: StreamRequest>(_ request: R, _ downstream: Connection, _ filters: StreamFilterChain,
                                                  from start: Int, delayDone: Bool) -> FilteredDecision {
        switch filters.run(.beforeRoute, request, FilterInput(downstream: downstream), from: start, delayDone: delayDone) {
        case .proceed: break
        case .answer(let answer): return .answer(answer, cluster: nil)
        case .delay(let ms, let index): return .delay(ms: ms, resume: FilterResumePoint(phase: .beforeRoute, index: index, target: nil))
        }
        let decision = decide(request, from: downstream)
        guard case .upstream(let target) = decision, filters.hasAfterRoute else { return .forward(decision) }
        return afterRoute(request, downstream, filters, target, from: 0, delayDone: false)
    }

    @inline(__always)
    private func afterRoute<R: StreamRequest>(_ request: R, _ downstream: Connection, _ filters: StreamFilterChain, _ target: UpstreamTarget,
                                              from start: Int, delayDone: Bool) -> FilteredDecision {
        switch filters.run(.afterRoute, request, FilterInput(downstream: downstream, clusterIndex: target.clusterIndex), from: start, delayDone: delayDone) {
        case .proceed: return .forward(.upstream(target))
        case .answer(let answer): return .answer(answer, cluster: target.cluster)
        case .delay(let ms, let index): return .delay(ms: ms, resume: FilterResumePoint(phase: .afterRoute, index: index, target: target))
        }
    }
}
