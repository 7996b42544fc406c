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
    /// Calls one upstream connection carries at once (past it on every connection: SERVER_THREADPOOL_BUSY).
    public var upstreamMaxConcurrentRequests = 16 * 1024
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

    public func startSession(connection: Connection, forwarder: Forwarder) {
        let worker = forwarder.worker
        let session = BoltSession(connection: connection, forwarder: forwarder, settings: settings)
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
        case .timeout, .idleTimeout: return .timeout
        case .noHealthyHost, .connectFailed, .connectTimeout, .upstreamReset, .upstreamMalformed, .upstreamTLSFailed: return .connectionClosed
        case .overloaded, .overflow: return .serverThreadpoolBusy
        }
    }
}

extension BoltStatus {
    /// The response status a call answered locally with this HTTP status gets (a stream filter's
    /// answer), as MOSN maps them for bolt; 403 has no bolt status of its own: SERVER_EXCEPTION.
    init(localAnswer status: Int) {
        switch status {
        case 200: self = .success
        case 403: self = .serverException
        case 404: self = .noProcessor
        case 502: self = .connectionClosed
        case 503: self = .serverThreadpoolBusy
        case 504: self = .timeout
        default: self = .unknown
        }
    }
}

/// A bolt request seen by the router and the stream filters: the header map, in place. Bolt has
/// no path, host or method; its body length is the frame's content.
struct BoltRequestView: StreamRequest {
    let headers: UnsafePointer<UInt8>
    let headerLength: Int
    var bodyLength = 0

    func withMethod<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { body(headers, 0) }
    var contentLength: Int64? { Int64(bodyLength) }

    func withPath<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { body(headers, 0) }
    func withQuery<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { body(headers, 0) }
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
    let forwarder: Forwarder
    var proxy: ProxySettings { _read { yield forwarder.settings } }
    let settings: BoltSettings
    let pool: MultiplexPool<BoltMultiplex>
    var inFlight = 0
    /// serving → finishing: SIGTERM, or the client's FIN once its buffered frames are read; the
    /// calls in flight are answered, and the connection closes (after a flush) once none is left.
    /// serving or finishing → closed: the connection closed (an error, the idle timeout, or done).
    enum Phase { case serving, finishing, closed }
    var phase = Phase.serving
    /// The client sent its FIN (a fact about the input; `finishing` follows once it is read).
    var clientFinished = false
    /// Upstreams this batch wrote to (flushed once at the end of the batch).
    var touched: [MultiplexConnection<BoltMultiplex>] = []
    /// No byte moved either way for the listener's idle timeout: the client is let go.
    var idleTimer: LoopTimer?
    /// Calls a stream filter holds (fault delay), each with a copy of its frame, in due order.
    var delayedCalls: [DelayedCall] = []
    var delayTimer: LoopTimer?
    static let delayTag = 1

    struct DelayedCall {
        let frame: BoltFrame
        let bytes: [UInt8]
        let resume: FilterResumePoint
        let dueMS: Int64
        let record: AccessLogRecord?
    }
    /// The access-log record of the call being routed (the listener has access logs): opened when
    /// the frame is read, taken by whatever answers or sends the call.
    var pendingRecord: AccessLogRecord?

    init(connection: Connection, forwarder: Forwarder, settings: BoltSettings) {
        downstream = connection
        let worker = forwarder.worker
        self.worker = worker
        self.forwarder = forwarder
        let proxy = forwarder.settings
        self.settings = settings
        pool = BoltMultiplex.pool(of: worker, settings: settings)
        if proxy.idleTimeoutMS > 0 {
            let t = LoopTimer(target: self)
            idleTimer = t
            worker.loop.timers.arm(t, at: worker.loop.nowMS + proxy.idleTimeoutMS)
        }
    }

    deinit {
        if let t = idleTimer { worker.loop.timers.cancel(t) }
        if let t = delayTimer { worker.loop.timers.cancel(t) }
    }

    /// Lazy: fires at most once per idle period and re-arms for the time left.
    func timerFired(_ timer: LoopTimer) {
        guard phase != .closed, downstream.state == .open else { return }
        if timer.tag == BoltSession.delayTag { resumeDelayedCalls(); return }
        var deadline = downstream.lastProgressMS + proxy.idleTimeoutMS
        // A call held by a filter is not idleness: the client waits on Tern.
        if !delayedCalls.isEmpty { deadline = max(deadline, worker.loop.nowMS + proxy.idleTimeoutMS) }
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
        while phase != .closed && input.readableBytes > 0 {
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
        guard clientFinished, phase != .closed, downstream.input?.isEmpty ?? true else { return }
        startFinishing()
    }

    func startFinishing() {
        if phase == .serving { phase = .finishing }
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
        let view = BoltRequestView(headers: p + frame.headerOffset, headerLength: frame.headerLength, bodyLength: frame.contentLength)
        if let plan = proxy.accessLogs, let output = worker.accessLogOutput {
            let record = output.takeRecord()
            record.begin(view, plan: plan, downstream: downstream, protocolName: frame.protocolCode == 2 ? "boltv2" : "bolt",
                         traceHeader: AccessLogRecord.boltTraceHeader, nowUS: worker.loop.nowUS)
            record.bytesReceived = Int64(frame.contentLength)
            pendingRecord = record
        }
        if let filters = forwarder.filters {
            filterAndSend(filters, frame, p, view, resuming: nil)
            return
        }
        act(on: forwarder.decide(view, from: downstream), frame, p)
    }

    @inline(__always)
    func act(on decision: ForwardDecision, _ frame: BoltFrame, _ p: UnsafePointer<UInt8>) {
        switch decision {
        case .upstream(let target): send(frame, p, to: target)
        case .fail(let error, let cluster): answerError(frame, error, cluster: cluster)
        case .routeAnswer: answerError(frame, .noRoute, cluster: nil)   // bolt has no direct responses
        }
    }

    /// The call through the listener's stream filters and the router; `resuming`: where a delay
    /// stopped it. A filter's answer is a bolt response with the mapped status (none for oneway).
    func filterAndSend(_ filters: StreamFilterChain, _ frame: BoltFrame, _ p: UnsafePointer<UInt8>, _ view: BoltRequestView,
                       resuming: FilterResumePoint?) {
        switch forwarder.decide(view, from: downstream, through: filters, resuming: resuming) {
        case .forward(let decision):
            if filters.plan.mirror != nil, case .upstream(let target) = decision,
               let copies = forwarder.mirrorCopies(for: target, through: filters) {
                mirror(frame, p, copies, timeoutMS: target.timeoutMS)
                if copies.broadcast { answerBroadcast(frame); return }
            }
            act(on: decision, frame, p)
        case .answer(let answer, let cluster):
            let status = BoltStatus(localAnswer: answer.status)
            cluster?.stats.record(status: Int(status.rawValue))
            forwarder.filtered(answer, cluster: cluster, protocolName: "bolt request \(frame.requestID):", reply: "\(status)")
            if let record = pendingRecord { logLocalAnswer(record, frame, status: status, failure: nil) }
            guard frame.kind != .oneway else { return }
            BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: frame.protocolCode, command: .response,
                                    requestID: frame.requestID, codec: frame.codec, status: status)
        case .delay(let ms, let resume):
            // The frame's bytes leave the input with this batch: the delayed call keeps a copy.
            let due = worker.loop.nowMS + ms
            let call = DelayedCall(frame: frame, bytes: Array(UnsafeBufferPointer(start: p, count: frame.frameLength)), resume: resume, dueMS: due,
                                   record: pendingRecord)
            pendingRecord = nil
            let at = delayedCalls.firstIndex { $0.dueMS > due } ?? delayedCalls.count
            delayedCalls.insert(call, at: at)
            inFlight += 1   // answered later: bounds reading and keeps a finishing connection open
            if delayTimer == nil { delayTimer = LoopTimer(target: self, tag: BoltSession.delayTag) }
            worker.loop.timers.arm(delayTimer!, at: delayedCalls[0].dueMS)
        }
    }

    /// Delays that are over: their calls go on through the filters from where they stopped.
    func resumeDelayedCalls() {
        let now = worker.loop.nowMS
        while let call = delayedCalls.first, call.dueMS <= now, phase != .closed {
            delayedCalls.removeFirst()
            inFlight -= 1
            pendingRecord = call.record
            call.bytes.withUnsafeBufferPointer { buffer in
                let p = buffer.baseAddress!
                let view = BoltRequestView(headers: p + call.frame.headerOffset, headerLength: call.frame.headerLength, bodyLength: call.frame.contentLength)
                if let filters = forwarder.filters { filterAndSend(filters, call.frame, p, view, resuming: call.resume) }
            }
        }
        if let next = delayedCalls.first, phase != .closed { worker.loop.timers.arm(delayTimer!, at: next.dueMS) }
        flushTouched()
        if phase == .finishing { finishIfDrained() } else { resume() }
    }

    /// `retry`: the call is being sent again after a failed connect (its id and deadline kept).
    func send(_ frame: BoltFrame, _ p: UnsafePointer<UInt8>, to target: UpstreamTarget, retry: BoltRetry? = nil) {
        let cluster = target.cluster
        let upstream: MultiplexConnection<BoltMultiplex>
        switch pool.connection(clusterIndex: target.clusterIndex, host: target.hostIndex) {
        case .connection(let c): upstream = c
        case .failed(let error):
            // A connect that failed at once: nothing was sent; another host when there is one.
            if error.isConnectFailure, let next = retryTarget(retry ?? BoltRetry(target, frame), after: error) {
                send(frame, p, to: next.target, retry: next)
                return
            }
            if let retry { answerRetried(retry, frame, error, cluster: cluster) } else { answerError(frame, error, cluster: cluster) }
            return
        }
        let deadline: Int64
        if let retry {
            deadline = retry.deadline
        } else {
            var timeout = target.timeoutMS
            // The shorter of the route timeout and the caller's own bolt timeout; 0 on both: none.
            if frame.timeoutMS > 0 { timeout = timeout > 0 ? min(timeout, Int64(frame.timeoutMS)) : Int64(frame.timeoutMS) }
            deadline = timeout > 0 ? worker.loop.nowMS + timeout : Int64.max
        }
        let oneway = frame.kind == .oneway
        let started = oneway ? 0 : cluster.requestStarted(host: target.hostIndex)
        var record: AccessLogRecord?
        if let r = pendingRecord {
            pendingRecord = nil
            r.sent(cluster: cluster, host: target.hostIndex, upstream: upstream.connection, nowUS: worker.loop.nowUS)
            if oneway { logCall(r) } else { record = r }   // a oneway call has no answer to wait for
        }
        let id = upstream.register(caller: oneway ? nil : self, originalID: retry?.originalID ?? frame.requestID,
                                   context: BoltMultiplex.CallContext(protocolCode: frame.protocolCode, codec: frame.codec, record: record,
                                                                      clusterIndex: Int32(truncatingIfNeeded: target.clusterIndex), host: Int32(truncatingIfNeeded: target.hostIndex)),
                                   deadline: deadline, startedUS: started)
        BoltCodec.copyFrame(p, frame, newID: id, into: upstream.connection.outputBuffer)
        // Once per call, however many tries it takes.
        if !oneway && !(retry?.counted ?? false) { inFlight += 1 }
        // Still connecting: if the connect fails the frame has not left Tern and may go elsewhere.
        if upstream.connection.state == .connecting && !oneway && cluster.config.hosts.count > 1 {
            let r = retry ?? BoltRetry(target, frame)
            r.deadline = deadline
            r.target = target
            r.counted = true
            upstream.retryStates[id] = r
        } else {
            retry?.counted = true
        }
        if !upstream.queued { upstream.queued = true; touched.append(upstream) }
        if upstream.connection.exceedsHighWatermark() {
            // A slow upstream: stop taking requests from this client until it drains.
            downstream.pauseReading()
            upstream.waiting.append(self)
        }
    }

    /// The next host for a call whose connect failed (`retry.tried` are the hosts tried), within
    /// the route's `num_retries` and the cluster's retry budget; nil: none, the call fails.
    func retryTarget(_ retry: BoltRetry, after error: StreamError) -> BoltRetry? {
        let target = retry.target
        let cluster = target.cluster
        guard phase != .closed, retry.tries < target.clusterRoute.retry.numRetries,
              target.clusterIndex < worker.clusters.count, worker.clusters[target.clusterIndex] === cluster else { return nil }
        let context = LoadBalancerContext(downstream: downstream)
        var host: Int?
        for _ in 0..<8 {
            guard let h = cluster.chooseHost(target.subset, context) else { break }
            if h >= 64 || retry.tried & (1 << UInt64(h)) == 0 { host = h; break }
        }
        guard let h = host else { return nil }
        // Sent at once (no back-off: a failed connect says nothing about another host), so the
        // budget is checked, not held.
        guard cluster.takeRetrySlot() else {
            logger.info("bolt", "cluster \(cluster.config.name): retry budget spent; \(error.code) answered without a retry")
            return nil
        }
        cluster.releaseRetrySlot()
        cluster.stats.recordRetry()
        retry.tries += 1
        if h < 64 { retry.tried |= 1 << UInt64(h) }
        logger.info("bolt", "listener \(proxy.listenerName): bolt request \(retry.originalID): \(error.code) at \(target.host.address); retry \(retry.tries) of \(target.clusterRoute.retry.numRetries) on \(cluster.config.hosts[h].address)")
        retry.target = target.on(host: h)
        return retry
    }

    /// The pool gives back a call whose connection never connected (MultiplexProtocol.retry).
    func retryUnsent(_ call: PendingCall<BoltMultiplex>, _ p: UnsafePointer<UInt8>, _ frame: BoltFrame, _ retry: BoltRetry, after error: StreamError) -> Bool {
        guard let next = retryTarget(retry, after: error) else { return false }
        pendingRecord = call.context.record
        send(frame, p, to: next.target, retry: next)
        flushTouched()
        return true
    }

    /// A call sent again ran out of hosts: answered with the error under its own id.
    func answerRetried(_ retry: BoltRetry, _ frame: BoltFrame, _ error: StreamError, cluster: ClusterRuntime) {
        // Never registered (every connect failed at once): `frame` is still the client's.
        guard retry.counted else { answerError(frame, error, cluster: cluster); return }
        forwarder.failed(error, cluster: cluster, protocolName: "bolt request \(retry.originalID):", answer: "\(error.boltStatus)")
        cluster.stats.record(status: Int(error.boltStatus.rawValue))
        deliverError(originalID: retry.originalID, protocolCode: frame.protocolCode, codec: frame.codec, status: error.boltStatus,
                     error: error, record: pendingRecord)
        pendingRecord = nil
    }

    /// Copies of the call for the `mirror` filter, fire and forget: each is registered without a
    /// caller (its answer is read and dropped, as a oneway call's), on the shadow host's
    /// multiplexed connection; a shadow whose connection is behind by its watermark gets no copy,
    /// so it never pushes back on this client.
    func mirror(_ frame: BoltFrame, _ p: UnsafePointer<UInt8>, _ copies: MirrorCopies, timeoutMS: Int64) {
        let deadline = timeoutMS > 0 ? worker.loop.nowMS + timeoutMS : Int64.max
        for host in copies.hosts {
            switch pool.connection(clusterIndex: copies.clusterIndex, host: host) {
            case .failed(let error):
                copies.cluster.stats.record(error)
                logger.debug("mirror", "cluster \(copies.cluster.config.name): \(error.detail); copy of bolt request \(frame.requestID) dropped")
            case .connection(let upstream):
                guard !upstream.connection.exceedsHighWatermark() else { copies.cluster.stats.overflows += 1; continue }
                let id = upstream.register(caller: nil, originalID: frame.requestID,
                                           context: BoltMultiplex.CallContext(protocolCode: frame.protocolCode, codec: frame.codec, record: nil),
                                           deadline: deadline)
                BoltCodec.copyFrame(p, frame, newID: id, into: upstream.connection.outputBuffer)
                if !upstream.queued { upstream.queued = true; touched.append(upstream) }
            }
        }
    }

    /// An answer to a call that went upstream, for the listener's send-side filters.
    func observe(status: Int, _ context: BoltMultiplex.CallContext, cluster: ClusterRuntime) {
        forwarder.filters?.responded(StreamResponse(status: FaultToleranceFilter.httpStatus(boltStatus: status),
                                                    clusterIndex: Int(context.clusterIndex), host: Int(context.host)),
                                     cluster: cluster, logger: logger)
    }

    /// MOSN's broadcast: the copies were the call's only destinations; the caller gets SUCCESS
    /// from Tern (no answer for oneway calls).
    func answerBroadcast(_ frame: BoltFrame) {
        if let record = pendingRecord {
            pendingRecord = nil
            record.responseCode = Int(BoltStatus.success.rawValue)
            logCall(record)
        }
        guard frame.kind != .oneway else { return }
        BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: frame.protocolCode, command: .response,
                                requestID: frame.requestID, codec: frame.codec, status: .success)
        downstream.counters?.stats.recordResponse(boltStatus: BoltStatus.success.rawValue)
    }

    /// A response from an upstream, its id already restored; or an error for one of our requests.
    func deliver(_ p: UnsafePointer<UInt8>, _ frame: BoltFrame, originalID: UInt32, record: AccessLogRecord?) {
        inFlight -= 1
        if let record { logAnswer(record, p, frame) }
        guard phase != .closed else { return }
        BoltCodec.copyFrame(p, frame, newID: originalID, into: downstream.outputBuffer)
        downstream.counters?.stats.recordResponse(boltStatus: frame.status)
        answered()
    }

    func deliverError(originalID: UInt32, protocolCode: UInt8, codec: UInt8, status: BoltStatus, error: StreamError, record: AccessLogRecord?) {
        inFlight -= 1
        if let record {
            record.responseCode = Int(status.rawValue)
            record.flagged = true
            record.failureReason = error.transportFailure
            logCall(record)
        }
        guard phase != .closed else { return }
        BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: protocolCode, command: .response,
                                requestID: originalID, codec: codec, status: status)
        downstream.counters?.stats.recordResponse(boltStatus: status.rawValue)
        answered()
    }

    /// An answer was queued for the client: written after the batch; reading resumes once the
    /// client is back under its in-flight and output bounds (the write drain resumes it otherwise).
    func answered() {
        worker.loop.flushLater(downstream)
        if phase == .finishing { finishIfDrained(); return }
        if downstream.readPaused { resume() }
    }

    func answerError(_ frame: BoltFrame, _ error: StreamError, cluster: ClusterRuntime?) {
        let status = error.boltStatus
        cluster?.stats.record(status: Int(status.rawValue))
        forwarder.failed(error, cluster: cluster, protocolName: "bolt request \(frame.requestID):", answer: "\(status)")
        if let record = pendingRecord { logLocalAnswer(record, frame, status: status, failure: error.transportFailure) }
        guard frame.kind != .oneway else { return }
        BoltCodec.writeResponse(downstream.outputBuffer, protocolCode: frame.protocolCode, command: .response,
                                requestID: frame.requestID, codec: frame.codec, status: status)
        downstream.counters?.stats.recordResponse(boltStatus: status.rawValue)
    }

    func resume() {
        guard phase != .closed, !mustPauseReading else { return }
        downstream.resumeReading()
    }

    func finishIfDrained() {
        guard phase == .finishing && inFlight == 0 else { return }
        if worker.handOff != nil { closeOrHandOff(); return }
        worker.loop.flushLater(downstream)
        downstream.closeWhenFlushed()
    }

    /// Drain for a successor (hot upgrade): a connection with nothing in flight moves to the new
    /// process with its unread bytes instead of closing, so its caller never sees it close (bolt
    /// has no way to tell a caller to reconnect). Otherwise, or when it cannot move, it closes.
    func closeOrHandOff() {
        if let handOff = worker.handOff, delayedCalls.isEmpty, phase != .closed {
            // The last answers go out first (a drain can begin with one still queued for the end
            // of the batch); what the socket does not take now, the write-drained event moves on.
            downstream.flush()
            if downstream.pendingOutput > 0 { return }
            let fd = downstream.fd
            if handOff(downstream, proxy.listenerName) {
                phase = .closed
                worker.remove(fd: fd)
                return
            }
        }
        close()
    }

    func close() {
        guard phase != .closed else { return }
        phase = .closed
        downstream.close()
    }

    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {
        if phase == .finishing && inFlight == 0 && worker.handOff != nil { closeOrHandOff(); return }
        resume()
    }
    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        phase = .closed
        worker.remove(fd: connection.fd)
    }

    func beginDrain() {
        if phase == .serving { phase = .finishing }
        if inFlight == 0 { closeOrHandOff() }
    }
}

// MARK: access log

extension BoltSession {
    /// Tern answered the call itself (or, oneway, dropped it): its line, with MOSN's response flag.
    func logLocalAnswer(_ record: AccessLogRecord, _ frame: BoltFrame, status: BoltStatus, failure: String?) {
        pendingRecord = nil
        record.responseCode = frame.kind == .oneway ? -1 : Int(status.rawValue)
        record.flagged = true
        record.failureReason = failure
        logCall(record)
    }

    /// The upstream's answer (`frame` at `p`): its status, length and the headers the formats name.
    func logAnswer(_ record: AccessLogRecord, _ p: UnsafePointer<UInt8>, _ frame: BoltFrame) {
        record.responseUS = worker.loop.nowUS
        record.responseCode = Int(frame.status)
        record.bytesSent = Int64(frame.contentLength)
        if let plan = proxy.accessLogs, plan.captures.capturesResponse {
            let headers = p + frame.headerOffset, length = frame.headerLength
            record.captureResponse(captures: plan.captures) { name, store in
                var found = false
                BoltCodec.forEachHeader(headers, length) { k, kl, v, vl in
                    guard Bytes.equalsIgnoringCase(k, kl, name) else { return false }
                    store(v, vl)
                    found = true
                    return true
                }
                return found
            }
        }
        logCall(record)
    }

    func logCall(_ record: AccessLogRecord) {
        forwarder.logAccess(record)
        worker.accessLogOutput?.giveBack(record)
    }
}

/// Bolt as a multiplexed protocol: how the shared pool reads upstream frames, probes idle
/// connections and hands answers and failures back to the bolt session that made the call.
enum BoltMultiplex: MultiplexProtocol {
    typealias Frame = BoltFrame
    typealias Caller = BoltSession
    struct CallContext {
        let protocolCode: UInt8
        let codec: UInt8
        /// The call's access-log record (nil without access logs).
        var record: AccessLogRecord? = nil
        /// Where the call went (for send-side stream filters).
        var clusterIndex: Int32 = 0
        var host: Int32 = 0
    }

    static func decode(_ p: UnsafePointer<UInt8>, _ count: Int, maxFrame: Int) -> MultiplexDecode<BoltFrame> {
        switch BoltCodec.decode(p, count, maxFrame: maxFrame) {
        case .needMore: return .needMore
        case .frame(let f): return .frame(f)
        case .error(let why): return .error(why)
        }
    }

    static func length(of frame: BoltFrame) -> Int { frame.frameLength }

    static func role(of frame: BoltFrame) -> MultiplexFrameRole {
        if frame.command == .heartbeat { return .heartbeatAnswer }
        if frame.kind == .response { return .response(id: frame.requestID, status: Int(frame.status)) }
        return .other
    }

    static func writeHeartbeat(_ out: ByteBuffer, id: UInt32, like context: CallContext?) {
        BoltCodec.writeHeartbeat(out, protocolCode: context?.protocolCode ?? 1, requestID: id)
    }

    static func deliver(_ p: UnsafePointer<UInt8>, _ frame: BoltFrame, of call: PendingCall<BoltMultiplex>, to caller: BoltSession) {
        caller.deliver(p, frame, originalID: call.originalID, record: call.context.record)
        if let filters = caller.forwarder.filters, filters.observesResponses {
            caller.observe(status: Int(frame.status), call.context, cluster: call.cluster)
        }
    }

    static func status(for error: StreamError) -> Int { Int(error.boltStatus.rawValue) }

    /// The server's own failures (as HTTP's 5xx): error, exceptions, busy, timeouts, codec and
    /// connection trouble. Not NO_PROCESSOR or (de)serialisation errors, which are the caller's.
    static func blamesHost(status: Int) -> Bool {
        switch status {
        case 0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x09, 0x10: return true
        default: return false
        }
    }

    static func fail(_ call: PendingCall<BoltMultiplex>, _ error: StreamError, to caller: BoltSession) {
        caller.deliverError(originalID: call.originalID, protocolCode: call.context.protocolCode, codec: call.context.codec,
                            status: error.boltStatus, error: error, record: call.context.record)
        if let filters = caller.forwarder.filters, filters.observesResponses {
            caller.observe(status: Int(error.boltStatus.rawValue), call.context, cluster: call.cluster)
        }
    }

    static func resume(_ caller: BoltSession) { caller.resume() }

    static func requestID(of frame: BoltFrame) -> UInt32? { frame.kind == .response ? nil : frame.requestID }

    static func retry(_ call: PendingCall<BoltMultiplex>, _ p: UnsafePointer<UInt8>, _ frame: BoltFrame, state: AnyObject, after error: StreamError, to caller: BoltSession) -> Bool {
        guard let retry = state as? BoltRetry else { return false }
        return caller.retryUnsent(call, p, frame, retry, after: error)
    }

    /// The worker's bolt pool (the settings of the first bolt listener that needs it apply).
    static func pool(of worker: Worker, settings: BoltSettings) -> MultiplexPool<BoltMultiplex> {
        if let p = worker.protocolScratch["bolt"] as? MultiplexPool<BoltMultiplex> { return p }
        var m = MultiplexSettings()
        m.maxFrameBytes = settings.maxFrameBytes
        m.connectionsPerHost = settings.connectionsPerHost
        m.heartbeatIntervalMS = settings.heartbeatIntervalMS
        m.heartbeatMaxMisses = settings.heartbeatMaxMisses
        m.maxConcurrentPerConnection = settings.upstreamMaxConcurrentRequests
        let p = MultiplexPool<BoltMultiplex>(settings: m, worker: worker)
        worker.protocolScratch["bolt"] = p
        worker.onClustersReplaced.append { [unowned p] in p.retire(clusters: $0) }
        return p
    }
}

/// A bolt call that may be sent again after a failed connect (docs/traffic-management.md#retries):
/// where it is going now, the hosts tried (a bit per host index below 64), and what the client
/// must get back (its own id, its deadline from the first try).
final class BoltRetry {
    var target: UpstreamTarget
    var tried: UInt64
    var tries = 0
    let originalID: UInt32
    var deadline: Int64 = .max
    /// The session counts the call in flight (from its first registration on a connection).
    var counted = false

    init(_ target: UpstreamTarget, _ frame: BoltFrame) {
        self.target = target
        tried = target.hostIndex < 64 ? 1 << UInt64(target.hostIndex) : 0
        originalID = frame.requestID
    }
}
