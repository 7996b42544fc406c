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

    public mutating func record(status: Int) { byStatus[status, default: 0] += 1 }
}

/// A cluster as one worker sees it: the shared config, this worker's balancer state and pool.
public final class ClusterRuntime {
    public let config: ClusterConfig
    public let balancer: LoadBalancer
    public let pool: ConnectionPool
    public var stats = ClusterStats()

    public init(config: ClusterConfig, loop: EventLoop, buffers: BufferPool) {
        self.config = config
        balancer = LoadBalancerRegistry.make(config)
        pool = ConnectionPool(config: config, loop: loop, buffers: buffers)
    }
}
