import TernCore

/// Settings of bolt proxying that are not in the route table (Tern extensions, with defaults).
public struct BoltSettings: Sendable {
    public var maxFrameBytes = 16 * 1024 * 1024
    public var connectionsPerHost = 1
    public var heartbeatIntervalMS: Int64 = 15_000
    public var heartbeatMaxMisses = 3
    /// Calls one client connection may have in flight; past it Tern stops reading that client
    /// until answers go out, so a client that never reads cannot grow memory without bound.
    public var maxInflightRequests = 1024
    public init() {}
}

/// `bolt` / `boltv2` (and MOSN's `"X"` with `sub_protocol: bolt`): both versions are decoded either way.
public struct BoltProtocol: StreamProtocol {
    public let name: String
    public let settings: BoltSettings
    public init(name: String, settings: BoltSettings = BoltSettings()) {
        self.name = name
        self.settings = settings
    }

    public func sniff(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> SniffResult { BoltCodec.sniff(bytes, count) }

    public func startSession(connection: Connection, worker: Worker, settings proxy: ProxySettings) {
        let session = BoltSession(connection: connection, worker: worker, proxy: proxy, settings: settings)
        connection.delegate = session
        worker.add(session, fd: connection.fd)
    }
}

extension StreamError {
    /// The bolt response status a caller gets when this failure ends its call (MOSN's mapping:
    /// no route is NO_PROCESSOR, a timeout TIMEOUT, anything that lost the connection CONNECTION_CLOSED).
    var boltStatus: BoltStatus {
        switch self {
        case .noRoute: return .noProcessor
        case .timeout, .idleTimeout, .connectTimeout: return .timeout
        case .noHealthyHost, .connectFailed, .upstreamReset, .upstreamMalformed: return .connectionClosed
        }
    }
}

/// A bolt request seen by the router: the header map, in place. Bolt has no path or host.
struct BoltRequestView: RoutableRequest {
    let headers: UnsafePointer<UInt8>
    let headerLength: Int

    func withPath<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { body(headers, 0) }
    func withHost<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { body(headers, 0) }
    func withHeader<R>(lowercasedName: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R? {
        var result: R?
        BoltCodec.forEachHeader(headers, headerLength) { k, kl, v, vl in
            guard Bytes.equalsIgnoringCase(k, kl, lowercasedName) else { return false }
            result = body(v, vl)
            return true
        }
        return result
    }
}

/// One client connection speaking bolt. Requests are routed one by one and sent on shared,
/// multiplexed upstream connections; responses come back in whatever order upstreams answer.
final class BoltSession: ConnectionDelegate, DownstreamSession, TimerTarget {
    let downstream: Connection
    let worker: Worker
    let proxy: ProxySettings
    let forwarder: Forwarder
    let settings: BoltSettings
    let pools: BoltPools
    var inFlight = 0
    var draining = false
    var clientFinished = false
    var closed = false
    /// Upstreams this batch wrote to (flushed once at the end of the batch).
    var touched: [BoltUpstream] = []
    /// No byte moved either way for the listener's idle timeout: the client is let go.
    var idleTimer: LoopTimer?

    init(connection: Connection, worker: Worker, proxy: ProxySettings, settings: BoltSettings) {
        downstream = connection
        self.worker = worker
        self.proxy = proxy
        forwarder = Forwarder(worker: worker, settings: proxy)
        self.settings = settings
        pools = BoltPools.of(worker, settings: settings)
        if proxy.idleTimeoutMS > 0 {
            let t = LoopTimer(target: self)
            idleTimer = t
            worker.loop.timers.arm(t, at: worker.loop.nowMS + proxy.idleTimeoutMS)
        }
    }

    deinit { if let t = idleTimer { worker.loop.timers.cancel(t) } }

    /// Lazy: fires at most once per idle period and re-arms for the time left.
    func timerFired(_ timer: LoopTimer) {
        guard !closed, downstream.state == .open else { return }
        let deadline = downstream.lastProgressMS + proxy.idleTimeoutMS
        if deadline > worker.loop.nowMS {
            worker.loop.timers.arm(timer, at: deadline)
            return
        }
        logger.error("bolt", "listener \(proxy.listenerName): no byte moved for \(proxy.idleTimeoutMS) ms (\(inFlight) call(s) in flight, \(downstream.pendingOutput) bytes unsent); closing the client connection")
        close()
    }

    /// Reading stops while the client has too many calls in flight or leaves its answers unread.
    var mustPauseReading: Bool { inFlight >= settings.maxInflightRequests || downstream.exceedsHighWatermark() }

    var logger: Logger { worker.logger }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        if eof { clientFinished = true }
        guard let input = connection.input else { finishIfClientFinished(); return }
        while !closed && input.readableBytes > 0 {
            switch BoltCodec.decode(input.readPointer, input.readableBytes, maxFrame: settings.maxFrameBytes) {
            case .needMore:
                flushTouched()
                if clientFinished { input.clear() }   // a partial frame at the FIN never completes
                finishIfClientFinished()
                return
            case .error(let why):
                logger.error("bolt", "listener \(proxy.listenerName): \(why); closing the client connection")
                close()
                return
            case .frame(let frame):
                handle(frame, UnsafePointer(input.readPointer))
                input.consume(frame.frameLength)
            }
            if mustPauseReading { downstream.pauseReading(); break }
        }
        flushTouched()
        finishIfClientFinished()
    }

    /// The client sent its FIN: the calls it already made are still answered (bolt clients may
    /// half-close), then the connection closes; frames still buffered behind a pause come first.
    func finishIfClientFinished() {
        guard clientFinished, !closed, downstream.input?.isEmpty ?? true else { return }
        draining = true
        finishIfDrained()
    }

    func flushTouched() {
        for u in touched { u.queued = false; u.connection.flush() }
        touched.removeAll(keepingCapacity: true)
        downstream.flush()
    }

    func handle(_ frame: BoltFrame, _ p: UnsafePointer<UInt8>) {
        switch (frame.kind, frame.command) {
        case (.request, .heartbeat):
            BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: frame.protocolCode, command: .heartbeat,
                                    requestID: frame.requestID, codec: frame.codec, status: .success)
        case (.response, _):
            logger.warn("bolt", "listener \(proxy.listenerName): a client sent a response frame (id \(frame.requestID)); ignored")
        default:
            forward(frame, p)
        }
    }

    func forward(_ frame: BoltFrame, _ p: UnsafePointer<UInt8>) {
        let view = BoltRequestView(headers: p + frame.headerOffset, headerLength: frame.headerLength)
        let target: UpstreamTarget
        switch forwarder.decide(view) {
        case .upstream(let t): target = t
        case .fail(let error, let cluster): answerError(frame, error, cluster: cluster); return
        case .routeAnswer: answerError(frame, .noRoute, cluster: nil); return   // bolt has no direct responses
        }
        let cluster = target.cluster
        guard let upstream = pools.upstream(clusterIndex: target.clusterIndex, host: target.hostIndex, worker: worker) else {
            answerError(frame, .connectFailed(host: target.host.address.description, reason: .connectFailed(0)), cluster: cluster)
            return
        }
        var timeout = target.timeoutMS
        // The shorter of the route timeout and the caller's own bolt timeout; 0 on both: none.
        if frame.timeoutMS > 0 { timeout = timeout > 0 ? min(timeout, Int64(frame.timeoutMS)) : Int64(frame.timeoutMS) }
        let deadline = timeout > 0 ? worker.loop.nowMS + timeout : Int64.max
        upstream.send(frame, p, from: frame.kind == .oneway ? nil : self, deadline: deadline)
        if frame.kind != .oneway { inFlight += 1; cluster.stats.inFlight += 1 }
        if !upstream.queued { upstream.queued = true; touched.append(upstream) }
        if upstream.connection.exceedsHighWatermark() {
            // A slow upstream: stop taking requests from this client until it drains.
            downstream.pauseReading()
            upstream.waiting.append(self)
        }
    }

    /// A response from an upstream, its id already restored; or an error for one of our requests.
    func deliver(_ p: UnsafePointer<UInt8>, _ frame: BoltFrame, originalID: UInt32) {
        inFlight -= 1
        guard !closed else { return }
        BoltCodec.copyFrame(p, frame, newID: originalID, into: downstream.outputBuffer)
        answered()
    }

    func deliverError(originalID: UInt32, protocolCode: UInt8, codec: UInt8, status: BoltStatus) {
        inFlight -= 1
        guard !closed else { return }
        BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: protocolCode, command: .response,
                                requestID: originalID, codec: codec, status: status)
        answered()
    }

    /// An answer was queued for the client: written after the batch; reading resumes once the
    /// client is back under its in-flight and output bounds (the write drain resumes it otherwise).
    func answered() {
        worker.loop.flushLater(downstream)
        if draining { finishIfDrained(); return }
        if downstream.readPaused && !mustPauseReading { downstream.resumeReading() }
    }

    func answerError(_ frame: BoltFrame, _ error: StreamError, cluster: ClusterRuntime?) {
        let status = error.boltStatus
        cluster?.stats.record(status: Int(status.rawValue))
        forwarder.failed(error, cluster: cluster, protocolName: "bolt request \(frame.requestID):", answer: "\(status)")
        guard frame.kind != .oneway else { return }
        BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: frame.protocolCode, command: .response,
                                requestID: frame.requestID, codec: frame.codec, status: status)
    }

    func resume() {
        guard !closed, !mustPauseReading else { return }
        downstream.resumeReading()
    }

    func finishIfDrained() {
        if draining && inFlight == 0 { worker.loop.flushLater(downstream); downstream.closeWhenFlushed() }
    }

    func close() {
        guard !closed else { return }
        closed = true
        downstream.close()
    }

    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) { resume() }
    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        closed = true
        worker.remove(fd: connection.fd)
    }

    func beginDrain() {
        draining = true
        if inFlight == 0 { close() }
    }
}

/// A request waiting for its response on one upstream connection.
struct PendingBoltRequest {
    weak var session: BoltSession?
    let originalID: UInt32
    let deadline: Int64
    let protocolCode: UInt8
    let codec: UInt8
    unowned let cluster: ClusterRuntime
}

/// One multiplexed upstream connection: every request gets a fresh id on it; the response is
/// mapped back to the caller's id. Idle connections are probed with heartbeats.
final class BoltUpstream: ConnectionDelegate, TimerTarget {
    let connection: Connection
    unowned let pools: BoltPools
    let hostIndex: Int
    let clusterIndex: Int
    let settings: BoltSettings
    unowned let worker: Worker
    var nextID: UInt32 = 1
    var pending: [UInt32: PendingBoltRequest] = [:]
    var queued = false
    var waiting: [BoltSession] = []
    var sweepTimer: LoopTimer?
    var lastHeard: Int64
    var missedHeartbeats = 0
    var heartbeatOutstanding = false
    var protocolCode: UInt8 = 1
    static let sweepMS: Int64 = 50

    init(connection: Connection, pools: BoltPools, clusterIndex: Int, hostIndex: Int, worker: Worker, settings: BoltSettings) {
        self.connection = connection
        self.pools = pools
        self.clusterIndex = clusterIndex
        self.hostIndex = hostIndex
        self.worker = worker
        self.settings = settings
        lastHeard = worker.loop.nowMS
        sweepTimer = LoopTimer(target: self)
        armSweep()
    }

    deinit { if let t = sweepTimer { worker.loop.timers.cancel(t) } }

    func armSweep() {
        guard let t = sweepTimer else { return }
        let next = pending.isEmpty ? max(settings.heartbeatIntervalMS, 100) : BoltUpstream.sweepMS
        worker.loop.timers.arm(t, at: worker.loop.nowMS + next)
    }

    func takeID() -> UInt32 {
        var id = nextID
        nextID = nextID == UInt32.max ? 1 : nextID + 1
        while pending[id] != nil { id = nextID; nextID = nextID == UInt32.max ? 1 : nextID + 1 }
        return id
    }

    func send(_ frame: BoltFrame, _ p: UnsafePointer<UInt8>, from session: BoltSession?, deadline: Int64) {
        protocolCode = frame.protocolCode
        let id = takeID()
        if let session {
            let wasEmpty = pending.isEmpty
            pending[id] = PendingBoltRequest(session: session, originalID: frame.requestID, deadline: deadline,
                                             protocolCode: frame.protocolCode, codec: frame.codec,
                                             cluster: worker.clusters[clusterIndex])
            if wasEmpty { armSweep() }
        }
        BoltCodec.copyFrame(p, frame, newID: id, into: connection.outputBuffer)
    }

    func connectionConnected(_ connection: Connection) {
        lastHeard = worker.loop.nowMS
        connection.flush()
    }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        guard let input = connection.input else { if eof { connection.close(reason: .peerClosed) }; return }
        lastHeard = worker.loop.nowMS
        missedHeartbeats = 0
        while input.readableBytes > 0 {
            switch BoltCodec.decode(input.readPointer, input.readableBytes, maxFrame: settings.maxFrameBytes) {
            case .needMore:
                if eof { connection.close(reason: .peerClosed) }
                return
            case .error(let why):
                worker.logger.error("bolt", "upstream \(worker.clusters[clusterIndex].config.hosts[hostIndex].address): \(why); closing the upstream connection")
                connection.close(reason: .readError(0))
                return
            case .frame(let frame):
                if frame.kind == .response, let entry = pending.removeValue(forKey: frame.requestID) {
                    entry.cluster.stats.inFlight -= 1
                    entry.cluster.stats.record(status: Int(frame.status))
                    entry.session?.deliver(UnsafePointer(input.readPointer), frame, originalID: entry.originalID)
                } else if frame.command == .heartbeat {
                    heartbeatOutstanding = false
                }
                input.consume(frame.frameLength)
            }
        }
        if eof { connection.close(reason: .peerClosed) }
    }

    func connectionWriteDrained(_ connection: Connection) {
        let sessions = waiting
        waiting.removeAll(keepingCapacity: true)
        for s in sessions { s.resume() }
    }

    /// Every request still waiting gets CONNECTION_CLOSED with its own id.
    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        pools.remove(self)
        if let t = sweepTimer { worker.loop.timers.cancel(t) }
        let failed = pending
        pending.removeAll()
        if !failed.isEmpty {
            worker.logger.error("bolt", "upstream connection closed (\(reason)) with \(failed.count) request(s) in flight; answering CONNECTION_CLOSED")
        }
        for (_, entry) in failed {
            entry.cluster.stats.inFlight -= 1
            entry.cluster.stats.record(status: Int(BoltStatus.connectionClosed.rawValue))
            if case .connectFailed = reason { entry.cluster.stats.connectFailures += 1 }
            entry.session?.deliverError(originalID: entry.originalID, protocolCode: entry.protocolCode, codec: entry.codec, status: .connectionClosed)
        }
        for s in waiting { s.resume() }
        waiting.removeAll()
    }

    func timerFired(_ timer: LoopTimer) {
        let now = worker.loop.nowMS
        if !pending.isEmpty {
            var expired: [UInt32] = []
            for (id, entry) in pending where entry.deadline <= now { expired.append(id) }
            for id in expired {
                guard let entry = pending.removeValue(forKey: id) else { continue }
                entry.cluster.stats.inFlight -= 1
                entry.cluster.stats.timeouts += 1
                entry.cluster.stats.record(status: Int(BoltStatus.timeout.rawValue))
                worker.logger.error("bolt", "request \(entry.originalID) timed out upstream; answering TIMEOUT")
                entry.session?.deliverError(originalID: entry.originalID, protocolCode: entry.protocolCode, codec: entry.codec, status: .timeout)
            }
        }
        if connection.state == .open && now - lastHeard >= settings.heartbeatIntervalMS {
            if heartbeatOutstanding { missedHeartbeats += 1 }
            if missedHeartbeats >= settings.heartbeatMaxMisses {
                worker.logger.error("bolt", "upstream missed \(missedHeartbeats) heartbeats; closing it")
                connection.close(reason: .readError(0))
                return
            }
            heartbeatOutstanding = true
            BoltCodec.writeHeartbeat(connection.outputBuffer, protocolCode: protocolCode, requestID: takeID())
            connection.flush()
            lastHeard = now
        }
        if connection.state != .closed { armSweep() }
    }
}

/// Per-worker multiplexed upstream connections, by cluster and host.
final class BoltPools {
    let settings: BoltSettings
    var byCluster: [[[BoltUpstream]]] = []
    var nextPick = 0

    init(settings: BoltSettings, clusters: Int) {
        self.settings = settings
        byCluster = Array(repeating: [], count: clusters)
    }

    static func of(_ worker: Worker, settings: BoltSettings) -> BoltPools {
        if let p = worker.protocolScratch["bolt"] as? BoltPools { return p }
        let p = BoltPools(settings: settings, clusters: worker.clusters.count)
        worker.protocolScratch["bolt"] = p
        return p
    }

    func upstream(clusterIndex: Int, host: Int, worker: Worker) -> BoltUpstream? {
        let cluster = worker.clusters[clusterIndex]
        if byCluster[clusterIndex].isEmpty { byCluster[clusterIndex] = Array(repeating: [], count: cluster.config.hosts.count) }
        let list = byCluster[clusterIndex][host]
        if list.count >= settings.connectionsPerHost {
            nextPick &+= 1
            return list[nextPick % list.count]
        }
        guard let c = Connection.connect(to: cluster.config.hosts[host].address, loop: worker.loop, buffers: worker.buffers) else { return nil }
        c.highWatermark = max(cluster.config.connectionBufferLimit, 256 * 1024)
        c.lowWatermark = c.highWatermark / 4
        cluster.stats.connectionsOpened += 1
        let u = BoltUpstream(connection: c, pools: self, clusterIndex: clusterIndex, hostIndex: host, worker: worker, settings: settings)
        c.delegate = u
        byCluster[clusterIndex][host].append(u)
        return u
    }

    func remove(_ u: BoltUpstream) {
        guard u.clusterIndex < byCluster.count, u.hostIndex < byCluster[u.clusterIndex].count else { return }
        byCluster[u.clusterIndex][u.hostIndex].removeAll { $0 === u }
    }
}
