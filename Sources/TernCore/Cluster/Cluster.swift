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

    public init(name: String, lbType: String, hosts: [HostConfig], connectTimeoutMS: Int64, idleTimeoutMS: Int64,
                maxRequestsPerConnection: Int, connectionBufferLimit: Int, maxIdlePerHost: Int, originalDestination: Bool = false) {
        self.name = name; self.lbType = lbType; self.hosts = hosts
        self.connectTimeoutMS = connectTimeoutMS; self.idleTimeoutMS = idleTimeoutMS
        self.maxRequestsPerConnection = maxRequestsPerConnection; self.connectionBufferLimit = connectionBufferLimit
        self.maxIdlePerHost = maxIdlePerHost
        self.originalDestination = originalDestination
    }
}

/// Per-worker counters for one cluster, kept as plain integers so the admin API can read them later
/// through the worker's queue.
public struct ClusterStats: Sendable {
    public var requests = 0
    public var responses2xx = 0, responses4xx = 0, responses5xx = 0
    public var connectFailures = 0, timeouts = 0
    public var connectionsOpened = 0, connectionsReused = 0
    public var inFlight = 0
    /// Answers by protocol status (bolt response status; HTTP uses the class counters above).
    public var byStatus: [Int: Int] = [:]
    /// Requests sent to each host (by index in the cluster's `hosts`), as the balancer chose them.
    public var hostRequests: [Int] = []

    public init(hostCount: Int = 0) { hostRequests = Array(repeating: 0, count: hostCount) }

    public mutating func record(status: Int) { byStatus[status, default: 0] += 1 }
}

/// A cluster as one worker sees it: the shared config, this worker's balancer state and pool.
public final class ClusterRuntime {
    public let config: ClusterConfig
    public let balancer: LoadBalancer
    public let pool: ConnectionPool
    /// This worker's maker of upstream transports (TLS and its session cache); nil: plain text.
    public let transports: UpstreamTransportFactory?
    public var stats: ClusterStats

    public init(config: ClusterConfig, loop: EventLoop, buffers: BufferPool, logger: Logger) {
        self.config = config
        stats = ClusterStats(hostCount: config.hosts.count)
        balancer = LoadBalancerRegistry.make(config)
        transports = config.upstreamTransport?.makeFactory(logger: logger)
        pool = ConnectionPool(config: config, loop: loop, buffers: buffers, transports: transports)
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

extension Connection {
    /// Starts a connection to host `host` of a cluster with the cluster's connect timeout and, when
    /// it has one, its transport (TLS) on it before the first byte; nil when neither could start.
    public static func connect(toHost host: Int, of config: ClusterConfig, transports: UpstreamTransportFactory?,
                               loop: EventLoop, buffers: BufferPool) -> Connection? {
        guard let c = connect(to: config.hosts[host].address, loop: loop, buffers: buffers, timeoutMS: config.connectTimeoutMS) else { return nil }
        guard let transports else { return c }
        do {
            c.transport = try transports.makeTransport(hostIndex: host, fd: c.fd)
        } catch {
            c.close(reason: .connectFailed(0))
            return nil
        }
        return c
    }
}
