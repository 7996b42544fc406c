import TernCore

/// One copy of an HTTP/1 request on its way to a shadow host (the `mirror` stream filter). The
/// session writes the head (with `Connection: close`) and the body bytes as it forwards them;
/// the copy reads and drops whatever the shadow answers and ends when the shadow closes, as
/// MOSN's HTTP/1 mirror does. It never pushes back on the session: a shadow that leaves more than
/// `MirrorCopies.maxUnsentBytes` unsent, or that stays silent for its idle time, is closed.
/// The worker's `HTTP1Scratch` holds every live copy, which bounds them per worker.
final class HTTP1Mirror: ConnectionDelegate, TimerTarget {
    let connection: Connection
    let cluster: ClusterRuntime
    let scratch: HTTP1Scratch
    unowned let loop: EventLoop
    let logger: Logger
    let idleMS: Int64
    private var timer: LoopTimer?
    /// The whole request is written (or queued): the shadow's close ends the copy normally.
    private var requestSent = false

    /// A copy to `host` of `copies`'s cluster, connecting now; nil when it cannot start (counted).
    static func start(_ copies: MirrorCopies, host: Int, worker: Worker, scratch: HTTP1Scratch, idleMS: Int64) -> HTTP1Mirror? {
        let cluster = copies.cluster
        guard scratch.mirrors.count < MirrorCopies.maxInFlightPerWorker else {
            cluster.stats.overflows += 1
            worker.logger.debug("mirror", "cluster \(cluster.config.name): \(MirrorCopies.maxInFlightPerWorker) copies already in flight on this worker; copy skipped")
            return nil
        }
        let connection: Connection
        do {
            connection = try cluster.pool.connect(host: host)
        } catch {
            switch error {
            case .failed: cluster.stats.connectFailures += 1
            case .overflow: cluster.stats.overflows += 1
            }
            worker.logger.debug("mirror", "cluster \(cluster.config.name): no connection to \(cluster.config.hosts[host].address); copy dropped")
            return nil
        }
        cluster.stats.connectionsOpened += 1
        let mirror = HTTP1Mirror(connection: connection, cluster: cluster, scratch: scratch, worker: worker, idleMS: idleMS)
        scratch.mirrors[ObjectIdentifier(mirror)] = mirror
        return mirror
    }

    private init(connection: Connection, cluster: ClusterRuntime, scratch: HTTP1Scratch, worker: Worker, idleMS: Int64) {
        self.connection = connection
        self.cluster = cluster
        self.scratch = scratch
        loop = worker.loop
        logger = worker.logger
        self.idleMS = idleMS
        connection.delegate = self
        let t = LoopTimer(target: self)
        timer = t
        loop.timers.arm(t, at: loop.nowMS + idleMS)
    }

    deinit { if let t = timer { loop.timers.cancel(t) } }

    var isOpen: Bool { connection.state != .closed }

    /// More of the request: false once the copy is gone (closed, or dropped for being too slow).
    func append(_ p: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        guard isOpen else { return false }
        connection.outputBuffer.write(p, count: count)
        guard connection.pendingOutput <= MirrorCopies.maxUnsentBytes else {
            logger.debug("mirror", "cluster \(cluster.config.name): shadow \(connection.logIdentity) fell \(connection.pendingOutput) bytes behind; copy dropped")
            cluster.stats.overflows += 1
            connection.close()
            return false
        }
        connection.flush()
        return true
    }

    /// The request is whole: the copy only waits for the shadow to answer and close.
    func finishRequest() {
        requestSent = true
        if isOpen { connection.flush() }
    }

    /// The request will not be whole (the client or the real exchange failed mid-body).
    func abort() {
        if isOpen { connection.close() }
    }

    func connectionConnected(_ connection: Connection) { connection.flush() }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        connection.input?.clear()   // the shadow's answer goes nowhere
        if eof { connection.close(reason: .peerClosed) }
    }

    func connectionWriteDrained(_ connection: Connection) {}

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        switch reason {
        case .connectFailed, .connectTimeout, .handshakeFailed: cluster.stats.connectFailures += 1
        default: break
        }
        if let t = timer { loop.timers.cancel(t); timer = nil }
        scratch.mirrors[ObjectIdentifier(self)] = nil
    }

    /// No byte moved for the idle time: the shadow is let go (lazy, as the sessions' idle timers).
    func timerFired(_ timer: LoopTimer) {
        guard isOpen else { return }
        let due = connection.lastProgressMS + idleMS
        if due > loop.nowMS { loop.timers.arm(timer, at: due); return }
        logger.debug("mirror", "cluster \(cluster.config.name): shadow \(connection.logIdentity) silent for \(idleMS) ms \(requestSent ? "after the request" : "mid-request"); closed")
        cluster.stats.timeouts += 1
        connection.close()
    }
}

extension HTTP1Session {
    /// Starts the copies of the request whose head is first in `input` (before `dispatch`
    /// consumes it): each gets the head the real upstream gets (route rewrites and header
    /// mutations included) with `Connection: close`. Copies of a request with a body stay in
    /// `mirrors` until `forwardRequestBody` has handed them all of it.
    func startMirrors(_ copies: MirrorCopies, _ target: UpstreamTarget, _ input: ByteBuffer) {
        let idle = target.timeoutMS > 0 ? target.timeoutMS : max(settings.idleTimeoutMS, 1_000)
        for host in copies.hosts {
            guard let mirror = HTTP1Mirror.start(copies, host: host, worker: worker, scratch: scratch, idleMS: idle) else { continue }
            writeUpstreamHead(mirror.connection.outputBuffer, input, target.route, target.clusterRoute, copies.cluster.config.hosts[host], closing: true)
            if requestBodyDone { mirror.finishRequest() } else { mirrors.append(mirror) }
        }
        if copies.broadcast { startBroadcast() }
    }

    /// MOSN's broadcast: the copies are the request's only destinations; Tern answers 200 once
    /// the whole body went to them (phase proxying with no upstream, `broadcasting` set).
    func startBroadcast() {
        guard let input = downstream.input else { return }
        input.consume(request.headLength)
        phase = .proxying
        broadcasting = true
        responseProgress = .awaitingHead
        if requestBodyDone { finishBroadcast(); return }
        if request.expectContinue {
            downstream.outputBuffer.write("HTTP/1.1 100 Continue\r\n\r\n")
            downstream.flush()
        }
        forwardRequestBody()
    }

    func finishBroadcast() {
        broadcasting = false
        for m in mirrors { m.finishRequest() }
        mirrors.removeAll()
        logger.debug("mirror", "listener \(settings.listenerName): request broadcast; answering 200")
        sendDirect(status: 200, body: [], headers: HeaderMutations())
    }

    /// Body bytes the request just wrote to `out` from offset `mark` go to every copy too.
    func copyToMirrors(_ out: ByteBuffer, from mark: Int) {
        let count = out.readableBytes - mark
        if count > 0 {
            let p = UnsafePointer(out.readPointer + mark)
            mirrors.removeAll { !$0.append(p, count) }
        }
        if requestBodyDone {
            for m in mirrors { m.finishRequest() }
            mirrors.removeAll()
        }
    }

    /// The exchange ended before its body did: the copies would never be whole.
    func abortMirrors() {
        broadcasting = false
        for m in mirrors { m.abort() }
        mirrors.removeAll()
    }
}
