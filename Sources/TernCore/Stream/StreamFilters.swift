/// Stream filters (MOSN's `stream_filters`): per-request policy run by every protocol session on
/// the request head, before routing (`beforeRoute`) and once a cluster is chosen (`afterRoute`).
/// A listener's list is compiled once at config load into a `StreamFilterPlan`; each worker's
/// `Forwarder` holds a `StreamFilterChain` built from it, or nil when the listener has none, so a
/// request without filters pays one nil check.
///
/// Adding a filter: a file in Stream/Filters with a struct that has `phase` and `decide`, a case in
/// `StreamFilter` (and its arm in `StreamFilter.decide`), and its config reader in TernServer's
/// `StreamFilterRegistry`.

/// A request as filters see it, whatever the protocol: what the router sees (path, host, headers,
/// in place) plus the method and the body length the head announces.
public protocol StreamRequest: RoutableRequest {
    /// The method (HTTP); empty for protocols without one (bolt).
    func withMethod<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R
    /// The body length the head announces; nil when only the body's end will tell (chunked).
    var contentLength: Int64? { get }
    /// The query string without `?`; empty when there is none (and for bolt).
    func withQuery<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R
}

/// What a filter tells the client instead of proxying: an HTTP status (bolt maps it to a response
/// status), extra headers, a body, and a machine-readable code for `x-tern-error` and the log.
/// Built at config load; a class, so a verdict carrying it is one pointer to move.
public final class LocalAnswer: Sendable {
    public let status: Int
    public let headers: [HeaderToAdd]
    public let body: String
    public let code: String
    public init(status: Int, headers: [HeaderToAdd] = [], body: String, code: String) {
        self.status = status
        self.headers = headers
        self.body = body
        self.code = code
    }
}

/// When a filter runs: on the request head before the route is looked up, or after the router
/// chose a cluster (filters that need the routing decision, as MOSN's AfterRoute phase).
/// `response`: send-side filters, which see the answer to a request that went to an upstream host.
public enum FilterPhase: Sendable { case beforeRoute, afterRoute, response }

/// A filter's answer for one request.
public enum FilterVerdict {
    /// Next filter (or on to routing / the upstream).
    case proceed
    /// Stop: the session answers the client with this and the request never reaches an upstream.
    case answer(LocalAnswer)
    /// Hold the request for `ms` on an event-loop timer, then run the chain again from filter
    /// `resumeAt` of the same phase with `delayDone` set (the delaying filter does not delay twice).
    case delay(ms: Int64, resumeAt: Int)
}

/// What a filter may look at besides the request: the downstream connection (its peer address)
/// and, after routing, the chosen cluster.
public struct FilterInput {
    public let downstream: Connection
    /// Index of the cluster the router chose (`afterRoute` only; -1 before routing).
    public let clusterIndex: Int
    public init(downstream: Connection, clusterIndex: Int = -1) {
        self.downstream = downstream
        self.clusterIndex = clusterIndex
    }
}

/// The built-in filters, switched over: no existential or closure per request. Each filter is a
/// final class of immutable settings, so taking one out of the enum is a single retain.
public enum StreamFilter: Sendable {
    case ipAccess(IPAccessFilter)
    case payloadLimit(PayloadLimitFilter)
    case fault(FaultFilter)
    case flowControl(FlowControlFilter)
    case jwtAuthn(JWTAuthnFilter)
    /// Not run in a phase: the sessions ask `Forwarder.mirrorCopies` once the route is chosen.
    case mirror(MirrorFilter)
    /// Send side: sees answers (`StreamFilterChain.responded`), decides nothing on requests.
    case faultTolerance(FaultToleranceFilter)

    public var phase: FilterPhase {
        switch self {
        case .ipAccess(let f): return f.phase
        case .payloadLimit(let f): return f.phase
        case .fault(let f): return f.phase
        case .flowControl(let f): return f.phase
        case .jwtAuthn(let f): return f.phase
        case .mirror: return .afterRoute
        case .faultTolerance(let f): return f.phase
        }
    }

    @inline(__always)
    func decide<R: StreamRequest>(_ request: R, _ input: FilterInput, _ random: inout FastRandom, delayDone: Bool) -> FilterVerdict {
        switch self {
        case .ipAccess(let f): return f.decide(request, input)
        case .payloadLimit(let f): return f.decide(request)
        case .fault(let f): return f.decide(request, input, &random, delayDone: delayDone)
        case .flowControl(let f): return f.decide(request)
        case .jwtAuthn(let f): return f.decide(request)
        case .mirror, .faultTolerance: return .proceed
        }
    }
}

/// A listener's filters in config order, split by phase; shared read-only by every worker.
public struct StreamFilterPlan: Sendable {
    public let beforeRoute: [StreamFilter]
    public let afterRoute: [StreamFilter]
    /// The smallest `payload_limit` and its answer, for bodies whose length the head does not give.
    public let streamedBodyLimit: PayloadLimitFilter?
    /// Lowercased request header names removed before a request that passed the filters goes
    /// upstream (`jwt_authn` providers with `forward: false`); empty: none.
    public let strippedRequestHeaders: [[UInt8]]
    /// The listener's `mirror` filter (the first; it decides nothing per request, so it is in
    /// neither phase's list); nil: requests are not copied.
    public let mirror: MirrorFilter?
    /// Send-side filters, in config order.
    public let response: [StreamFilter]

    public init(_ filters: [StreamFilter]) {
        var mirror: MirrorFilter?
        for case .mirror(let f) in filters where mirror == nil { mirror = f }
        self.mirror = mirror
        response = filters.filter { $0.phase == .response }
        let deciding = filters.filter { f in
            if case .mirror = f { return false }
            return f.phase != .response
        }
        beforeRoute = deciding.filter { $0.phase == .beforeRoute }
        afterRoute = deciding.filter { $0.phase == .afterRoute }
        var smallest: PayloadLimitFilter?
        for case .payloadLimit(let f) in filters where smallest == nil || f.maxBytes < smallest!.maxBytes { smallest = f }
        streamedBodyLimit = smallest
        var stripped: [[UInt8]] = []
        for case .jwtAuthn(let f) in filters {
            for name in f.strippedHeaders where !stripped.contains(name) { stripped.append(name) }
        }
        strippedRequestHeaders = stripped
    }

    public var isEmpty: Bool { beforeRoute.isEmpty && afterRoute.isEmpty && mirror == nil && response.isEmpty }
}

/// One listener's filters on one worker (built by its `Forwarder`): runs a phase for a request.
public final class StreamFilterChain {
    public let plan: StreamFilterPlan
    /// This worker's draws for percentages (fault), kept here: reaching the worker's through an
    /// unowned reference costs a strong retain per request.
    var random = FastRandom()
    /// Whether any filter runs after routing (else sessions skip that phase entirely).
    public let hasAfterRoute: Bool

    /// Whether a send-side filter looks at answers (else sessions skip `responded`).
    public let observesResponses: Bool
    /// Each send-side fault_tolerance filter's counts on this worker (by position in `plan.response`).
    private let windows: [FaultToleranceWindow]

    public init(plan: StreamFilterPlan) {
        self.plan = plan
        hasAfterRoute = !plan.afterRoute.isEmpty
        observesResponses = !plan.response.isEmpty
        windows = plan.response.map { _ in FaultToleranceWindow() }
    }

    /// An answer to a request that went to `cluster`'s host `response.host`, for the send-side
    /// filters (they observe; the answer goes on as it is).
    public func responded(_ response: StreamResponse, cluster: ClusterRuntime, logger: Logger) {
        for (i, f) in plan.response.enumerated() {
            if case .faultTolerance(let filter) = f { windows[i].observe(response, filter, cluster: cluster, logger: logger) }
        }
    }

    /// Runs the filters of `phase` from `start` (0, or where a delay stopped) until one stops.
    public func run<R: StreamRequest>(_ phase: FilterPhase, _ request: R, _ input: FilterInput,
                                      from start: Int = 0, delayDone: Bool = false) -> FilterVerdict {
        // Through the buffer: no retain and release of each filter as it is taken out.
        (phase == .beforeRoute ? plan.beforeRoute : plan.afterRoute).withUnsafeBufferPointer { filters in
            var index = start
            while index < filters.count {
                let verdict = filters[index].decide(request, input, &random, delayDone: delayDone && index == start)
                switch verdict {
                case .proceed: index += 1
                case .answer: return verdict
                case .delay(let ms, _): return .delay(ms: ms, resumeAt: index)
                }
            }
            return .proceed
        }
    }

    /// The body limit for bodies that stream without a length (chunked), nil when none applies.
    public var streamedBodyLimit: PayloadLimitFilter? { plan.streamedBodyLimit }
}
