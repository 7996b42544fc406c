/// What a multiplexed pool needs from a protocol whose upstream connections carry many calls at
/// once, told apart by an id (bolt today; Dubbo or HTTP/2 later). Everything is static and the
/// pool is generic over it, so each protocol gets a specialised pool with no dynamic dispatch.
public protocol MultiplexProtocol {
    /// One decoded upstream frame (offsets into the bytes it was decoded from).
    associatedtype Frame
    /// The downstream session that made a call and receives its answer.
    associatedtype Caller: AnyObject
    /// What is kept per call to answer it if it fails (bolt: protocol version and codec).
    associatedtype CallContext

    static func decode(_ p: UnsafePointer<UInt8>, _ count: Int, maxFrame: Int) -> MultiplexDecode<Frame>
    /// The bytes the frame takes in the input.
    static func length(of frame: Frame) -> Int
    /// A response to a call (its id) or to a heartbeat; anything else is skipped.
    static func role(of frame: Frame) -> MultiplexFrameRole
    /// A heartbeat request with `id`, shaped like the calls this connection carries.
    static func writeHeartbeat(_ out: ByteBuffer, id: UInt32, like context: CallContext?)
    /// The answer to a call arrived: hand it to its caller (who restores `call.originalID`).
    static func deliver(_ p: UnsafePointer<UInt8>, _ frame: Frame, of call: PendingCall<Self>, to caller: Caller)
    /// The protocol status a failed call is answered (and counted) with.
    static func status(for error: StreamError) -> Int
    /// Whether an answer with this status speaks against its host (outlier detection).
    static func blamesHost(status: Int) -> Bool
    /// The call failed (connection lost, timeout): the caller answers with the protocol's error.
    static func fail(_ call: PendingCall<Self>, _ error: StreamError, to caller: Caller)
    /// A slow upstream drained: a caller that stopped reading because of it may read again.
    static func resume(_ caller: Caller)
    /// The id of a request frame (one found in the unsent bytes of a connection whose connect failed).
    static func requestID(of frame: Frame) -> UInt32?
    /// The connect of the call's connection failed, so its frame (`p`, under the id this
    /// connection gave it) never left Tern: the caller may send it to another host. True when it did.
    /// `state`: what the caller left in `retryStates` for the call.
    static func retry(_ call: PendingCall<Self>, _ p: UnsafePointer<UInt8>, _ frame: Frame, state: AnyObject, after error: StreamError, to caller: Caller) -> Bool
}

/// A protocol that does not send calls again after a failed connect (each fails with its error).
extension MultiplexProtocol {
    public static func requestID(of frame: Frame) -> UInt32? { nil }
    public static func retry(_ call: PendingCall<Self>, _ p: UnsafePointer<UInt8>, _ frame: Frame, state: AnyObject, after error: StreamError, to caller: Caller) -> Bool { false }
}

public enum MultiplexDecode<Frame> {
    case needMore
    case frame(Frame)
    case error(String)
}

public enum MultiplexFrameRole {
    case response(id: UInt32, status: Int)
    case heartbeatAnswer
    case other
}

/// Settings of a multiplexed pool (per worker; the first listener that creates it sets them).
public struct MultiplexSettings: Sendable {
    public var maxFrameBytes = 16 * 1024 * 1024
    public var connectionsPerHost = 1
    /// Calls one upstream connection carries at once; past it on every connection of a host the
    /// call is refused at once (`overloaded`) instead of queueing without bound.
    public var maxConcurrentPerConnection = 16 * 1024
    public var heartbeatIntervalMS: Int64 = 15_000
    public var heartbeatMaxMisses = 3
    public init() {}
}

/// A call waiting for its answer on one upstream connection.
public struct PendingCall<P: MultiplexProtocol> {
    public weak var caller: P.Caller?
    public let originalID: UInt32
    public let deadline: Int64
    /// When the call was queued for upstream (loop clock), for the cluster's response times.
    public let startMS: Int64
    public let context: P.CallContext
    public unowned let cluster: ClusterRuntime
    /// `ClusterRuntime.requestStarted`'s stamp (LB_PEAK_EWMA's latency; 0 when not measured).
    public let startedUS: Int64

    @inlinable
    public init(caller: P.Caller?, originalID: UInt32, deadline: Int64, startMS: Int64, context: P.CallContext, cluster: ClusterRuntime, startedUS: Int64 = 0) {
        self.caller = caller; self.originalID = originalID; self.deadline = deadline; self.startMS = startMS; self.context = context; self.cluster = cluster
        self.startedUS = startedUS
    }
}

/// One multiplexed upstream connection: every call gets a fresh id on it and is mapped back to
/// its caller when the answer comes. Deadlines are swept (50 ms) only while calls are pending;
/// an idle connection is probed with heartbeats and closed after too many go unanswered.
public final class MultiplexConnection<P: MultiplexProtocol>: ConnectionDelegate, TimerTarget {
    public let connection: Connection
    @usableFromInline unowned let pool: MultiplexPool<P>
    @usableFromInline unowned let worker: Worker
    @usableFromInline let settings: MultiplexSettings
    public let clusterIndex: Int
    public let hostIndex: Int
    @usableFromInline var nextID: UInt32 = 1
    @usableFromInline var pending: [UInt32: PendingCall<P>] = [:]
    /// Set while the connection waits in a caller's end-of-batch flush list.
    public var queued = false
    /// Callers that stopped reading because this connection's output was above its watermark.
    public var waiting: [P.Caller] = []
    @usableFromInline var sweepTimer: LoopTimer?
    @usableFromInline var lastHeard: Int64
    @usableFromInline var missedHeartbeats = 0
    @usableFromInline var heartbeatOutstanding = false
    @usableFromInline var heartbeatSentAt: Int64 = 0
    /// The cluster's `keepalive` when it has one, else the listener's heartbeat settings.
    @usableFromInline let heartbeatIntervalMS: Int64
    @usableFromInline let heartbeatTimeoutMS: Int64
    @usableFromInline var lastContext: P.CallContext?
    /// Per call id, what its caller needs to send it elsewhere should this connection's connect
    /// fail (set by callers while it connects; emptied once it is open).
    public var retryStates: [UInt32: AnyObject] = [:]
    static var sweepMS: Int64 { 50 }

    init(connection: Connection, pool: MultiplexPool<P>, clusterIndex: Int, hostIndex: Int) {
        self.connection = connection
        self.pool = pool
        worker = pool.worker
        settings = pool.settings
        self.clusterIndex = clusterIndex
        self.hostIndex = hostIndex
        let beat = pool.worker.clusters[clusterIndex].config.heartbeat
        heartbeatIntervalMS = beat?.intervalMS ?? pool.settings.heartbeatIntervalMS
        // Without a timeout of its own, a heartbeat is missed when the next one is due.
        heartbeatTimeoutMS = beat?.timeoutMS ?? heartbeatIntervalMS
        lastHeard = worker.loop.nowMS
        sweepTimer = LoopTimer(target: self)
        armSweep()
    }

    deinit { if let t = sweepTimer { worker.loop.timers.cancel(t) } }

    public var inFlight: Int { pending.count }
    @usableFromInline var cluster: ClusterRuntime { worker.clusters[clusterIndex] }
    @usableFromInline var hostName: String { cluster.config.hosts[hostIndex].address.description }

    @usableFromInline
    func armSweep() {
        guard let t = sweepTimer else { return }
        let now = worker.loop.nowMS
        var at = now + (pending.isEmpty ? max(heartbeatIntervalMS, 100) : MultiplexConnection.sweepMS)
        if heartbeatOutstanding { at = min(at, max(heartbeatSentAt + heartbeatTimeoutMS, now + 10)) }
        worker.loop.timers.arm(t, at: at)
    }

    @usableFromInline
    func takeID() -> UInt32 {
        var id = nextID
        nextID = nextID == UInt32.max ? 1 : nextID + 1
        while pending[id] != nil { id = nextID; nextID = nextID == UInt32.max ? 1 : nextID + 1 }
        return id
    }

    /// Registers a call and returns the id to send it under; `caller` nil: one-way, nothing kept.
    /// The caller then writes its frame into `connection.outputBuffer`.
    @inlinable
    public func register(caller: P.Caller?, originalID: UInt32, context: P.CallContext, deadline: Int64, startedUS: Int64 = 0) -> UInt32 {
        lastContext = context
        let id = takeID()
        if let caller {
            let wasEmpty = pending.isEmpty
            pending[id] = PendingCall(caller: caller, originalID: originalID, deadline: deadline, startMS: worker.loop.nowMS, context: context,
                                      cluster: worker.clusters[clusterIndex], startedUS: startedUS)
            if wasEmpty { armSweep() }
        }
        return id
    }

    public func connectionConnected(_ connection: Connection) {
        if !retryStates.isEmpty { retryStates.removeAll() }
        lastHeard = worker.loop.nowMS
        connection.flush()
    }

    @inlinable
    public func connectionReadable(_ connection: Connection, eof: Bool) {
        guard let input = connection.input else { if eof { connection.close(reason: .peerClosed) }; return }
        lastHeard = worker.loop.nowMS
        missedHeartbeats = 0
        while input.readableBytes > 0 {
            switch P.decode(input.readPointer, input.readableBytes, maxFrame: settings.maxFrameBytes) {
            case .needMore:
                if eof { connection.close(reason: .peerClosed) }
                return
            case .error(let why):
                worker.logger.error("pool", "upstream \(hostName): \(why); closing the upstream connection")
                connection.close(reason: .readError(0))
                return
            case .frame(let frame):
                switch P.role(of: frame) {
                case .response(let id, let status):
                    if let call = pending.removeValue(forKey: id) {
                        call.cluster.requestEnded(host: hostIndex, startedUS: call.startedUS)
                        call.cluster.stats.record(status: status)
                        call.cluster.noteOutcome(host: hostIndex, failed: P.blamesHost(status: status))
                        call.cluster.stats.recordResponseTime(ms: worker.loop.nowMS - call.startMS, host: hostIndex)
                        if let caller = call.caller { P.deliver(UnsafePointer(input.readPointer), frame, of: call, to: caller) }
                    }
                case .heartbeatAnswer:
                    heartbeatOutstanding = false
                case .other:
                    break
                }
                input.consume(P.length(of: frame))
            }
        }
        if eof { connection.close(reason: .peerClosed); return }
        if retired && pending.isEmpty { connection.close() }
    }

    /// A reload replaced its cluster: no new call comes; it closes once its calls are answered.
    public internal(set) var retired = false

    public func connectionWriteDrained(_ connection: Connection) {
        let callers = waiting
        waiting.removeAll(keepingCapacity: true)
        for c in callers { P.resume(c) }
    }

    /// Every call still waiting fails with its own id; the connection leaves the pool.
    public func connectionClosed(_ connection: Connection, reason: CloseReason) {
        pool.remove(self)
        if let t = sweepTimer { worker.loop.timers.cancel(t) }
        var failed = pending
        pending.removeAll()
        let error: StreamError
        switch reason {
        case .connectFailed: error = .connectFailed(host: hostName, reason: reason)
        case .connectTimeout: error = .connectTimeout(host: hostName)
        case .handshakeFailed(let why): error = .upstreamTLSFailed(host: hostName, why: why)
        default: error = .upstreamReset(host: hostName)
        }
        // One lost connection is one failure of its host, however many calls it carried.
        // A peer closing an idle connection is ordinary (its own idle timeout).
        let blames: Bool
        switch reason {
        case .localClose: blames = false
        case .peerClosed: blames = !failed.isEmpty
        default: blames = true
        }
        if blames { cluster.noteOutcome(host: hostIndex, failed: true) }
        switch reason {
        case .connectFailed, .connectTimeout, .handshakeFailed:
            if !failed.isEmpty && !retryStates.isEmpty { retryUnsent(&failed, error) }
            retryStates.removeAll()
        default: break
        }
        if !failed.isEmpty {
            worker.logger.error("pool", "upstream connection to \(hostName) closed (\(reason)) with \(failed.count) call(s) in flight: \(error.code)")
        }
        for (_, call) in failed { fail(call, error) }
        for c in waiting { P.resume(c) }
        waiting.removeAll()
    }

    /// After a failed connect every byte written is still in the output buffer: each call found
    /// there goes back to its caller, which may send it to another host (it is then not failed).
    private func retryUnsent(_ failed: inout [UInt32: PendingCall<P>], _ error: StreamError) {
        let out = connection.outputBuffer
        var offset = 0
        while offset < out.readableBytes {
            let p = UnsafePointer(out.readPointer + offset)
            guard case .frame(let frame) = P.decode(p, out.readableBytes - offset, maxFrame: settings.maxFrameBytes) else { return }
            offset += P.length(of: frame)
            guard let id = P.requestID(of: frame), let call = failed[id], let caller = call.caller, let state = retryStates[id] else { continue }
            call.cluster.requestEnded(host: hostIndex, startedUS: call.startedUS)
            if P.retry(call, p, frame, state: state, after: error, to: caller) {
                failed[id] = nil
            } else {
                _ = call.cluster.requestStarted(host: hostIndex)   // `fail` ends it again
            }
        }
    }

    /// A call taken out of `pending` ends without an answer: counted, and its caller told.
    private func fail(_ call: PendingCall<P>, _ error: StreamError) {
        call.cluster.requestEnded(host: hostIndex, startedUS: call.startedUS)
        call.cluster.stats.record(error)
        call.cluster.stats.record(status: P.status(for: error))
        if let caller = call.caller { P.fail(call, error, to: caller) }
    }

    public func timerFired(_ timer: LoopTimer) {
        let now = worker.loop.nowMS
        if !pending.isEmpty {
            var expired: [UInt32] = []
            for (id, call) in pending where call.deadline <= now { expired.append(id) }
            for id in expired {
                guard let call = pending.removeValue(forKey: id) else { continue }
                worker.logger.error("pool", "call \(call.originalID) to \(hostName) timed out")
                call.cluster.noteOutcome(host: hostIndex, failed: true)
                fail(call, .timeout(host: hostName))
            }
        }
        if heartbeatOutstanding && now - heartbeatSentAt >= heartbeatTimeoutMS {
            heartbeatOutstanding = false
            missedHeartbeats += 1
            if missedHeartbeats >= settings.heartbeatMaxMisses {
                worker.logger.error("pool", "upstream \(hostName) missed \(missedHeartbeats) heartbeats; closing it")
                connection.close(reason: .readError(0))
                return
            }
        }
        if connection.state == .open && !heartbeatOutstanding && now - lastHeard >= heartbeatIntervalMS {
            heartbeatOutstanding = true
            heartbeatSentAt = now
            P.writeHeartbeat(connection.outputBuffer, id: takeID(), like: lastContext)
            connection.flush()
            lastHeard = now
        }
        if connection.state != .closed { armSweep() }
    }
}

/// Per-worker multiplexed upstream connections of one protocol, by cluster and host.
public final class MultiplexPool<P: MultiplexProtocol> {
    public let settings: MultiplexSettings
    @usableFromInline unowned let worker: Worker
    @usableFromInline var byCluster: [[[MultiplexConnection<P>]]]
    @usableFromInline var nextPick = 0

    public init(settings: MultiplexSettings, worker: Worker) {
        self.settings = settings
        self.worker = worker
        byCluster = Array(repeating: [], count: worker.clusters.count)
    }

    public enum Pick {
        case connection(MultiplexConnection<P>)
        case failed(StreamError)
    }

    /// A connection to `host` with room for one more call: an existing one in turn, or a new one
    /// while the host has fewer than `connectionsPerHost`.
    @inlinable
    public func connection(clusterIndex: Int, host: Int) -> Pick {
        let cluster = worker.clusters[clusterIndex]
        if clusterIndex >= byCluster.count { byCluster += Array(repeating: [], count: worker.clusters.count - byCluster.count) }   // added by a reload
        if byCluster[clusterIndex].isEmpty { byCluster[clusterIndex] = Array(repeating: [], count: cluster.config.hosts.count) }
        let list = byCluster[clusterIndex][host]
        if list.count >= settings.connectionsPerHost {
            for _ in 0..<list.count {
                nextPick &+= 1
                let c = list[nextPick % list.count]
                if c.inFlight < settings.maxConcurrentPerConnection { return .connection(c) }
            }
            return .failed(.overloaded(host: cluster.config.hosts[host].address.description))
        }
        return openConnection(clusterIndex: clusterIndex, host: host)
    }

    @usableFromInline
    func openConnection(clusterIndex: Int, host: Int) -> Pick {
        let cluster = worker.clusters[clusterIndex]
        let address = cluster.config.hosts[host].address
        let c: Connection
        do {
            c = try Connection.connect(toHost: host, of: cluster.config, transports: cluster.transports, load: cluster.load, loop: worker.loop, buffers: worker.buffers)
        } catch {
            switch error {
            case .failed: return .failed(.connectFailed(host: address.description, reason: .connectFailed(0)))
            case .overflow(let limit): return .failed(.overflow(cluster: cluster.config.name, limit: limit))
            }
        }
        c.highWatermark = max(cluster.config.connectionBufferLimit, 256 * 1024)
        c.lowWatermark = c.highWatermark / 4
        cluster.stats.connectionsOpened += 1
        let m = MultiplexConnection(connection: c, pool: self, clusterIndex: clusterIndex, hostIndex: host)
        c.delegate = m
        byCluster[clusterIndex][host].append(m)
        return .connection(m)
    }

    /// A reload replaced the clusters at `indices` (their hosts may differ now): their connections
    /// leave the pool, idle ones close, busy ones close after their last answer.
    public func retire(clusters indices: [Int]) {
        for i in indices where i < byCluster.count {
            let hosts = byCluster[i]
            byCluster[i] = []
            for list in hosts { for m in list { m.retired = true; if m.inFlight == 0 { m.connection.close() } } }
        }
    }

    /// Closes every connection (drain, shutdown); calls still in flight fail with their ids.
    public func closeAll() {
        for hosts in byCluster { for list in hosts { for m in list { m.connection.close() } } }
    }

    func remove(_ m: MultiplexConnection<P>) {
        guard m.clusterIndex < byCluster.count, m.hostIndex < byCluster[m.clusterIndex].count else { return }
        byCluster[m.clusterIndex][m.hostIndex].removeAll { $0 === m }
    }
}
