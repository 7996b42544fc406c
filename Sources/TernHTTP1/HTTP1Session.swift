import TernCore

extension StreamError {
    /// The status Tern answers an HTTP client with when this failure ends its request.
    var httpStatus: Int {
        switch self {
        case .noRoute: return 404
        case .noHealthyHost, .overloaded, .overflow: return 503
        case .connectFailed, .upstreamReset, .upstreamMalformed, .upstreamTLSFailed: return 502
        case .connectTimeout, .timeout, .idleTimeout: return 504
        }
    }
}

/// The request head viewed by the router and the stream filters, in place over the input buffer.
struct RequestView: StreamRequest {
    let base: UnsafePointer<UInt8>
    let head: HTTPHead

    func withMethod<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { body(base + head.methodStart, head.methodLength) }

    var contentLength: Int64? {
        switch head.framing {
        case .contentLength(let n): return n
        case .chunked: return nil
        case .none, .untilClose: return 0
        }
    }

    func withPath<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        let (s, n) = pathRange()
        return body(base + s, n)
    }

    func withQuery<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        // The target is path, then "?query" when it has one.
        let t = base + head.targetStart
        let start = head.pathLength + 1
        guard head.targetLength > head.pathLength, t[head.pathLength] == UInt8(ascii: "?") else { return body(t, 0) }
        return body(t + start, head.targetLength - start)
    }

    func pathRange() -> (Int, Int) {
        let t = base + head.targetStart
        if head.targetLength > 0 && t[0] != UInt8(ascii: "/") {
            // absolute-form: skip "scheme://authority"
            var i = 0
            while i + 2 < head.pathLength && !(t[i] == 58 && t[i + 1] == 47 && t[i + 2] == 47) { i += 1 }
            i += 3
            while i < head.pathLength && t[i] != 47 { i += 1 }
            if i < head.pathLength { return (head.targetStart + i, head.pathLength - i) }
        }
        return (head.targetStart, head.pathLength)
    }

    func withHost<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        guard head.hostIndex >= 0 else { return body(base, 0) }
        let f = head.fields[head.hostIndex]
        let p = base + Int(f.valueStart)
        var n = Int(f.valueLength)
        if n > 0 && p[0] != UInt8(ascii: "[") {
            var i = n - 1
            while i > 0 && p[i] >= 48 && p[i] <= 57 { i -= 1 }
            if p[i] == 58 { n = i }
        }
        return body(p, n)
    }

    func withHeader<R>(lowercasedName: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R? {
        for f in head.fields where Bytes.equalsIgnoringCase(base + Int(f.nameStart), Int(f.nameLength), lowercasedName) {
            return body(base + Int(f.valueStart), Int(f.valueLength))
        }
        return nil
    }
}

/// One downstream HTTP/1.1 connection and, while a request is in flight, its upstream exchange.
/// Requests are handled one at a time; pipelined requests wait in the input buffer, so responses
/// go back in order. Bodies stream in both directions with watermark back-pressure.
final class HTTP1Session: ConnectionDelegate, DownstreamSession, TimerTarget {
    /// The connection's phase. Transitions (each in one function):
    /// - waitingForRequest → proxying: a head parsed and routed to a host (`dispatch`).
    /// - waitingForRequest → waitingForRequest: a local answer on a kept connection
    ///   (`afterLocalResponse` → `continueAfterAnswer`, which serves buffered requests next).
    /// - proxying → waitingForRequest: the response is complete and the request body sent
    ///   (`finishExchange` → `continueAfterAnswer`), or a failure answered locally (`fail`).
    /// - any → closed: `closeWhenAnswered` (the last answer is flushed, then the socket closes;
    ///   the idle timer lets go of a client that takes none of it) or `closeAll` (at once).
    /// - waitingForRequest → delayed: a stream filter (fault) holds the parsed request on a timer;
    ///   its head stays in the input and reading pauses. delayed → waitingForRequest when the
    ///   timer fires (`resumeDelayed`: the head is parsed again and the filters carry on).
    /// - proxying with the client gone (`downstreamGone`): the exchange finishes into a sink so
    ///   the upstream connection stays warm, bounded by the route and idle timeouts.
    /// Within proxying, `requestBody` and `responseProgress` say how far each side is.
    enum Phase { case waitingForRequest, proxying, delayed, closed }

    let downstream: Connection
    let worker: Worker
    let forwarder: Forwarder
    var settings: ProxySettings { _read { yield forwarder.settings } }
    let limits: HTTPLimits
    var phase = Phase.waitingForRequest
    var draining = false
    /// The client sent its FIN: requests already buffered are answered, then the connection closes.
    var clientFinished = false
    /// Set while `processDownstream` runs, so an answer finished inside it does not re-enter it.
    var inDownstreamLoop = false

    // Heads are parsed and forwarded within one call, so one pair per worker serves every session.
    let scratch: HTTP1Scratch
    var request: HTTPHead { scratch.request }
    var response: HTTPHead { scratch.response }

    // request side
    var requestScanned = 0
    /// How much of the request body is still to be sent upstream.
    enum RequestBody { case complete, length(remaining: Int64), chunked }
    var requestBody = RequestBody.complete
    var requestBodyDone: Bool { if case .complete = requestBody { return true } else { return false } }
    var requestBodyTotal: Int64 = 0
    var requestChunked = ChunkedDecoder()
    var requestLastChunkWritten = false
    var requestMethod = HTTPHead.Method.other
    var clientMinorVersion = 1
    var closeAfterResponse = false

    // upstream side
    var upstream: Connection?
    var upstreamHostName = ""
    var upstreamServed = 0
    var cluster: ClusterRuntime?
    /// The host of the exchange in flight (its cluster host index), for the per-host counts.
    var upstreamHost = 0
    /// The exchange's cluster index (send-side stream filters key their counts by it).
    var upstreamClusterIndex = 0
    /// `ClusterRuntime.requestStarted`'s stamp for that exchange.
    var upstreamStartedUS: Int64 = 0
    var responseMutations = HeaderMutations()
    var responseScanned = 0
    var upstreamKeepAlive = false
    /// How far the upstream's answer to the request in flight has come.
    var responseProgress = ResponseProgress.awaitingHead
    enum ResponseProgress { case awaitingHead, streaming, complete }
    var responseFraming = BodyFraming.none
    var responseBodyRemaining: Int64 = 0
    var responseChunked = ChunkedDecoder()
    var responseToClientChunked = false
    var responseLastChunkWritten = false
    /// Body bytes of a chunked or close-delimited response passed on (access logs' bytes_sent).
    var responseBodyStreamed: Int64 = 0
    /// The request's access-log record while the listener has access logs (made on first use).
    var accessRecord: AccessLogRecord?
    /// Copies of the request in flight (`mirror` filter) still owed body bytes; empty otherwise.
    var mirrors: [HTTP1Mirror] = []
    /// A broadcast request (`mirror` with `broadcast`) is streaming its body to its copies only.
    var broadcasting = false

    // timers
    var lastActivityMS: Int64
    // Created on first use: an idle keep-alive connection carries only the idle timer.
    var routeTimer: LoopTimer?
    /// When the exchange in flight times out (0: none in flight).
    var routeDeadline: Int64 = 0
    /// When the request was queued for upstream (loop clock), for the cluster's response times.
    var upstreamStartMS: Int64 = 0
    var idleTimer: LoopTimer?
    /// A request a stream filter delays (phase `delayed`): where its filters resume.
    var delayedRequest: FilterResumePoint?
    var delayTimer: LoopTimer?
    static let routeTag = 1, idleTag = 3, delayTag = 4, lingerTag = 5, retryTag = 6

    // retries (HTTP1Retry.swift)
    /// The request's routing decision (its host is the current try's).
    var currentTarget: UpstreamTarget?
    var triesLeft = 0
    /// Hosts tried for this request (bit = host index; hosts past 63 are not remembered).
    var triedHosts: UInt64 = 0
    /// The head as written upstream, for a retry of an idempotent request without a body.
    var retryHeadCopy: [UInt8]?
    /// What the next try sends (set while a retry waits out its back-off).
    var retryBytes: [UInt8]?
    var retryTimer: LoopTimer?
    /// When the whole request times out, across its tries (0: never).
    var overallDeadline: Int64 = 0
    /// The failure a waiting retry answers if no host is left for it.
    var retryReason: StreamError?
    /// What the try being opened sends (a retry), while its connection is made.
    var tryBytes: [UInt8]?

    init(connection: Connection, forwarder: Forwarder) {
        downstream = connection
        let worker = forwarder.worker
        self.worker = worker
        self.forwarder = forwarder
        let settings = forwarder.settings
        limits = HTTPLimits(maxHeadBytes: settings.limits.maxHeadBytes, maxHeaderCount: settings.limits.maxHeaderCount)
        scratch = HTTP1Scratch.of(worker)
        lastActivityMS = worker.loop.nowMS
        armIdleTimer()
    }

    /// When the first byte of a request head arrived (0: none pending).
    var headStartedMS: Int64 = 0

    /// When the connection has been idle too long, in every phase: waiting for a request, the
    /// idle deadline (or the header deadline once a head began); proxying, no byte moved on either
    /// side for the idle timeout (while the upstream owes its answer and a route timeout is set,
    /// that timeout decides); closing, the client took none of the remaining output.
    func idleDeadline() -> Int64? {
        let idle = settings.idleTimeoutMS
        switch phase {
        case .waitingForRequest:
            // A head that started must finish within the header timeout, and may not pause for
            // longer than the idle timeout either.
            var quietUntil: Int64? = idle > 0 ? lastActivityMS + idle : nil
            if draining && headStartedMS == 0 {
                quietUntil = min(quietUntil ?? Int64.max, max(worker.drainStartedMS, lastActivityMS) + Worker.drainIdleGraceMS)
            }
            guard headStartedMS > 0 && settings.headerTimeoutMS > 0 else { return quietUntil }
            return min(headStartedMS + settings.headerTimeoutMS, quietUntil ?? Int64.max)
        case .proxying:
            guard idle > 0 else { return nil }
            var last = downstreamGone ? 0 : downstream.lastProgressMS
            if let up = upstream { last = max(last, up.lastProgressMS) }
            if responseProgress == .awaitingHead && routeDeadline > 0 { return max(last + idle, routeDeadline + 1) }
            return last + idle
        case .delayed:
            return nil   // the delay timer ends this phase
        case .closed:
            guard idle > 0, !downstreamGone, downstream.state == .open else { return nil }
            return downstream.lastProgressMS + idle
        }
    }

    /// The idle timer is lazy: activity only moves timestamps, and the timer re-arms itself for
    /// the remaining time when it fires early.
    func armIdleTimer() {
        guard let deadline = idleDeadline() else { return }
        if let t = idleTimer, t.isArmed, t.deadline <= deadline { return }
        arm(&idleTimer, HTTP1Session.idleTag, at: deadline)
    }

    deinit {
        // Timers hold their target unowned: none may outlive the session.
        cancel(routeTimer)
        cancel(idleTimer)
        cancel(delayTimer)
        cancel(lingerTimer)
        cancel(retryTimer)
        if retryBytes != nil, let t = currentTarget { t.cluster.releaseRetrySlot() }
    }

    func arm(_ timer: inout LoopTimer?, _ tag: Int, at deadline: Int64) {
        if timer == nil { timer = LoopTimer(target: self, tag: tag) }
        worker.loop.timers.arm(timer!, at: deadline)
    }

    func cancel(_ timer: LoopTimer?) {
        if let timer { worker.loop.timers.cancel(timer) }
    }

    var logger: Logger { worker.logger }

    // MARK: downstream input

    func connectionReadable(_ connection: Connection, eof: Bool) {
        if connection === downstream {
            lastActivityMS = worker.loop.nowMS
            processDownstream(eof: eof)
        } else if connection === upstream {
            processUpstream(eof: eof)
        }
    }

    func processDownstream(eof: Bool) {
        if eof { clientFinished = true }
        let outer = inDownstreamLoop
        inDownstreamLoop = true
        defer { inDownstreamLoop = outer }
        while true {
            switch phase {
            case .closed:
                if lingering {
                    downstream.input?.clear()
                    if eof { downstream.close() }
                }
                return
            case .waitingForRequest:
                guard let input = downstream.input, input.readableBytes > 0 else {
                    if clientFinished { closeWhenAnswered() } else { downstream.resumeReading() }
                    return
                }
                // Answers the client has not taken stop the reading, whoever wrote them (a client
                // pipelining requests Tern answers itself must not grow memory); the write drain resumes.
                if downstream.exceedsHighWatermark() { downstream.pauseReading(); return }
                switch HTTPParser.parseRequest(input.readPointer, input.readableBytes, limits: limits, head: request, scanned: &requestScanned) {
                case .needMore:
                    if clientFinished { closeWhenAnswered(); return }
                    if headStartedMS == 0 { headStartedMS = worker.loop.nowMS; armIdleTimer() }
                    downstream.resumeReading()
                    return
                case .error(let e):
                    logger.error("http1", "listener \(settings.listenerName): \(e.status) \(e.reason); closing client connection")
                    if settings.accessLogs != nil { beginAccessRecord(nil) }
                    sendLocalResponse(status: e.status, body: "tern: \(e.reason)\n", code: "bad_request", close: true)
                    return
                case .complete:
                    headStartedMS = 0
                    startRequest(input)
                }
            case .proxying:
                if !requestBodyDone {
                    forwardRequestBody()
                    if phase == .proxying && !requestBodyDone {
                        if clientFinished {
                            logger.error("http1", "client closed mid-request body")
                            closeAll()
                        }
                        return
                    }
                    continue   // the body is whole (or the exchange ended): look at what follows it
                }
                // The request is whole: pipelined bytes (and a FIN) wait until this answer is out.
                downstream.pauseReading()
                return
            case .delayed:
                downstream.pauseReading()
                return
            }
        }
    }

    /// After any answer, proxied or local, on a connection that stays open: serve the requests
    /// already buffered, then read on. Every exchange ends here, so no error leaves reading paused.
    func continueAfterAnswer() {
        phase = .waitingForRequest
        lastActivityMS = worker.loop.nowMS
        armIdleTimer()
        if !inDownstreamLoop { processDownstream(eof: false) }
    }

    /// The client finished sending: close once what it is owed has been written.
    func closeWhenAnswered() {
        phase = .closed
        abandonUpstream()
        if !requestBodyDone && !clientFinished && downstream.state == .open {
            // Bytes of a refused body may still be on the way: closing with them unread would
            // reset the connection, which can destroy the answer before the client reads it. So
            // the answer goes out with a FIN, and what still comes is read and dropped until the
            // client closes (or for at most `lingerMS`).
            lingering = true
            downstream.input?.clear()
            downstream.shutdownWriteWhenFlushed()
            downstream.resumeReading()
            arm(&lingerTimer, HTTP1Session.lingerTag, at: worker.loop.nowMS + HTTP1Session.lingerMS)
            return
        }
        downstream.closeWhenFlushed()
    }

    /// Answered and closing, reading only to drop a refused body (`closeWhenAnswered`).
    var lingering = false
    var lingerTimer: LoopTimer?
    static let lingerMS: Int64 = 2_000

    func startRequest(_ input: ByteBuffer) {
        // Nothing of the previous exchange's response may decide how this request fails.
        responseProgress = .awaitingHead
        requestMethod = request.method
        clientMinorVersion = request.versionMinor
        closeAfterResponse = !request.keepAlive || draining
        requestBodyTotal = 0
        if settings.accessLogs != nil { beginAccessRecord(RequestView(base: UnsafePointer(input.readPointer), head: request)) }
        switch request.framing {
        case .none: requestBody = .complete
        case .contentLength(let n):
            requestBody = n == 0 ? .complete : .length(remaining: n)
            if settings.limits.maxBodyBytes >= 0 && n > settings.limits.maxBodyBytes {
                logger.error("http1", "request body of \(n) bytes exceeds the limit of \(settings.limits.maxBodyBytes)")
                sendLocalResponse(status: 413, body: "tern: request body larger than \(settings.limits.maxBodyBytes) bytes\n", code: "body_too_large", close: true)
                return
            }
        case .chunked:
            requestBody = .chunked; requestChunked.reset(); requestLastChunkWritten = false
        case .untilClose: requestBody = .complete
        }
        let view = RequestView(base: UnsafePointer(input.readPointer), head: request)
        if let filters = forwarder.filters {
            filterAndDispatch(filters, view, input, resuming: nil)
            return
        }
        // The same as `act(on:)`, written out: passing the decision on cost 48 instructions per
        // request (callgrind), more than the rest of the hook.
        switch forwarder.decide(view, from: downstream) {
        case .upstream(let target): dispatch(target, input)
        case .fail(let error, let failedCluster): fail(error, countedIn: failedCluster)
        case .routeAnswer(let route): answerFromRoute(route, view, input)
        }
    }

    @inline(__always)
    func act(on decision: ForwardDecision, _ view: RequestView, _ input: ByteBuffer) {
        switch decision {
        case .upstream(let target):
            dispatch(target, input)
        case .fail(let error, let failedCluster):
            fail(error, countedIn: failedCluster)
        case .routeAnswer(let route):
            answerFromRoute(route, view, input)
        }
    }

    // MARK: stream filters

    /// The request through the listener's stream filters and the router; `resuming`: where a
    /// delay stopped it.
    func filterAndDispatch(_ filters: StreamFilterChain, _ view: RequestView, _ input: ByteBuffer, resuming: FilterResumePoint?) {
        switch forwarder.decide(view, from: downstream, through: filters, resuming: resuming) {
        case .forward(let decision):
            let stripped = filters.plan.strippedRequestHeaders
            if !stripped.isEmpty { dropRequestHeaders(stripped, view.base) }
            if filters.plan.mirror != nil, case .upstream(let target) = decision,
               let copies = forwarder.mirrorCopies(for: target, through: filters) {
                startMirrors(copies, target, input)
                if copies.broadcast { return }
            }
            act(on: decision, view, input)
        case .answer(let answer, let cluster):
            forwarder.filtered(answer, cluster: cluster, protocolName: "http1", reply: String(answer.status))
            sendLocalResponse(status: answer.status, body: answer.body, code: answer.code, close: false, headers: answer.headers)
        case .delay(let ms, let resume):
            delayedRequest = resume
            phase = .delayed
            downstream.pauseReading()
            arm(&delayTimer, HTTP1Session.delayTag, at: worker.loop.nowMS + ms)
        }
    }

    /// Marks the request's fields named in `names` (lowercased) as dropped, so the head written
    /// upstream leaves them out (`jwt_authn`'s `forward: false`).
    func dropRequestHeaders(_ names: [[UInt8]], _ base: UnsafePointer<UInt8>) {
        for i in request.fields.indices where !request.fields[i].dropped {
            let f = request.fields[i]
            for name in names where Bytes.equalsIgnoringCase(base + Int(f.nameStart), Int(f.nameLength), name) {
                request.fields[i].dropped = true
                break
            }
        }
    }

    /// The delay is over: the head (still first in the input; the per-worker scratch served other
    /// sessions meanwhile) is parsed again and the filters go on from where they stopped.
    func resumeDelayed() {
        guard phase == .delayed, let delayed = delayedRequest, let filters = forwarder.filters, let input = downstream.input else { return }
        delayedRequest = nil
        phase = .waitingForRequest
        requestScanned = 0
        guard case .complete = HTTPParser.parseRequest(input.readPointer, input.readableBytes, limits: limits, head: request, scanned: &requestScanned) else {
            closeAll()
            return
        }
        filterAndDispatch(filters, RequestView(base: UnsafePointer(input.readPointer), head: request), input, resuming: delayed)
        if phase == .proxying && !requestBodyDone { downstream.resumeReading() }
    }

    func answerFromRoute(_ route: Route, _ view: RequestView, _ input: ByteBuffer) {
        switch route.action {
        case .direct(let status, let body, let headers):
            input.consume(request.headLength)
            sendDirect(status: status, body: body, headers: headers)
        case .redirect(let r):
            let location = redirectLocation(r, view)
            input.consume(request.headLength)
            let out = downstream.outputBuffer
            writeStatusLine(out, r.status)
            out.write("location: "); out.write(string: location); out.write("\r\ncontent-length: 0\r\n")
            finishLocalHead(out)
            afterLocalResponse()
        case .cluster:
            break   // the forwarder sends these upstream
        }
    }

    func redirectLocation(_ r: RedirectRoute, _ view: RequestView) -> String {
        let scheme = r.scheme ?? "http"
        let host = r.host ?? view.withHost { Bytes.string($0, $1) }
        let path: String
        if let p = r.path { path = p } else {
            path = Bytes.string(view.base + request.targetStart, request.targetLength)
        }
        return "\(scheme)://\(host)\(path)"
    }

    func dispatch(_ target: UpstreamTarget, _ input: ByteBuffer) {
        // A fresh request: its tries start here (retries go through `retryNow`). A request that
        // can never be retried (one host, no retry_on) keeps no retry state.
        retryHeadCopy = nil   // never another request's head
        if target.clusterRoute.retry.retryOn || target.cluster.config.hosts.count > 1 {
            currentTarget = target
            triesLeft = target.clusterRoute.retry.numRetries
            triedHosts = target.hostIndex < 64 ? 1 << UInt64(target.hostIndex) : 0
        } else {
            triesLeft = 0
        }
        overallDeadline = target.timeoutMS > 0 ? worker.loop.nowMS + target.timeoutMS : 0
        let host = target.host
        guard let connection = openExchange(target, host) else { return }
        let out = connection.outputBuffer
        let mark = out.readableBytes
        writeUpstreamHead(out, input, target.route, target.clusterRoute, host)
        // Bytes that can be sent again as they are: an idempotent request without a body.
        if target.clusterRoute.retry.retryOn && requestBodyDone && requestMethod.isIdempotent {
            retryHeadCopy = Array(UnsafeBufferPointer(start: out.readPointer + mark, count: out.readableBytes - mark))
        }
        input.consume(request.headLength)
        armTryDeadline(target)
        if request.expectContinue && !requestBodyDone {
            downstream.outputBuffer.write("HTTP/1.1 100 Continue\r\n\r\n")
            downstream.flush()
        }
        if !requestBodyDone { forwardRequestBody() } else { connection.flush() }
    }

    /// The route timeout for this try: the request's overall deadline, or sooner the route's
    /// `retry_timeout` for each try.
    func armTryDeadline(_ target: UpstreamTarget) {
        let perTry = target.clusterRoute.retry.perTryTimeoutMS
        var deadline = overallDeadline
        if perTry > 0 { deadline = deadline > 0 ? min(deadline, worker.loop.nowMS + perTry) : worker.loop.nowMS + perTry }
        guard deadline > 0 else { return }
        // Lazy: a timer already due earlier stays where it is and moves on when it fires, so
        // a keep-alive connection touches the timer heap about once per timeout, not per request.
        routeDeadline = deadline
        if !(routeTimer?.isArmed ?? false) || routeTimer!.deadline > routeDeadline {
            arm(&routeTimer, HTTP1Session.routeTag, at: routeDeadline)
        }
    }

    /// Takes a connection to the target's host (pooled or new) and makes it the exchange's;
    /// nil after answering the failure when none can be had.
    @inline(__always)
    func openExchange(_ target: UpstreamTarget, _ host: HostConfig) -> Connection? {
        let runtime = target.cluster
        let hostIndex = target.hostIndex
        cluster = runtime
        upstreamClusterIndex = target.clusterIndex
        upstreamHostName = host.address.description
        upstreamHost = hostIndex
        upstreamStartedUS = runtime.requestStarted(host: hostIndex)
        accessRecord?.sent(cluster: runtime, host: hostIndex, upstream: nil, nowUS: worker.loop.nowUS)
        let connection: Connection
        if let (idle, served) = runtime.pool.takeIdle(host: hostIndex) {
            connection = idle
            upstreamServed = served
            logger.debug("http1", "reusing pooled upstream connection to \(host.address)")
            runtime.stats.connectionsReused += 1
        } else {
            let fresh: Connection
            do {
                fresh = try runtime.pool.connect(host: hostIndex)
            } catch {
                switch error {
                case .failed: fail(.connectFailed(host: upstreamHostName, reason: .connectFailed(0)))
                case .overflow(let limit): fail(.overflow(cluster: runtime.config.name, limit: limit))
                }
                return nil
            }
            connection = fresh
            upstreamServed = 0
            logger.debug("http1", "new upstream connection to \(host.address)")
            runtime.stats.connectionsOpened += 1
        }
        connection.delegate = self
        upstream = connection
        accessRecord?.sent(on: connection)
        responseMutations = target.clusterRoute.responseHeaders
        responseProgress = .awaitingHead
        responseScanned = 0
        phase = .proxying
        upstreamStartMS = worker.loop.nowMS
        return connection
    }

    /// `closing`: the head says `Connection: close` (a mirror's copy, which is not pooled).
    func writeUpstreamHead(_ out: ByteBuffer, _ input: ByteBuffer, _ route: Route, _ cr: ClusterRoute, _ host: HostConfig, closing: Bool = false) {
        let base = UnsafePointer(input.readPointer)
        out.write(base + request.methodStart, count: request.methodLength)
        out.writeByte(32)
        let view = RequestView(base: base, head: request)
        let (pathStart, pathLength) = view.pathRange()
        if let rewrite = cr.prefixRewrite {
            var replaced = pathLength
            if case .prefix(let p) = route.path { replaced = min(p.count, pathLength) }
            out.write(rewrite)
            out.write(base + pathStart + replaced, count: request.targetStart + request.targetLength - pathStart - replaced)
        } else {
            out.write(base + pathStart, count: request.targetStart + request.targetLength - pathStart)
        }
        out.write(" HTTP/1.1\r\n")
        let mutations = cr.requestHeaders
        var wroteHost = false
        for (index, f) in request.fields.enumerated() where !f.dropped {
            let name = base + Int(f.nameStart)
            if !mutations.isEmpty && mutations.drops(name, Int(f.nameLength)) { continue }
            if index == request.hostIndex {
                wroteHost = true
                if let h = cr.hostRewrite {
                    out.write("Host: "); out.write(h); out.write("\r\n")
                    continue
                }
            }
            out.write(name, count: Int(f.valueStart + f.valueLength - f.nameStart))
            out.write("\r\n")
        }
        if !wroteHost {
            // A request without Host (HTTP/1.0) gets the host's name, or its address; a unix
            // socket path is no host name, so such a host is "localhost".
            out.write("Host: ")
            if let h = cr.hostRewrite { out.write(h) } else { out.write(string: !host.hostname.isEmpty ? host.hostname : host.address.isUnix ? "localhost" : host.address.description) }
            out.write("\r\n")
        }
        for a in mutations.add {
            out.write(a.name); out.write(": "); out.write(a.value); out.write("\r\n")
        }
        switch request.framing {
        case .contentLength(let n): out.write("Content-Length: "); out.writeDecimal(Int(n)); out.write("\r\n")
        case .chunked: out.write("Transfer-Encoding: chunked\r\n")
        default: break
        }
        if closing { out.write("Connection: close\r\n") }
        out.write("\r\n")
    }

    /// Moves request body bytes from the client's input to the upstream's output.
    /// Copies (`mirrors`) get the same bytes; a broadcast request has no upstream, only copies.
    func forwardRequestBody() {
        guard let input = downstream.input else { return }
        let up = upstream
        guard up != nil || broadcasting else { return }
        let out: ByteBuffer
        if let up { out = up.outputBuffer } else { scratch.discard.clear(); out = scratch.discard }
        let mark = out.readableBytes
        while !requestBodyDone && input.readableBytes > 0 {
            if case .length(let remaining) = requestBody {
                let take = Int(min(remaining, Int64(input.readableBytes)))
                out.write(input.readPointer, count: take)
                input.consume(take)
                requestBody = remaining == Int64(take) ? .complete : .length(remaining: remaining - Int64(take))
            } else {
                let (consumed, event) = requestChunked.next(input.readPointer, input.readableBytes)
                switch event {
                case .needMore:
                    input.consume(consumed)
                    if !mirrors.isEmpty { copyToMirrors(out, from: mark) }
                    up?.flush()
                    return
                case .data(let offset, let length):
                    requestBodyTotal += Int64(length)
                    if settings.limits.maxBodyBytes >= 0 && requestBodyTotal > settings.limits.maxBodyBytes {
                        logger.error("http1", "chunked request body exceeds the limit of \(settings.limits.maxBodyBytes) bytes")
                        refuseStreamedBody(status: 413, body: "tern: request body too large\n", code: "body_too_large", cluster: nil)
                        return
                    }
                    if let limit = forwarder.filters?.streamedBodyLimit, limit.exceeded(by: requestBodyTotal) {
                        refuseStreamedBody(status: limit.answer.status, body: limit.answer.body, code: limit.answer.code, cluster: cluster)
                        return
                    }
                    out.writeHex(length); out.write("\r\n")
                    out.write(input.readPointer + offset, count: length)
                    out.write("\r\n")
                case .trailer(let offset, let length):
                    if !requestLastChunkWritten { out.write("0\r\n"); requestLastChunkWritten = true }
                    out.write(input.readPointer + offset, count: length)
                case .end:
                    if !requestLastChunkWritten { out.write("0\r\n"); requestLastChunkWritten = true }
                    out.write("\r\n")
                    requestBody = .complete
                case .error(let why):
                    logger.error("http1", "malformed chunked request body: \(why)")
                    if responseProgress != .awaitingHead { closeAll(); return }
                    abandonUpstream()
                    sendLocalResponse(status: 400, body: "tern: \(why)\n", code: "bad_request", close: true)
                    return
                }
                input.consume(consumed)
            }
        }
        if !mirrors.isEmpty { copyToMirrors(out, from: mark) }
        guard let up else {
            if requestBodyDone && broadcasting { finishBroadcast() }
            return
        }
        up.flush()
        if phase == .proxying && up.state != .closed && up.exceedsHighWatermark() { downstream.pauseReading() }
        if requestBodyDone && phase == .proxying {
            // A response already complete before the body ended (early answer) finishes now.
            if responseProgress == .complete { finishExchange() }
        }
    }

    /// A body that streams without a length went over a limit after its head was sent upstream:
    /// that upstream exchange is reset (its connection closed, never pooled, so the server sees
    /// the request end early) and the client is answered with `connection: close`, unless part of
    /// a response already reached it, in which case it is closed.
    func refuseStreamedBody(status: Int, body: String, code: String, cluster counted: ClusterRuntime?) {
        if responseProgress != .awaitingHead { closeAll(); return }
        if counted != nil { forwarder.worker.logger.info("proxy", "listener \(settings.listenerName): http1 \(status) \(code) (stream filter, streamed body)") }
        counted?.stats.recordResponse(httpStatus: status)
        abandonUpstream()
        sendLocalResponse(status: status, body: body, code: code, close: true)
    }

    /// The client closed while its request was in flight; the response is read and dropped.
    var downstreamGone = false
    /// Keeps an orphaned session alive until its exchange ends (released in `endOrphan`).
    var orphanRetain: HTTP1Session?

    /// Whether draining the rest of the response is cheaper than a new upstream connection.
    var responseRemainderIsSmall: Bool {
        if responseProgress == .awaitingHead { return true }
        if case .contentLength = responseFraming { return responseBodyRemaining <= 64 * 1024 }
        return false
    }

    /// Where response bytes go: the client's output, or a per-worker sink once the client left.
    var responseOutput: ByteBuffer {
        if downstreamGone { scratch.discard.clear(); return scratch.discard }
        return downstream.outputBuffer
    }

    // MARK: upstream

    func connectionConnected(_ connection: Connection) {
        guard connection === upstream else { return }
        connection.flush()
    }

    func processUpstream(eof: Bool) {
        guard let up = upstream else { return }
        while phase == .proxying && upstream === up {
            if responseProgress == .awaitingHead {
                guard let input = up.input, input.readableBytes > 0 else {
                    if eof { fail(.upstreamReset(host: upstreamHostName)) }
                    return
                }
                switch HTTPParser.parseResponse(input.readPointer, input.readableBytes, limits: limits, head: response, requestMethod: requestMethod, scanned: &responseScanned) {
                case .needMore:
                    if eof { fail(.upstreamReset(host: upstreamHostName)) }
                    return
                case .error(let e):
                    fail(.upstreamMalformed(host: upstreamHostName, why: e.reason))
                    return
                case .complete:
                    if response.status < 200 {
                        // 1xx: Tern answered Expect itself; interim responses are not passed on.
                        input.consume(response.headLength)
                        continue
                    }
                    startResponse(input)
                }
            } else {
                forwardResponseBody(eof: eof)
                return
            }
        }
    }

    func startResponse(_ input: ByteBuffer) {
        if response.status >= 500 && retryHeadCopy != nil && retryAfterServerError() { return }
        responseProgress = .streaming
        upstreamKeepAlive = response.keepAlive
        let base = UnsafePointer(input.readPointer)
        let out = responseOutput
        responseFraming = response.framing
        responseToClientChunked = false
        responseLastChunkWritten = false
        out.write("HTTP/1.1 ")
        out.writeDecimal(response.status)
        out.writeByte(32)
        out.write(base + response.reasonStart, count: response.reasonLength)
        out.write("\r\n")
        for f in response.fields where !f.dropped {
            let name = base + Int(f.nameStart)
            if !responseMutations.isEmpty && responseMutations.drops(name, Int(f.nameLength)) { continue }
            out.write(name, count: Int(f.valueStart + f.valueLength - f.nameStart))
            out.write("\r\n")
        }
        for a in responseMutations.add {
            out.write(a.name); out.write(": "); out.write(a.value); out.write("\r\n")
        }
        switch response.framing {
        case .none:
            if response.bodilessContentLength >= 0 {
                out.write("Content-Length: "); out.writeDecimal(Int(response.bodilessContentLength)); out.write("\r\n")
            }
        case .contentLength(let n):
            responseBodyRemaining = n
            out.write("Content-Length: "); out.writeDecimal(Int(n)); out.write("\r\n")
        case .chunked, .untilClose:
            if response.framing == .chunked { responseChunked.reset() }
            if clientMinorVersion >= 1 {
                responseToClientChunked = true
                out.write("Transfer-Encoding: chunked\r\n")
            } else {
                closeAfterResponse = true
            }
        }
        if draining || !requestBodyDone { closeAfterResponse = true }
        if closeAfterResponse {
            out.write("Connection: close\r\n")
        } else if clientMinorVersion == 0 {
            out.write("Connection: keep-alive\r\n")
        }
        out.write("\r\n")
        input.consume(response.headLength)
        cluster?.stats.recordResponse(httpStatus: response.status)
        cluster?.noteOutcome(host: upstreamHost, failed: response.status >= 500)
        if let filters = forwarder.filters, filters.observesResponses, let c = cluster {
            filters.responded(StreamResponse(status: response.status, clusterIndex: upstreamClusterIndex, host: upstreamHost), cluster: c, logger: logger)
        }
        cluster?.stats.recordResponseTime(ms: worker.loop.nowMS - upstreamStartMS, host: upstreamHost)
        downstream.counters?.stats.recordResponse(httpStatus: response.status)
        if let record = accessRecord { noteResponse(record, base) }
        if case .none = response.framing { responseProgress = .complete }
        if case .contentLength(0) = response.framing { responseProgress = .complete }
        if responseProgress == .complete {
            maybeFinish()   // before the flush: see forwardResponseBody
            if downstream.state == .open { downstream.flush() }
        } else {
            forwardResponseBody(eof: false)
        }
    }

    /// Moves response body bytes from the upstream's input to the client's output.
    func forwardResponseBody(eof: Bool) {
        guard let up = upstream else { return }
        let out = responseOutput
        if let input = up.input {
            while responseProgress != .complete && input.readableBytes > 0 {
                switch responseFraming {
                case .contentLength:
                    if downstreamGone { out.clear() }
                    let take = Int(min(responseBodyRemaining, Int64(input.readableBytes)))
                    out.write(input.readPointer, count: take)
                    input.consume(take)
                    responseBodyRemaining -= Int64(take)
                    if responseBodyRemaining == 0 { responseProgress = .complete }
                case .untilClose:
                    if downstreamGone { out.clear() }
                    let n = input.readableBytes
                    if responseToClientChunked { out.writeHex(n); out.write("\r\n") }
                    responseBodyStreamed &+= Int64(n)
                    out.write(input.readPointer, count: n)
                    if responseToClientChunked { out.write("\r\n") }
                    input.consume(n)
                case .chunked:
                    if downstreamGone { out.clear() }
                    let (consumed, event) = responseChunked.next(input.readPointer, input.readableBytes)
                    switch event {
                    case .needMore:
                        input.consume(consumed)
                        downstream.flush()
                        if eof { truncatedResponse() }
                        return
                    case .data(let offset, let length):
                        responseBodyStreamed &+= Int64(length)
                        if responseToClientChunked { out.writeHex(length); out.write("\r\n") }
                        out.write(input.readPointer + offset, count: length)
                        if responseToClientChunked { out.write("\r\n") }
                    case .trailer(let offset, let length):
                        if responseToClientChunked {
                            if !responseLastChunkWritten { out.write("0\r\n"); responseLastChunkWritten = true }
                            out.write(input.readPointer + offset, count: length)
                        }
                    case .end:
                        if responseToClientChunked {
                            if !responseLastChunkWritten { out.write("0\r\n"); responseLastChunkWritten = true }
                            out.write("\r\n")
                        }
                        responseProgress = .complete
                    case .error(let why):
                        logger.error("http1", "upstream \(upstreamHostName) sent a malformed chunked body: \(why); closing both sides")
                        closeAll()
                        return
                    }
                    input.consume(consumed)
                case .none:
                    responseProgress = .complete
                }
            }
        }
        if responseProgress != .complete && eof {
            if case .untilClose = responseFraming {
                if responseToClientChunked { out.write("0\r\n\r\n") }
                responseProgress = .complete
            } else {
                truncatedResponse()
                return
            }
        }
        if responseProgress == .complete {
            // The exchange ends (its upstream connection parked, its circuit-breaker slots given
            // back) before the client can see the answer's last byte: a client that sends its next
            // request at once, to another worker, finds them free.
            maybeFinish()
            if downstream.state == .open { downstream.flush() }
            return
        }
        downstream.flush()
        if phase == .closed { return }
        if downstream.exceedsHighWatermark() { up.pauseReading() }
    }

    func truncatedResponse() {
        logger.error("http1", "upstream \(upstreamHostName) closed mid-response; closing client connection")
        closeAll()
    }

    func maybeFinish() {
        if requestBodyDone { finishExchange(); return }
        // The upstream answered before the whole body arrived: stop sending it, close after.
        closeAfterResponse = true
        finishExchange()
    }

    /// The response is complete: give the upstream connection back (or close it) and move on to
    /// the next request.
    func finishExchange() {
        routeDeadline = 0
        retryHeadCopy = nil
        if !mirrors.isEmpty { abortMirrors() }   // answered before its body ended: copies stay short
        if accessRecord != nil { logAccess() }
        if let c = cluster { c.requestEnded(host: upstreamHost, startedUS: upstreamStartedUS) }
        if let up = upstream {
            upstream = nil
            let reusable = upstreamKeepAlive && requestBodyDone && responseFraming != .untilClose && (up.input?.isEmpty ?? true)
            logger.debug("http1", "exchange done; upstream connection \(reusable ? "returned to the pool" : "closed")")
            if reusable, let c = cluster {
                up.resumeReading()
                c.pool.release(up, requestsServed: upstreamServed + 1)
            } else {
                up.delegate = nil
                up.close()
            }
        }
        cluster = nil
        if closeAfterResponse || downstreamGone {
            phase = .closed
            if downstreamGone { orphanRetain = nil } else { downstream.closeWhenFlushed() }
            return
        }
        continueAfterAnswer()
    }

    /// Drops the upstream exchange without a response (the client gets a local answer instead).
    func abandonUpstream() {
        routeDeadline = 0
        if !mirrors.isEmpty || broadcasting { abortMirrors() }
        if let c = cluster { c.requestEnded(host: upstreamHost, startedUS: upstreamStartedUS) }
        cluster = nil
        if let up = upstream {
            upstream = nil
            up.delegate = nil
            up.close()
        }
    }

    // MARK: failures and local responses

    /// `countedIn`: the cluster a failure before dispatch counts against (nothing is in flight
    /// there yet); otherwise the exchange's own cluster.
    func fail(_ error: StreamError, countedIn failedCluster: ClusterRuntime? = nil) {
        if failedCluster == nil && triesLeft > 0 && retryAfter(error) { return }
        if let record = accessRecord { record.flagged = true; record.failureReason = error.transportFailure }
        if downstreamGone {
            phase = .closed
            abandonUpstream()
            if accessRecord != nil { logAccess() }
            orphanRetain = nil
            return
        }
        let status = error.httpStatus
        let counted = failedCluster ?? cluster
        if error.blamesHost, let c = cluster {
            c.noteOutcome(host: upstreamHost, failed: true)
            if let filters = forwarder.filters, filters.observesResponses {
                filters.responded(StreamResponse(status: status, clusterIndex: upstreamClusterIndex, host: upstreamHost), cluster: c, logger: logger)
            }
        }
        forwarder.failed(error, cluster: counted, protocolName: "http1", answer: String(status))
        counted?.stats.recordResponse(httpStatus: status)
        if responseProgress != .awaitingHead {
            closeAll()
            return
        }
        abandonUpstream()
        let close = !requestBodyDone || closeAfterResponse
        sendLocalResponse(status: status, body: "tern: \(error.detail)\n", code: error.code, close: close)
    }

    func writeStatusLine(_ out: ByteBuffer, _ status: Int) {
        downstream.counters?.stats.recordResponse(httpStatus: status)
        accessRecord?.responseCode = status
        out.write("HTTP/1.1 ")
        out.writeDecimal(status)
        out.writeByte(32)
        out.write(string: StatusText.reason(status))
        out.write("\r\n")
    }

    func finishLocalHead(_ out: ByteBuffer) {
        if !requestBodyDone || draining { closeAfterResponse = true }
        if closeAfterResponse { out.write("connection: close\r\n") }
        else if clientMinorVersion == 0 { out.write("connection: keep-alive\r\n") }
        out.write("\r\n")
    }

    func sendLocalResponse(status: Int, body: String, code: String, close: Bool, headers: [HeaderToAdd] = []) {
        if close { closeAfterResponse = true }
        if phase == .waitingForRequest, let input = downstream.input {
            // The head was parsed (or is garbage): nothing of it is reused.
            if close { input.clear() } else { input.consume(min(request.headLength, input.readableBytes)) }
        }
        let out = downstream.outputBuffer
        writeStatusLine(out, status)
        out.write("content-type: text/plain\r\nx-tern-error: ")
        out.write(string: code)
        out.write("\r\n")
        for a in headers { out.write(a.name); out.write(": "); out.write(a.value); out.write("\r\n") }
        out.write("content-length: ")
        out.writeDecimal(body.utf8.count)
        out.write("\r\n")
        finishLocalHead(out)
        if requestMethod != .head { out.write(string: body) }
        if let record = accessRecord { record.flagged = true; record.bytesSent = Int64(requestMethod != .head ? body.utf8.count : 0) }
        afterLocalResponse()
    }

    func sendDirect(status: Int, body: [UInt8], headers: HeaderMutations) {
        let out = downstream.outputBuffer
        writeStatusLine(out, status)
        for a in headers.add { out.write(a.name); out.write(": "); out.write(a.value); out.write("\r\n") }
        out.write("content-length: ")
        out.writeDecimal(body.count)
        out.write("\r\n")
        finishLocalHead(out)
        if requestMethod != .head { out.write(body) }
        accessRecord?.bytesSent = Int64(requestMethod != .head ? body.count : 0)
        afterLocalResponse()
    }

    func afterLocalResponse() {
        if accessRecord != nil { logAccess() }
        downstream.flush()
        if closeAfterResponse {
            closeWhenAnswered()
        } else {
            continueAfterAnswer()
        }
    }

    func closeAll() {
        if accessRecord != nil { logAccess() }
        phase = .closed
        abandonUpstream()
        downstream.close()
    }

    // MARK: back-pressure, timers, close

    func connectionWriteDrained(_ connection: Connection) {
        if connection === downstream {
            if phase == .proxying { upstream?.resumeReading() }
            else if phase == .waitingForRequest && !inDownstreamLoop { processDownstream(eof: false) }
        } else if connection === upstream {
            downstream.resumeReading()
        }
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        if connection === downstream {
            worker.remove(fd: connection.fd)
            if phase == .proxying && upstream != nil && requestBodyDone && responseRemainderIsSmall {
                // The client left, but the upstream already has the whole request: let its
                // answer finish into the void and keep the warm connection (HAProxy does the
                // same). Closing it would turn every client abort into an upstream reconnect.
                downstreamGone = true
                closeAfterResponse = true
                orphanRetain = self   // nothing else holds the session once its client is gone
                logger.debug("http1", "client left with its request in flight; finishing the exchange to keep the upstream connection")
                return   // the idle timer stays: an upstream that never answers is let go with it
            }
            cancel(idleTimer)
            if accessRecord != nil { logAccess() }
            phase = .closed
            abandonUpstream()
        } else if connection === upstream {
            switch reason {
            case .connectTimeout:
                fail(.connectTimeout(host: upstreamHostName))
            case .connectFailed:
                fail(.connectFailed(host: upstreamHostName, reason: reason))
            case .handshakeFailed(let why):
                upstream = nil
                fail(.upstreamTLSFailed(host: upstreamHostName, why: why))
            default:
                upstream = nil
                fail(.upstreamReset(host: upstreamHostName))
            }
        }
    }

    func timerFired(_ timer: LoopTimer) {
        switch timer.tag {
        case HTTP1Session.delayTag:
            resumeDelayed()
        case HTTP1Session.retryTag:
            retryNow()
        case HTTP1Session.lingerTag:
            downstream.close()
        case HTTP1Session.routeTag:
            guard phase == .proxying, routeDeadline > 0 else { return }
            if routeDeadline <= worker.loop.nowMS {
                fail(.timeout(host: upstreamHostName))
            } else {
                arm(&routeTimer, HTTP1Session.routeTag, at: routeDeadline)
            }
        default:
            guard let deadline = idleDeadline() else { return }
            if deadline > worker.loop.nowMS {
                arm(&idleTimer, HTTP1Session.idleTag, at: deadline)   // activity moved it on
                return
            }
            switch phase {
            case .waitingForRequest where headStartedMS > 0:
                logger.error("http1", "listener \(settings.listenerName): request head not complete in time (header timeout \(settings.headerTimeoutMS) ms, idle timeout \(settings.idleTimeoutMS) ms); answering 408")
                sendLocalResponse(status: 408, body: "tern: request head not received in time\n", code: "request_header_timeout", close: true)
            case .waitingForRequest:
                logger.debug("http1", "closing idle client connection")
                closeAll()
            case .proxying:
                if downstreamGone {
                    logger.error("http1", "upstream \(upstreamHostName) sent nothing for \(settings.idleTimeoutMS) ms after its client left; closing it")
                    if accessRecord != nil { logAccess() }
                    phase = .closed
                    abandonUpstream()
                    orphanRetain = nil
                } else {
                    fail(.idleTimeout(host: upstreamHostName, ms: settings.idleTimeoutMS))
                }
            case .delayed:
                break
            case .closed:
                logger.error("http1", "listener \(settings.listenerName): client took no bytes for \(settings.idleTimeoutMS) ms; closing")
                downstream.close()
            }
        }
    }

    /// Drain (SIGTERM, hot upgrade): the request in flight, or the next one an idle connection
    /// sends within the grace, is answered with `Connection: close`; a connection still idle then
    /// is closed (see `Worker.drainIdleGraceMS`).
    func beginDrain() {
        // Not `closeAfterResponse`: a response whose head already went out without
        // `Connection: close` must not be followed by a close the client was not told of; every
        // head written from now on says close (the head writers read `draining`).
        draining = true
        if phase == .waitingForRequest { armIdleTimer() }
    }
}

/// Per-worker parse scratch for HTTP/1 sessions.
final class HTTP1Scratch {
    let request = HTTPHead()
    let response = HTTPHead()
    let discard = ByteBuffer(capacity: 16384)
    /// Every live `mirror` copy of this worker's HTTP/1 sessions (they outlive the requests they copy).
    var mirrors: [ObjectIdentifier: HTTP1Mirror] = [:]

    static func of(_ worker: Worker) -> HTTP1Scratch {
        if let s = worker.protocolScratch["http1"] as? HTTP1Scratch { return s }
        let s = HTTP1Scratch()
        worker.protocolScratch["http1"] = s
        return s
    }
}

// MARK: access log

extension HTTP1Session {
    /// A request head was read (or could not be: `view` nil for a 400): its record opens.
    func beginAccessRecord(_ view: RequestView?) {
        guard let plan = settings.accessLogs else { return }
        let record = accessRecord ?? AccessLogRecord()
        accessRecord = record
        record.begin(view, plan: plan, downstream: downstream, protocolName: "Http1",
                     traceHeader: AccessLogRecord.httpTraceHeader, nowUS: worker.loop.nowUS)
        if view != nil, case .contentLength(let n) = request.framing { record.bytesReceived = n }
        responseBodyStreamed = 0
    }

    /// The response head is in the input (at `base`): its time, status, headers and length.
    func noteResponse(_ record: AccessLogRecord, _ base: UnsafePointer<UInt8>) {
        record.responseUS = worker.loop.nowUS
        record.responseCode = response.status
        if case .contentLength(let n) = response.framing { record.bytesSent = n }
        guard let plan = settings.accessLogs, plan.captures.capturesResponse else { return }
        let head = response
        record.captureResponse(captures: plan.captures) { name, store in
            for f in head.fields where Bytes.equalsIgnoringCase(base + Int(f.nameStart), Int(f.nameLength), name) {
                store(base + Int(f.valueStart), Int(f.valueLength))
                return true
            }
            return false
        }
    }

    /// The request ended, however: its line goes to the worker's access-log buffers (once).
    func logAccess() {
        guard let record = accessRecord, record.isOpen else { return }
        record.bytesReceived &+= requestBodyTotal
        record.bytesSent &+= responseBodyStreamed
        responseBodyStreamed = 0
        forwarder.logAccess(record)
    }
}
