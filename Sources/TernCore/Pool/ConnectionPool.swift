/// Keep-alive upstream connections of one cluster on one worker (ping-pong: one request at a time
/// per connection). Idle connections are watched: any byte or close from the peer while idle
/// removes them, so a connection closed by the upstream is never handed out.
public final class ConnectionPool: ConnectionDelegate, TimerTarget {
    public let config: ClusterConfig
    unowned let loop: EventLoop
    unowned let buffers: BufferPool
    let transports: UpstreamTransportFactory?
    /// The cluster's per-host counts on this worker (open connections are counted in them).
    let load: HostLoad
    private var idle: [[IdleEntry]]
    private var sweepTimer: LoopTimer!
    public private(set) var idleCount = 0

    struct IdleEntry {
        let connection: Connection
        let since: Int64
        let requestsServed: Int
    }

    public init(config: ClusterConfig, loop: EventLoop, buffers: BufferPool, transports: UpstreamTransportFactory? = nil, load: HostLoad? = nil) {
        self.config = config
        self.load = load ?? HostLoad(hostCount: config.hosts.count)
        self.loop = loop
        self.buffers = buffers
        self.transports = transports
        idle = Array(repeating: [], count: config.hosts.count)
        sweepTimer = LoopTimer(target: self)
    }

    /// An idle connection to `host`, most recently used first (its socket is warmest), with the
    /// number of requests it already carried. None when the host is at its `max_connections`
    /// (busy connections elsewhere hold every slot): the idle ones are closed, and the caller's
    /// `connect` answers the overflow.
    public func takeIdle(host: Int) -> (Connection, Int)? {
        while let entry = idle[host].popLast() {
            idleCount -= 1
            let c = entry.connection
            if c.state == .open && !c.peerHalfClosed && c.openCount?.unparked() ?? true { return (c, entry.requestsServed) }
            c.close()
        }
        return nil
    }

    /// Starts a new connection to `host`; the caller becomes its delegate.
    public func connect(host: Int) throws(UpstreamConnectRefusal) -> Connection {
        let c = try Connection.connect(toHost: host, of: config, transports: transports, load: load, loop: loop, buffers: buffers)
        c.tag = host
        // conn_buffer_limit_bytes (MOSN: per-connection buffer limit) is the point where writes
        // toward this upstream push back on the client; Tern never goes below 64 KiB of headroom.
        c.highWatermark = max(config.connectionBufferLimit, 64 * 1024)
        c.lowWatermark = c.highWatermark / 4
        return c
    }

    /// Returns a connection after a complete exchange; closes it if the pool for that host is full.
    public func release(_ c: Connection, requestsServed: Int) {
        let host = c.tag
        guard c.state == .open, !c.peerHalfClosed, c.pendingOutput == 0, c.input?.isEmpty ?? true,
              requestsServed < config.maxRequestsPerConnection, idle[host].count < config.maxIdlePerHost else {
            c.close()
            return
        }
        c.delegate = self
        c.openCount?.parked()
        idle[host].append(IdleEntry(connection: c, since: loop.nowMS, requestsServed: requestsServed))
        idleCount += 1
        if !sweepTimer.isArmed && config.idleTimeoutMS > 0 {
            loop.timers.arm(sweepTimer, at: loop.nowMS + config.idleTimeoutMS)
        }
    }

    public func closeAll() {
        for h in idle.indices {
            for e in idle[h] { e.connection.delegate = nil; e.connection.close() }
            idle[h].removeAll()
        }
        idleCount = 0
    }

    // An idle connection must stay silent: data or EOF means it is unusable.
    public func connectionReadable(_ connection: Connection, eof: Bool) {
        connection.close()
    }
    public func connectionConnected(_ connection: Connection) {}
    public func connectionWriteDrained(_ connection: Connection) {}
    public func connectionClosed(_ connection: Connection, reason: CloseReason) {
        let host = connection.tag
        if let i = idle[host].firstIndex(where: { $0.connection === connection }) {
            idle[host].remove(at: i)
            idleCount -= 1
        }
    }

    public func timerFired(_ timer: LoopTimer) {
        let cutoff = loop.nowMS - config.idleTimeoutMS
        for h in idle.indices {
            while let first = idle[h].first, first.since <= cutoff {
                idle[h].removeFirst()
                idleCount -= 1
                first.connection.delegate = nil
                first.connection.close()
            }
        }
        if idleCount > 0 { loop.timers.arm(sweepTimer, at: loop.nowMS + max(config.idleTimeoutMS / 4, 100)) }
    }
}
