/// Active health checks (MOSN's cluster `health_check`): one checker for the process, on an event
/// loop of its own thread (never a worker's), probes every host of every checked cluster each
/// `interval` (plus up to `interval_jitter`) and writes the verdicts into the clusters'
/// `HostHealth`, which every worker's balancer reads. A host is healthy at start (as in MOSN),
/// leaves the rotation after `unhealthy_threshold` failed probes in a row and comes back after
/// `healthy_threshold` passed ones.
///
/// A probe is a connect (with the cluster's transport: TLS clusters are probed over TLS) and,
/// for protocols that have one, a request and its answer judged by a `HealthProbe`: TCP (the
/// connect alone, MOSN's default), HTTP/1 GET (TernHTTP1) and the bolt heartbeat (TernBolt).
public struct HealthCheckSettings: Sendable {
    public let probe: any HealthProbe
    public let timeoutMS: Int64
    public let intervalMS: Int64
    public let jitterMS: Int64
    public let initialDelayMS: Int64
    public let healthyThreshold: Int
    public let unhealthyThreshold: Int
    /// Where each host is probed when that is not its own address (MOSN's http_check_config
    /// `port`); probes there are plain connects, outside the cluster's transport and limits.
    public let addresses: [SocketAddress]?
    public init(probe: any HealthProbe, timeoutMS: Int64, intervalMS: Int64, jitterMS: Int64, initialDelayMS: Int64,
                healthyThreshold: Int, unhealthyThreshold: Int, addresses: [SocketAddress]? = nil) {
        self.addresses = addresses
        self.probe = probe
        self.timeoutMS = timeoutMS
        self.intervalMS = intervalMS
        self.jitterMS = jitterMS
        self.initialDelayMS = initialDelayMS
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
    }
}

/// What one probe says of the bytes a host answered so far.
public enum ProbeVerdict: Sendable, Equatable { case healthy, unhealthy(String), needMore }

/// A protocol's health probe: the bytes sent once connected, and the judgement of the answer.
public protocol HealthProbe: Sendable {
    var name: String { get }
    /// The request for `host`; nil: the connect alone decides (TCP).
    func request(for host: HostConfig) -> [UInt8]?
    func judge(_ p: UnsafePointer<UInt8>, _ count: Int) -> ProbeVerdict
}

/// MOSN's default check: a host that accepts a connection is healthy.
public struct TCPConnectProbe: HealthProbe {
    public init() {}
    public var name: String { "tcp" }
    public func request(for host: HostConfig) -> [UInt8]? { nil }
    public func judge(_ p: UnsafePointer<UInt8>, _ count: Int) -> ProbeVerdict { .healthy }
}

/// The process's checker: owns its loop's probes; `replace` (a reload) swaps the clusters checked.
public final class HealthChecker {
    let loop: EventLoop
    let buffers = BufferPool(bufferSize: 4096, maxFree: 16)
    let logger: Logger
    private var probes: [HostProbe] = []
    var random = FastRandom()

    public init(loop: EventLoop, logger: Logger) {
        self.loop = loop
        self.logger = logger
    }

    /// Checks the hosts of these clusters (those with `healthCheck` and `health`), and no others.
    public func replace(clusters: [ClusterConfig]) {
        for p in probes { p.stop() }
        probes = []
        for cluster in clusters where !cluster.removed {
            guard let settings = cluster.healthCheck, let health = cluster.health else { continue }
            let transports = cluster.upstreamTransport?.makeFactory(logger: logger)
            let load = HostLoad(hostCount: cluster.hosts.count)
            for host in cluster.hosts.indices {
                let p = HostProbe(checker: self, cluster: cluster, host: host, settings: settings, health: health, transports: transports, load: load)
                probes.append(p)
                p.schedule(after: settings.initialDelayMS + (settings.jitterMS > 0 ? Int64(random.below(Int(settings.jitterMS) + 1)) : 0))
            }
        }
    }

    public var probeCount: Int { probes.count }
}

/// One host's checks: a timer for the next probe, at most one probe in flight.
final class HostProbe: ConnectionDelegate, TimerTarget {
    unowned let checker: HealthChecker
    let cluster: ClusterConfig
    let host: Int
    let settings: HealthCheckSettings
    let health: HostHealth
    let transports: UpstreamTransportFactory?
    let load: HostLoad
    private var timer: LoopTimer?
    private var connection: Connection?
    private var passed = 0, failed = 0
    private var stopped = false
    private var probeDeadline: Int64 = 0

    init(checker: HealthChecker, cluster: ClusterConfig, host: Int, settings: HealthCheckSettings, health: HostHealth,
         transports: UpstreamTransportFactory?, load: HostLoad) {
        self.checker = checker
        self.cluster = cluster
        self.host = host
        self.settings = settings
        self.health = health
        self.transports = transports
        self.load = load
    }

    deinit { if let t = timer { checker.loop.timers.cancel(t) } }

    var address: String { cluster.hosts[host].address.description }

    func schedule(after ms: Int64) {
        if timer == nil { timer = LoopTimer(target: self) }
        checker.loop.timers.arm(timer!, at: checker.loop.nowMS + max(ms, 0))
    }

    func stop() {
        stopped = true
        if let t = timer { checker.loop.timers.cancel(t) }
        finishProbe()
    }

    func timerFired(_ timer: LoopTimer) {
        guard !stopped else { return }
        if connection != nil {
            // The probe's own deadline.
            if checker.loop.nowMS >= probeDeadline { verdict(.unhealthy("no answer within \(settings.timeoutMS) ms")) }
            else { checker.loop.timers.arm(timer, at: probeDeadline) }
            return
        }
        startProbe()
    }

    private func startProbe() {
        let c: Connection
        if let addresses = settings.addresses {
            guard let plain = Connection.connect(to: addresses[host], loop: checker.loop, buffers: checker.buffers, timeoutMS: cluster.connectTimeoutMS) else {
                record(.unhealthy("connect failed"))
                return
            }
            c = plain
        } else {
            do {
                c = try Connection.connect(toHost: host, of: cluster, transports: transports, load: load, loop: checker.loop,
                                           buffers: checker.buffers, forWaitingRequest: false)
            } catch {
                switch error {
                case .failed: record(.unhealthy("connect failed"))
                case .overflow: scheduleNext()   // the cluster's connection limit is full: no verdict this round
                }
                return
            }
        }
        c.delegate = self
        connection = c
        probeDeadline = checker.loop.nowMS + settings.timeoutMS
        checker.loop.timers.arm(timer!, at: probeDeadline)
    }

    private func finishProbe() {
        guard let c = connection else { return }
        connection = nil
        c.delegate = nil
        c.close()
    }

    private func verdict(_ v: ProbeVerdict) {
        finishProbe()
        record(v)
    }

    private func record(_ v: ProbeVerdict) {
        let logger = checker.logger
        if case .unhealthy(let why) = v {
            passed = 0
            failed += 1
            if !health.checkFailed(host) && failed >= settings.unhealthyThreshold {
                health.setCheckFailed(host, true)
                logger.warn("healthcheck", "cluster \(cluster.name): host \(address) unhealthy after \(failed) failed \(settings.probe.name) check(s) (\(why)); out of rotation")
            } else {
                logger.debug("healthcheck", "cluster \(cluster.name): host \(address) failed a \(settings.probe.name) check: \(why)")
            }
        } else {
            failed = 0
            passed += 1
            if health.checkFailed(host) && passed >= settings.healthyThreshold {
                health.setCheckFailed(host, false)
                logger.info("healthcheck", "cluster \(cluster.name): host \(address) healthy again after \(passed) passed check(s); back in rotation")
            }
        }
        scheduleNext()
    }

    private func scheduleNext() {
        guard !stopped else { return }
        let jitter = settings.jitterMS > 0 ? Int64(checker.random.below(Int(settings.jitterMS) + 1)) : 0
        schedule(after: settings.intervalMS + jitter)
    }

    func connectionConnected(_ connection: Connection) {
        guard connection === self.connection else { return }
        guard let request = settings.probe.request(for: cluster.hosts[host]) else { verdict(.healthy); return }
        connection.outputBuffer.write(request)
        connection.flush()
    }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        guard connection === self.connection else { return }
        guard let input = connection.input, input.readableBytes > 0 else {
            if eof { verdict(.unhealthy("closed without an answer")) }
            return
        }
        let v = settings.probe.judge(input.readPointer, input.readableBytes)
        if v == .needMore {
            if eof { verdict(.unhealthy("closed mid-answer")) }
            else if input.readableBytes > 64 * 1024 { verdict(.unhealthy("answer too long")) }
            return
        }
        verdict(v)
    }

    func connectionWriteDrained(_ connection: Connection) {}

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        guard connection === self.connection else { return }
        self.connection = nil
        let why: String
        switch reason {
        case .connectFailed: why = "connection refused"
        case .connectTimeout: why = "connect timed out"
        case .handshakeFailed(let h): why = "TLS handshake failed: \(h)"
        default: why = "connection closed"
        }
        record(.unhealthy(why))
    }
}
