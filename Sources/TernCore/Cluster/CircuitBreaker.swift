import Synchronization

/// A cluster's `circuit_breakers` (MOSN's first threshold entry): limits that hold for the whole
/// process, so every worker counts in the same atomic words. A request or connection over a limit
/// is refused at once (HTTP 503, bolt SERVER_THREADPOOL_BUSY, `upstream_overflow`) instead of
/// queueing behind a sick upstream. 0 means no limit, as in MOSN; a cluster with no limit at all
/// has no breaker, so its requests pay one nil check.
///
/// What is counted:
/// - `max_requests`: exchanges with the cluster's hosts in flight (`ClusterRuntime.requestStarted`
///   to `requestEnded`), the cluster as a whole;
/// - `max_connections`: open upstream connections per host (as MOSN's per-host pools);
/// - `max_pending_requests`: upstream connections still being opened for a waiting request, the
///   cluster as a whole (Tern queues a request nowhere else; MOSN reads the key and ignores it);
/// - `max_retries`: retries waiting for their next try, the cluster as a whole.
public final class CircuitBreaker: Sendable {
    public let maxRequests: Int
    public let maxConnectionsPerHost: Int
    public let maxPendingRequests: Int
    public let maxRetries: Int

    private let requests = Atomic<Int>(0)
    private let retries = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let hostConnections: [Counter]

    final class Counter: Sendable { let value = Atomic<Int>(0) }

    /// Which limit refused (for the log line and `x-tern-error` detail).
    public enum Limit: String, Sendable { case maxRequests = "max_requests", maxConnections = "max_connections", maxPendingRequests = "max_pending_requests" }

    public init(maxRequests: Int, maxConnectionsPerHost: Int, maxPendingRequests: Int, maxRetries: Int, hostCount: Int) {
        self.maxRequests = maxRequests
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxPendingRequests = maxPendingRequests
        self.maxRetries = maxRetries
        hostConnections = maxConnectionsPerHost > 0 ? (0..<hostCount).map { _ in Counter() } : []
    }

    /// Whether another request may start now (read once per request, before a host is chosen).
    @inline(__always)
    public var admitsRequest: Bool { maxRequests == 0 || requests.load(ordering: .relaxed) < maxRequests }

    @usableFromInline @inline(__always)
    func requestStarted() { if maxRequests > 0 { requests.wrappingAdd(1, ordering: .relaxed) } }
    @usableFromInline @inline(__always)
    func requestEnded() { if maxRequests > 0 { requests.wrappingSubtract(1, ordering: .relaxed) } }

    /// Takes a connection slot for `host` and, when `pendingRequest`, a pending slot; nil when both
    /// were free (the caller holds them until `release`), else the limit that refused.
    func acquireConnection(host: Int, pendingRequest: Bool) -> Limit? {
        if maxConnectionsPerHost > 0 {
            let counter = hostConnections[host]
            if counter.value.wrappingAdd(1, ordering: .relaxed).newValue > maxConnectionsPerHost {
                counter.value.wrappingSubtract(1, ordering: .relaxed)
                return .maxConnections
            }
        }
        if pendingRequest && maxPendingRequests > 0 {
            if pending.wrappingAdd(1, ordering: .relaxed).newValue > maxPendingRequests {
                pending.wrappingSubtract(1, ordering: .relaxed)
                if maxConnectionsPerHost > 0 { hostConnections[host].value.wrappingSubtract(1, ordering: .relaxed) }
                return .maxPendingRequests
            }
        }
        return nil
    }

    func releaseConnection(host: Int) {
        if maxConnectionsPerHost > 0 { hostConnections[host].value.wrappingSubtract(1, ordering: .relaxed) }
    }

    func releasePending() {
        if maxPendingRequests > 0 { pending.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Takes a `max_retries` slot (0: no limit); false when all are taken.
    func retryStarted() -> Bool {
        guard maxRetries > 0 else { return true }
        if retries.wrappingAdd(1, ordering: .relaxed).newValue > maxRetries {
            retries.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }
    func retryEnded() { if maxRetries > 0 { retries.wrappingSubtract(1, ordering: .relaxed) } }

    /// The counts now (admin API, tests).
    public var activeRequests: Int { requests.load(ordering: .relaxed) }
    public var pendingRequests: Int { pending.load(ordering: .relaxed) }
    public func openConnections(host: Int) -> Int { maxConnectionsPerHost > 0 ? hostConnections[host].value.load(ordering: .relaxed) : 0 }
}
