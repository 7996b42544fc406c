import CTernShim
/// One upstream endpoint as configured.
public struct HostConfig: Sendable {
    public let address: SocketAddress
    public let hostname: String
    public let weight: Int
    public let metadata: [String: String]
    public init(address: SocketAddress, hostname: String, weight: Int, metadata: [String: String]) {
        self.address = address; self.hostname = hostname; self.weight = weight; self.metadata = metadata
    }
}

/// A cluster as configured: immutable and shared by all workers.
public struct ClusterConfig: Sendable {
    public let name: String
    public let lbType: String
    public let hosts: [HostConfig]
    public let connectTimeoutMS: Int64
    public let idleTimeoutMS: Int64
    public let maxRequestsPerConnection: Int
    public let connectionBufferLimit: Int
    public let maxIdlePerHost: Int
    /// MOSN's `ORIGINAL_DST` cluster type: no hosts; each connection goes where its client meant
    /// to go (the original destination an original_dst listener filter found).
    public let originalDestination: Bool
    /// Upstream TLS (the cluster's `tls_context`), built once at config load; nil: plain text.
    public var upstreamTransport: (any UpstreamTransportSource)? = nil
    /// `lb_subset_config` with at least one selector; nil: no subsets (every route uses all hosts).
    public var subsets: SubsetTable? = nil
    /// `lbconfig`.
    public var balancerSettings = BalancerSettings()
    /// `circuit_breakers`; nil when it sets no limit.
    public var circuitBreaker: CircuitBreaker? = nil
    /// Hosts out of rotation (`health_check`, `outlier_detection`), shared by every worker; nil: none is ever.
    public var health: HostHealth? = nil
    /// The active health check, run by the server's checker thread; nil: none.
    public var healthCheck: HealthCheckSettings? = nil
    /// The cluster's config text as read (a reload keeps a worker's runtime when it is unchanged).
    public var fingerprint = ""
    /// A cluster a reload removed: it keeps its position so indices stay valid; no route names it.
    public var removed = false
    /// A STRICT_DNS cluster: its hosts are what its names resolved to (none before the first answer).
    public var resolvesNames = false
    /// MOSN's `keepalive`: heartbeats on idle multiplexed (bolt) upstream connections; nil: the
    /// listener's `heartbeat_interval`.
    public var heartbeat: UpstreamHeartbeat? = nil
    /// TCP keep-alive on upstream connections (`tcp_keepalive`); nil: off.
    public var tcpKeepAlive: TCPKeepAlive? = .mosnDefault

    public init(name: String, lbType: String, hosts: [HostConfig], connectTimeoutMS: Int64, idleTimeoutMS: Int64,
                maxRequestsPerConnection: Int, connectionBufferLimit: Int, maxIdlePerHost: Int, originalDestination: Bool = false) {
        self.name = name; self.lbType = lbType; self.hosts = hosts
        self.connectTimeoutMS = connectTimeoutMS; self.idleTimeoutMS = idleTimeoutMS
        self.maxRequestsPerConnection = maxRequestsPerConnection; self.connectionBufferLimit = connectionBufferLimit
        self.maxIdlePerHost = maxIdlePerHost
        self.originalDestination = originalDestination
    }
}

/// MOSN's cluster `keepalive`: an idle multiplexed connection sends a heartbeat every
/// `intervalMS`; one not answered within `timeoutMS` is missed, and the pool's `heartbeatMaxMisses`
/// in a row close the connection.
public struct UpstreamHeartbeat: Sendable, Equatable {
    public let intervalMS: Int64
    public let timeoutMS: Int64
    public init(intervalMS: Int64, timeoutMS: Int64) { self.intervalMS = intervalMS; self.timeoutMS = timeoutMS }
}

/// TCP keep-alive probes on a socket: the kernel finds a peer that vanished (no FIN, no RST)
/// after `idleSeconds` of silence plus `probes` unanswered probes `intervalSeconds` apart.
/// 0: the kernel's own value.
public struct TCPKeepAlive: Sendable, Equatable {
    public let idleSeconds: Int32
    public let intervalSeconds: Int32
    public let probes: Int32
    public init(idleSeconds: Int32, intervalSeconds: Int32, probes: Int32) {
        self.idleSeconds = idleSeconds; self.intervalSeconds = intervalSeconds; self.probes = probes
    }
    /// Go's dialer (so MOSN's upstream connections): on, 15 s idle, 15 s between probes.
    public static let mosnDefault = TCPKeepAlive(idleSeconds: 15, intervalSeconds: 15, probes: 0)
}

/// Per-worker counters for one cluster, kept as plain integers so the admin API can read them later
/// through the worker's queue.
public struct ClusterStats: Sendable {
    public var requests = 0
    public var responses2xx = 0, responses4xx = 0, responses5xx = 0
    public var connectFailures = 0, timeouts = 0
    /// Requests and connections a `circuit_breakers` limit refused.
    public var overflows = 0
    /// Hosts this worker ejected (outlier detection).
    public var ejections = 0
    /// Requests tried again on another host, and retries the budget refused.
    public var retries = 0, retryOverflows = 0
    public var connectionsOpened = 0, connectionsReused = 0
    public var inFlight = 0
    /// HTTP answers by status code (index `code - 100`; empty until the first).
    public var responsesByCode: [Int] = []
    /// Answers by protocol status (bolt response status; HTTP uses the class counters above).
    public var byStatus: [Int: Int] = [:]
    /// Requests sent to each host (by index in the cluster's `hosts`), as the balancer chose them.
    public var hostRequests: [Int] = []
    public var responseTime = LatencyHistogram()
    /// The same per host (by index in the cluster's `hosts`).
    public var hostResponseTimes: [LatencyHistogram] = []

    public init(hostCount: Int = 0) {
        hostRequests = Array(repeating: 0, count: hostCount)
        hostResponseTimes = Array(repeating: LatencyHistogram(), count: hostCount)
    }

    /// A response read from `host`, `ms` after its request was queued: the cluster's and the host's histograms.
    @inline(__always)
    public mutating func recordResponseTime(ms: Int64, host: Int) {
        responseTime.record(ms: ms)
        if host >= 0 && host < hostResponseTimes.count { hostResponseTimes[host].record(ms: ms) }
    }

    @inline(__always)
    public mutating func record(status: Int) { byStatus[status, default: 0] += 1 }
}

/// A cluster as one worker sees it: the shared config, this worker's balancer state and pool.
public final class ClusterRuntime {
    public let config: ClusterConfig
    /// The balancer over every host.
    public let balancer: LoadBalancer
    /// One balancer per subset of `config.subsets` (each with its own state, of the cluster's
    /// `lb_type`), answering positions in `subsetHosts[i]`.
    private let subsetBalancers: [LoadBalancer]
    private let subsetHosts: [[Int]]
    /// DEFAULT_SUBSET's balancer over `config.subsets.defaultHosts`.
    private let defaultSubsetBalancer: LoadBalancer?
    public let pool: ConnectionPool
    /// This worker's maker of upstream transports (TLS and its session cache); nil: plain text.
    public let transports: UpstreamTransportFactory?
    public var stats: ClusterStats
    /// Requests in flight, open connections and response times per host on this worker.
    public let load: HostLoad
    /// The balancer picks by the request's hash: the forwarder computes one only then.
    public let usesHashKey: Bool
    /// The balancer reads response times: exchanges are timed only then.
    @usableFromInline let timesExchanges: Bool
    /// `config.circuitBreaker`, kept here for the per-request counts.
    @usableFromInline let breaker: CircuitBreaker?
    /// `config.health`, kept here: nil, or checked with one load per request.
    @usableFromInline let health: HostHealth?
    /// Outlier detection's failures in a row per host on this worker (empty without it).
    @usableFromInline var consecutiveFailures: [Int]
    let logger: Logger
    /// Where the fallback scan of a degraded pick starts (moves per pick).
    private var scanStart = 0
    /// The cluster's and its hosts' names as access logs print them (made on first use).
    public private(set) lazy var logTexts = ClusterLogTexts(config)

    public init(config: ClusterConfig, loop: EventLoop, buffers: BufferPool, logger: Logger) {
        self.config = config
        stats = ClusterStats(hostCount: config.hosts.count)
        load = HostLoad(hostCount: config.hosts.count, measuresLatency: LoadBalancerRegistry.timing.contains(config.lbType))
        let load = self.load
        func makeBalancer(over members: [Int]) -> LoadBalancer {
            LoadBalancerRegistry.make(BalancerHosts(config: config, members: members, load: load))
        }
        balancer = makeBalancer(over: Array(config.hosts.indices))
        subsetHosts = config.subsets?.subsets ?? []
        subsetBalancers = subsetHosts.map { makeBalancer(over: $0) }
        defaultSubsetBalancer = config.subsets?.fallback == .defaultSubset ? makeBalancer(over: config.subsets!.defaultHosts) : nil
        usesHashKey = LoadBalancerRegistry.hashing.contains(config.lbType)
        timesExchanges = load.measuresLatency
        breaker = config.circuitBreaker
        transports = config.upstreamTransport?.makeFactory(logger: logger)
        pool = ConnectionPool(config: config, loop: loop, buffers: buffers, transports: transports, load: load)
        health = config.health
        consecutiveFailures = config.health?.outlier != nil ? Array(repeating: 0, count: config.hosts.count) : []
        self.logger = logger
    }

    /// A host (cluster index) among the hosts `subset` allows; nil: none.
    @inline(__always)
    public func chooseHost(_ subset: HostSubset, _ context: LoadBalancerContext) -> Int? {
        if let health, health.anyUnhealthy { return chooseHealthy(subset, context, health) }
        return pick(subset, context)
    }

    @inline(__always)
    private func pick(_ subset: HostSubset, _ context: LoadBalancerContext) -> Int? {
        switch subset {
        case .all:
            return balancer.chooseHost(context)
        case .subset(let i):
            return subsetBalancers[i].chooseHost(context).map { subsetHosts[i][$0] }
        case .fallback:
            return chooseFallback(context)
        }
    }

    /// Some host is out of rotation: the balancer picks again (round robin moves on, random
    /// draws again, a hash is rehashed) a few times, then the members are scanned from a moving
    /// start (from the hash, for hash balancers, so a key keeps its host) for a healthy one.
    /// None healthy: nil, answered as no healthy host.
    private func chooseHealthy(_ subset: HostSubset, _ context: LoadBalancerContext, _ health: HostHealth) -> Int? {
        let now = pool.loop.nowMS
        var context = context
        for attempt in 0..<3 {
            guard let h = pick(subset, context) else { return nil }
            if health.isHealthy(h, nowMS: now) { return h }
            if let key = context.hashKey { context.hashKey = HashKey.mix(key &+ UInt64(attempt + 1) &* 0x9e37_79b9_7f4a_7c15) }
        }
        let members = self.members(subset)
        guard !members.isEmpty else { return nil }
        scanStart &+= 1
        let start = Int(truncatingIfNeeded: (context.hashKey ?? UInt64(scanStart)) % UInt64(members.count))
        for i in 0..<members.count {
            let h = members[(start + i) % members.count]
            if health.isHealthy(h, nowMS: now) { return h }
        }
        return nil
    }

    /// The hosts a subset allows (the fallback policy's for `.fallback`).
    private func members(_ subset: HostSubset) -> [Int] {
        switch subset {
        case .all: return Array(config.hosts.indices)
        case .subset(let i): return subsetHosts[i]
        case .fallback:
            guard let table = config.subsets else { return Array(config.hosts.indices) }
            switch table.fallback {
            case .noFallback: return []
            case .anyEndpoint: return Array(config.hosts.indices)
            case .defaultSubset: return table.defaultHosts
            }
        }
    }

    /// Retries of this cluster waiting for their next try on this worker (the budget's count).
    public var retriesPending = 0

    /// Whether one more retry may start: at most `max(3, 20 % of the requests in flight)` waiting
    /// on this worker, and the `circuit_breakers` `max_retries`, for the process, when set.
    public func takeRetrySlot() -> Bool {
        guard retriesPending < max(3, stats.inFlight / 5) else { stats.retryOverflows += 1; return false }
        if let breaker, !breaker.retryStarted() { stats.retryOverflows += 1; return false }
        retriesPending += 1
        return true
    }

    public func releaseRetrySlot() {
        retriesPending -= 1
        breaker?.retryEnded()
    }

    /// An exchange with `host` ended (outlier detection counts it): `failed` for a 5xx answer or
    /// a failure of the exchange itself (connect, reset, timeout). Enough failures in a row on
    /// this worker eject the host for every worker.
    @inlinable @inline(__always)
    public func noteOutcome(host: Int, failed: Bool) {
        guard !consecutiveFailures.isEmpty, host < consecutiveFailures.count else { return }
        if !failed { consecutiveFailures[host] = 0; return }
        consecutiveFailures[host] += 1
        if consecutiveFailures[host] >= health!.outlier!.consecutiveFailures { ejectHost(host) }
    }

    @usableFromInline
    func ejectHost(_ host: Int) {
        let count = consecutiveFailures[host]
        consecutiveFailures[host] = 0
        guard let health, let ms = health.eject(host, nowMS: pool.loop.nowMS) else { return }
        stats.ejections += 1
        logger.warn("outlier", "cluster \(config.name): host \(config.hosts[host].address) ejected for \(ms) ms after \(count) failures in a row (\(health.ejectedHosts) of \(config.hosts.count) hosts out)")
    }

    private func chooseFallback(_ context: LoadBalancerContext) -> Int? {
        guard let table = config.subsets else { return balancer.chooseHost(context) }
        switch table.fallback {
        case .noFallback: return nil
        case .anyEndpoint: return balancer.chooseHost(context)
        case .defaultSubset: return defaultSubsetBalancer?.chooseHost(context).map { table.defaultHosts[$0] }
        }
    }

    /// An exchange with `host` starts (an HTTP request sent to it, a bolt call registered). The
    /// answer is a stamp for `requestEnded`: the start in microseconds when the balancer measures
    /// latency (LB_PEAK_EWMA), else 0 (no clock read). Inlinable: the sessions call it per request
    /// from their own modules.
    @inlinable @inline(__always)
    public func requestStarted(host: Int) -> Int64 {
        stats.inFlight += 1
        load.activeRequests[host] += 1
        breaker?.requestStarted()
        return timesExchanges ? monotonicMicroseconds() : 0
    }

    /// That exchange ended, answered or not; `startedUS`: `requestStarted`'s answer.
    @inlinable @inline(__always)
    public func requestEnded(host: Int, startedUS: Int64) {
        stats.inFlight -= 1
        load.activeRequests[host] -= 1
        breaker?.requestEnded()
        if startedUS != 0 { load.recordLatency(host: host, startedUS: startedUS) }
    }
}

/// The seam for upstream TLS: TernCore knows a cluster may put a `Transport` on its connections,
/// not how (TernTLS implements both protocols; TernServer hangs them on the `ClusterConfig`).
/// Shared by every worker, immutable: it gives each worker its own factory.
public protocol UpstreamTransportSource: Sendable {
    func makeFactory(logger: Logger) -> UpstreamTransportFactory
}

/// One worker's maker of upstream transports; it may keep per-host state (TLS sessions to resume).
public protocol UpstreamTransportFactory: AnyObject {
    /// The transport for a new connection (socket `fd`) to host `hostIndex`, set before its first
    /// byte; nil: this host is plain text (`tls_disable`). Throws when it cannot be made at all.
    func makeTransport(hostIndex: Int, fd: Int32) throws(TransportSetupError) -> Transport?
}

public struct TransportSetupError: Error, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// Why no upstream connection was started.
public enum UpstreamConnectRefusal: Error, Sendable {
    /// The socket could not be made or its transport set up (counted as a connect failure).
    case failed
    /// A `circuit_breakers` limit is reached.
    case overflow(CircuitBreaker.Limit)
}

extension Connection {
    /// Starts a connection to host `host` of a cluster with the cluster's connect timeout and, when
    /// it has one, its transport (TLS) on it before the first byte. `load`: the cluster's per-host
    /// counts on this worker, where the connection counts itself as open until it closes.
    /// `forWaitingRequest`: a request waits for this connection (it counts as pending, for
    /// `max_pending_requests`, until it is connected or closed).
    public static func connect(toHost host: Int, of config: ClusterConfig, transports: UpstreamTransportFactory?, load: HostLoad,
                               loop: EventLoop, buffers: BufferPool, forWaitingRequest: Bool = true) throws(UpstreamConnectRefusal) -> Connection {
        let breaker = config.circuitBreaker
        if let breaker, let limit = breaker.acquireConnection(host: host, pendingRequest: forWaitingRequest) { throw .overflow(limit) }
        guard let c = connect(to: config.hosts[host].address, loop: loop, buffers: buffers, timeoutMS: config.connectTimeoutMS) else {
            if let breaker { breaker.releaseConnection(host: host); if forWaitingRequest { breaker.releasePending() } }
            throw .failed
        }
        if let k = config.tcpKeepAlive, !config.hosts[host].address.isUnix {
            _ = tern_set_keepalive(c.fd, k.idleSeconds, k.intervalSeconds, k.probes)
        }
        load.openConnections[host] += 1
        c.openCount = OpenConnectionSlot(load: load, host: host, breaker: breaker, holdsPending: forWaitingRequest && breaker != nil)
        guard let transports else { return c }
        do {
            c.transport = try transports.makeTransport(hostIndex: host, fd: c.fd)
        } catch {
            c.close(reason: .connectFailed(0))
            throw .failed
        }
        return c
    }
}

/// Upstream response times of one cluster on one worker, as fixed buckets (no allocation, a few
/// compares per response). Measured on the loop's clock (refreshed once per wake-up, millisecond
/// resolution) from the request queued for upstream to its response (HTTP/1: the head; bolt: the
/// whole frame) read.
public struct LatencyHistogram: Sendable {
    /// Upper bounds of the buckets in milliseconds; a last bucket takes the rest.
    public static let boundsMS: [Int] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
    var b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0, b7 = 0, b8 = 0, b9 = 0, b10 = 0, b11 = 0, b12 = 0, b13 = 0
    public private(set) var count = 0
    public private(set) var sumMS = 0

    public init() {}

    @inline(__always) public mutating func record(ms elapsed: Int64) {
        let ms = Int(elapsed)
        count &+= 1
        sumMS &+= ms
        if ms <= 10 {
            if ms <= 1 { b0 &+= 1 } else if ms <= 2 { b1 &+= 1 } else if ms <= 5 { b2 &+= 1 } else { b3 &+= 1 }
        } else if ms <= 250 {
            if ms <= 25 { b4 &+= 1 } else if ms <= 50 { b5 &+= 1 } else if ms <= 100 { b6 &+= 1 } else { b7 &+= 1 }
        } else if ms <= 2500 {
            if ms <= 500 { b8 &+= 1 } else if ms <= 1000 { b9 &+= 1 } else { b10 &+= 1 }
        } else {
            if ms <= 5000 { b11 &+= 1 } else if ms <= 10000 { b12 &+= 1 } else { b13 &+= 1 }
        }
    }

    /// Responses per bucket (not cumulative), `boundsMS.count + 1` of them.
    public var bucketCounts: [Int] { [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13] }

    public mutating func add(_ o: LatencyHistogram) {
        b0 += o.b0; b1 += o.b1; b2 += o.b2; b3 += o.b3; b4 += o.b4; b5 += o.b5; b6 += o.b6
        b7 += o.b7; b8 += o.b8; b9 += o.b9; b10 += o.b10; b11 += o.b11; b12 += o.b12; b13 += o.b13
        count += o.count
        sumMS += o.sumMS
    }
}
