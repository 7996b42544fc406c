/// Why a proxied request failed, protocol-neutral: each protocol maps it to its own answer (an
/// HTTP status, a bolt response status), and every failure is counted and logged the same way.
public enum StreamError: Sendable {
    case noRoute
    case noHealthyHost(cluster: String)
    case connectFailed(host: String, reason: CloseReason)
    case connectTimeout(host: String)
    case upstreamReset(host: String)
    /// Upstream TLS: the handshake failed (the server's certificate, its name, our client
    /// certificate refused), with OpenSSL's reason.
    case upstreamTLSFailed(host: String, why: String)
    case upstreamMalformed(host: String, why: String)
    case timeout(host: String)
    case idleTimeout(host: String, ms: Int64)
    /// Every connection to the host already carries as many calls as it may.
    case overloaded(host: String)
    /// A `circuit_breakers` limit of the cluster is reached: refused before anything is sent.
    case overflow(cluster: String, limit: CircuitBreaker.Limit)

    /// Which side the failure came from (for logs, and for retry and outlier decisions later).
    public enum Source: Sendable { case local, upstream }

    public var source: Source {
        switch self {
        case .noRoute, .noHealthyHost, .overflow: return .local
        default: return .upstream
        }
    }

    /// Whether the upstream cannot have seen the request, so sending it elsewhere is safe.
    /// Whether the failure speaks against the host (outlier detection counts it): the host did
    /// not connect, answer in time, or answer well; not Tern's own refusals.
    public var blamesHost: Bool {
        switch self {
        case .connectFailed, .connectTimeout, .upstreamReset, .upstreamTLSFailed, .upstreamMalformed, .timeout, .idleTimeout: return true
        case .noRoute, .noHealthyHost, .overloaded, .overflow: return false
        }
    }

    public var retrySafe: Bool {
        switch self {
        case .noHealthyHost, .connectFailed, .connectTimeout, .overloaded, .overflow: return true
        // The server refuses before it reads any request (TLS 1.3 refuses a client certificate
        // after the client's first flight, but still before application data).
        case .upstreamTLSFailed: return true
        default: return false
        }
    }

    /// A stable machine-readable name (HTTP answers carry it as `x-tern-error`).
    /// The upstream connection never opened (refused, timed out, TLS handshake): nothing was sent.
    public var isConnectFailure: Bool {
        switch self {
        case .connectFailed, .connectTimeout, .upstreamTLSFailed: return true
        default: return false
        }
    }

    public var code: String {
        switch self {
        case .noRoute: return "no_route"
        case .noHealthyHost: return "no_healthy_upstream"
        case .connectFailed: return "upstream_connect_failed"
        case .connectTimeout: return "upstream_connect_timeout"
        case .upstreamReset: return "upstream_reset"
        case .upstreamTLSFailed: return "upstream_tls_handshake_failed"
        case .upstreamMalformed: return "upstream_malformed_response"
        case .timeout: return "upstream_request_timeout"
        case .idleTimeout: return "upstream_idle_timeout"
        case .overloaded: return "upstream_overloaded"
        case .overflow: return "upstream_overflow"
        }
    }

    /// A sentence for the log and for the body of a local answer.
    public var detail: String {
        switch self {
        case .noRoute: return "no route matched the request"
        case .noHealthyHost(let c): return "cluster \(c) has no host to send to"
        case .connectFailed(let h, let r): return "connect to \(h) failed: \(r)"
        case .connectTimeout(let h): return "connect to \(h) timed out"
        case .upstreamReset(let h): return "upstream \(h) closed the connection before a complete response"
        case .upstreamTLSFailed(let h, let why): return "TLS handshake with \(h) failed: \(why)"
        case .upstreamMalformed(let h, let why): return "upstream \(h) sent a malformed response: \(why)"
        case .timeout(let h): return "upstream \(h) did not answer within the route timeout"
        case .idleTimeout(let h, let ms): return "no byte moved between the client and upstream \(h) for \(ms) ms"
        case .overloaded(let h): return "every connection to \(h) has as many calls in flight as it may carry"
        case .overflow(let c, let limit): return "cluster \(c) is at its circuit breaker's \(limit.rawValue)"
        }
    }
}

extension StreamError {
    /// Why the upstream connection could not carry the request (access logs'
    /// upstream_transport_failure_reason); nil for failures that are not the transport's.
    public var transportFailure: String? {
        switch self {
        case .connectFailed, .connectTimeout, .upstreamTLSFailed, .upstreamReset: return detail
        default: return nil
        }
    }
}

extension ClusterStats {
    /// Counts a failure against the cluster it happened in.
    /// Tries again after a failure (`retry_policy`), and retries refused by the budget.
    public mutating func recordRetry() { retries += 1 }

    public mutating func record(_ error: StreamError) {
        switch error {
        case .connectFailed, .connectTimeout, .upstreamTLSFailed: connectFailures += 1
        case .timeout, .idleTimeout: timeouts += 1
        case .overflow: overflows += 1
        default: break
        }
    }

    /// Counts a response by its HTTP-style status class.
    public mutating func recordResponse(httpStatus: Int) {
        // By code too: index `code - 100`, allocated on the cluster's first HTTP answer.
        let slot = httpStatus &- 100
        if slot >= 0 && slot < 500 {
            if responsesByCode.isEmpty { responsesByCode = Array(repeating: 0, count: 500) }
            responsesByCode[slot] &+= 1
        }
        switch httpStatus {
        case 200..<300: responses2xx += 1
        case 400..<500: responses4xx += 1
        case 500..<600: responses5xx += 1
        default: break
        }
    }
}
