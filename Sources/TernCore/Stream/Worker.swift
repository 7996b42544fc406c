/// A downstream protocol session (one per accepted connection once its protocol is known).
public protocol DownstreamSession: AnyObject {
    /// SIGTERM: finish what is in flight, take no new requests, close when idle.
    func beginDrain()
}

/// Everything one worker thread owns: its loop, buffer pool, cluster runtimes and live sessions.
/// Confined to that worker's thread; other threads reach it only through `loop.remote`.
public final class Worker {
    public let id: Int
    public let loop: EventLoop
    public let buffers: BufferPool
    /// By index in the plan's clusters; a reload keeps each index's meaning (see `reload`).
    public private(set) var clusters: [ClusterRuntime]
    /// Every proxy filter's forwarder on this worker, in the order the plan built them (listener
    /// by listener, filter by filter), for a reload to give each its new settings.
    public var forwarders: [Forwarder] = []
    /// Called after a reload replaced the runtimes at these cluster indices (a protocol's own
    /// pools drop connections they keep per cluster index).
    public var onClustersReplaced: [([Int]) -> Void] = []
    public let logger: Logger
    public var random = FastRandom()
    public private(set) var draining = false
    /// When the drain began (loop clock): idle keep-alive connections get `drainIdleGraceMS`
    /// from then to send one more request (answered with `Connection: close`) before they close.
    public private(set) var drainStartedMS: Int64 = 0
    /// Closing an idle keep-alive connection at once races a client that is sending its next
    /// request on it (it sees a reset, not an answer): a client under load sends within
    /// milliseconds and is told to close in its response; a quiet one is closed after this.
    public static let drainIdleGraceMS: Int64 = 1000
    private var sessions: [DownstreamSession?] = []
    public private(set) var sessionCount = 0
    public var listeners: [Listener] = []
    /// Counters per listener of the plan (by index), bound or not: hand-offs count where they land.
    public var listenerCounters: [ListenerCounters] = []
    /// Set while draining for a successor (hot upgrade): moves a downstream connection with
    /// nothing in flight to the new process (true: it is gone from here, handed over or not);
    /// false: it cannot move (the caller closes it as usual). Called only on a drain.
    public var handOff: ((Connection, _ listenerName: String) -> Bool)?
    /// Plain-text listeners' filter chains by name, where a connection handed over from the
    /// previous process enters.
    public var handOffEntries: [String: AcceptHandler] = [:]
    /// This worker's access-log buffers; nil when no listener has access logs.
    public var accessLogOutput: AccessLogOutput?
    /// Per-worker state a protocol module shares between its sessions (parse scratch etc.).
    public var protocolScratch: [String: AnyObject] = [:]

    public init(id: Int, clusters: [ClusterConfig], logger: Logger, bufferSize: Int = 16384) {
        self.id = id
        let loop = EventLoop()
        let buffers = BufferPool(bufferSize: bufferSize)
        self.loop = loop
        self.buffers = buffers
        self.clusters = clusters.map { ClusterRuntime(config: $0, loop: loop, buffers: buffers, logger: logger) }
        self.logger = logger
    }

    public func add(_ session: DownstreamSession, fd: Int32) {
        let i = Int(fd)
        if i >= sessions.count { sessions.append(contentsOf: repeatElement(nil, count: i + 64 - sessions.count)) }
        if sessions[i] == nil { sessionCount += 1 }
        sessions[i] = session
        if draining { session.beginDrain() }
    }

    public func remove(fd: Int32) {
        let i = Int(fd)
        if i < sessions.count, sessions[i] != nil {
            sessions[i] = nil
            sessionCount -= 1
        }
    }

    /// Stops the listeners and asks every session to finish.
    public func beginDrain() {
        guard !draining else { return }
        draining = true
        drainStartedMS = loop.nowMS
        for l in listeners { l.stop() }
        for s in sessions { s?.beginDrain() }
    }

    public func closeIdleUpstreams() { for c in clusters { c.pool.closeAll() } }

    /// Reload, on this worker's thread: clusters whose config text is unchanged keep their runtime
    /// (pools, counters, balancer state); changed and new ones get a fresh one at their index;
    /// every forwarder takes its listener's new settings (routes, limits, stream filters). Requests
    /// in flight finish with what they started with (they hold their cluster runtime).
    /// `settings` nil: the routes and filters stay (a DNS answer that changed no subset).
    public func reload(clusters configs: [ClusterConfig], settings: [ProxySettings]?) {
        var next: [ClusterRuntime] = []
        var replaced: [Int] = []
        for (i, config) in configs.enumerated() {
            // Unchanged, or gone from the config (unroutable now, kept for requests in flight).
            if i < clusters.count && (config.removed || clusters[i].config.fingerprint == config.fingerprint) {
                next.append(clusters[i])
                continue
            }
            next.append(ClusterRuntime(config: config, loop: loop, buffers: buffers, logger: logger))
            if i < clusters.count { replaced.append(i); clusters[i].pool.closeAll() }
        }
        clusters = next
        if let settings { for (f, s) in zip(forwarders, settings) { f.replace(settings: s) } }
        if !replaced.isEmpty { for hook in onClustersReplaced { hook(replaced) } }
    }

    /// One INFO line per cluster with this worker's counters (written when the worker drains,
    /// until the admin API exports them live).
    public func logStats() {
        for c in clusters where c.stats.requests > 0 || c.stats.connectionsOpened > 0 {
            let s = c.stats
            let statuses = s.byStatus.keys.sorted().map { "\($0):\(s.byStatus[$0]!)" }.joined(separator: ",")
            logger.info("stats", "worker \(id) cluster \(c.config.name): requests=\(s.requests) in_flight=\(s.inFlight) "
                + "2xx=\(s.responses2xx) 4xx=\(s.responses4xx) 5xx=\(s.responses5xx) by_status={\(statuses)} "
                + "timeouts=\(s.timeouts) connect_failures=\(s.connectFailures) connections_opened=\(s.connectionsOpened) reused=\(s.connectionsReused)")
        }
    }
}

/// Limits a codec applies to one downstream connection, with config-settable defaults.
public struct ProtocolLimits: Sendable {
    public var maxHeadBytes = 64 * 1024
    public var maxHeaderCount = 100
    public var maxBodyBytes: Int64 = -1   // unlimited
    public init() {}
}

/// Read-only settings of one `proxy` network filter, shared by all workers.
public struct ProxySettings: Sendable {
    public let listenerName: String
    public let routes: RouteTable
    public let limits: ProtocolLimits
    public let idleTimeoutMS: Int64
    public let defaultRouteTimeoutMS: Int64
    /// How long a started request head may take to arrive whole (slow-header clients).
    public let headerTimeoutMS: Int64
    /// MOSN's `fallback_for_unknown_protocol`: a connection whose first bytes match no protocol
    /// goes to the next network filter with those bytes, instead of being closed.
    public let fallbackToNextFilter: Bool
    /// The listener's `stream_filters`; nil when it has none (requests then skip the chain).
    public let streamFilters: StreamFilterPlan?
    /// The listener's `access_logs`; nil when it has none.
    public var accessLogs: AccessLogPlan?
    public init(listenerName: String, routes: RouteTable, limits: ProtocolLimits, idleTimeoutMS: Int64, defaultRouteTimeoutMS: Int64,
                headerTimeoutMS: Int64 = 60_000, fallbackToNextFilter: Bool = false, streamFilters: StreamFilterPlan? = nil) {
        self.listenerName = listenerName; self.routes = routes; self.limits = limits
        self.idleTimeoutMS = idleTimeoutMS; self.defaultRouteTimeoutMS = defaultRouteTimeoutMS
        self.headerTimeoutMS = headerTimeoutMS
        self.fallbackToNextFilter = fallbackToNextFilter
        self.streamFilters = streamFilters.flatMap { $0.isEmpty ? nil : $0 }
    }
}
