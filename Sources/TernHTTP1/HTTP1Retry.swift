import TernCore

/// Retries (the route's `retry_policy`, docs/traffic-management.md#retries): a failed try is
/// given up (its connection closed, its counts ended), the request waits out a back-off with its
/// client's reading paused, and goes to another host with the same bytes. Only what cannot have
/// reached the application twice is tried again:
/// - a connect failure (refused, timed out, TLS handshake): nothing was sent; what was queued
///   for that host (head and any body so far) goes to a host not tried yet, always;
/// - with `retry_on`, an idempotent request without a body (its head kept at dispatch) after a
///   reset or malformed answer before any answer byte, a 5xx answer (dropped unread), or its
///   per-try timeout (`retry_timeout`), on another host when there is one.
/// Budget: `ClusterRuntime.takeRetrySlot` (waiting retries per worker, and `max_retries`).
extension HTTP1Session {
    /// Called by `fail` (and for 5xx answers): true when the request will be tried again.
    func retryAfter(_ error: StreamError, status: Int = 0) -> Bool {
        guard triesLeft > 0, let target = currentTarget, cluster != nil, !downstreamGone, responseProgress != .complete else { return false }
        let policy = target.clusterRoute.retry
        let bytes: [UInt8]
        switch error {
        case .connectFailed, .connectTimeout, .upstreamTLSFailed:
            guard responseProgress == .awaitingHead, target.cluster.config.hosts.count > 1 else { return false }
            if let up = upstream {
                let out = up.outputBuffer
                guard out.readableBytes > 0 else { return false }
                bytes = Array(UnsafeBufferPointer(start: out.readPointer, count: out.readableBytes))
            } else if let sent = tryBytes {
                bytes = sent   // a retry whose connect failed at once
            } else if phase == .waitingForRequest, let input = downstream.input {
                // The first try's connect failed at once (a refused loopback port): its head is
                // still first in the input.
                let head = ByteBuffer(capacity: 4096)
                writeUpstreamHead(head, input, target.route, target.clusterRoute, target.host)
                bytes = Array(UnsafeBufferPointer(start: head.readPointer, count: head.readableBytes))
                input.consume(request.headLength)
                phase = .proxying
            } else {
                return false
            }
        case .upstreamReset, .upstreamMalformed, .timeout:
            guard policy.retryOn, let head = retryHeadCopy else { return false }
            if case .timeout = error {
                // Only a try's own timeout; the request's overall one ends it.
                guard policy.perTryTimeoutMS > 0, overallDeadline == 0 || worker.loop.nowMS < overallDeadline else { return false }
            }
            bytes = head
        default:
            return false
        }
        guard target.cluster.takeRetrySlot() else {
            logger.info("http1", "cluster \(target.cluster.config.name): retry budget spent; \(error.code) answered without a retry")
            return false
        }
        target.cluster.noteOutcome(host: upstreamHost, failed: true)
        target.cluster.stats.recordRetry()
        triesLeft -= 1
        retryBytes = bytes
        retryReason = error
        let n = policy.numRetries - triesLeft
        let wait = RetryPolicy.backoffMS(retry: n, &worker.random)
        logger.info("http1", "listener \(settings.listenerName): \(status > 0 ? "\(status) from" : error.code + " at") \(upstreamHostName); retry \(n) of \(policy.numRetries) in \(wait) ms")
        abandonUpstream()
        downstream.pauseReading()
        arm(&retryTimer, HTTP1Session.retryTag, at: worker.loop.nowMS + wait)
        return true
    }

    /// A 5xx answer's head was read (nothing of it sent to the client yet).
    func retryAfterServerError() -> Bool {
        guard retryHeadCopy != nil, let target = currentTarget, target.clusterRoute.retry.retryOn else { return false }
        return retryAfter(.upstreamReset(host: upstreamHostName), status: response.status)
    }

    /// The back-off is over: the next try, on a host not tried yet when there is one (always for
    /// a connect failure, which says nothing good about any host tried).
    func retryNow() {
        guard phase == .proxying, let target = currentTarget, let bytes = retryBytes else { return }
        retryBytes = nil
        target.cluster.releaseRetrySlot()
        let reason = retryReason ?? .noHealthyHost(cluster: target.cluster.config.name)
        if overallDeadline > 0 && worker.loop.nowMS >= overallDeadline {
            fail(.timeout(host: upstreamHostName), countedIn: target.cluster)
            return
        }
        var mustMove = false
        switch reason {
        case .connectFailed, .connectTimeout, .upstreamTLSFailed: mustMove = true
        default: break
        }
        let context = LoadBalancerContext(downstream: downstream)
        var host: Int?
        for _ in 0..<8 {
            guard let h = target.cluster.chooseHost(target.subset, context) else { break }
            if h >= 64 || triedHosts & (1 << UInt64(h)) == 0 { host = h; break }
        }
        if host == nil && !mustMove { host = target.cluster.chooseHost(target.subset, context) }
        guard let h = host else {
            fail(reason, countedIn: target.cluster)
            return
        }
        if h < 64 { triedHosts |= 1 << UInt64(h) }
        let next = target.on(host: h)
        currentTarget = next
        tryBytes = bytes
        defer { tryBytes = nil }
        guard let connection = openExchange(next, next.host) else { return }
        connection.outputBuffer.write(bytes)
        armTryDeadline(next)
        if !requestBodyDone {
            downstream.resumeReading()
            forwardRequestBody()
        } else {
            connection.flush()
        }
    }
}
