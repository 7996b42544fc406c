/// One listener's counters on one worker: plain integers bumped on that worker's thread only and
/// copied out through its `TaskQueue` when the admin API or the Prometheus sink asks (no atomics,
/// no locks on the hot path).
public struct ListenerStats: Sendable, Equatable {
    /// Connections that reached the listener's network filters (after TLS, when it terminates TLS).
    public var connectionsTotal = 0
    public var connectionsActive = 0
    /// Requests routed (HTTP/1 and bolt), whatever the answer.
    public var requests = 0
    /// HTTP/1 answers written to clients by status class (upstream's and Tern's own).
    public var responses1xx = 0, responses2xx = 0, responses3xx = 0, responses4xx = 0, responses5xx = 0
    /// The same answers by status code: index `code - 100` for codes 100-599 (4 KB, allocated
    /// once per listener per worker; copied by the worker only after a snapshot shared it).
    public var responsesByCode: [Int]
    /// Bolt answers written to callers: status SUCCESS, or any other status.
    public var boltResponsesSuccess = 0, boltResponsesFailed = 0
    /// Payload bytes read from and written to clients by Tern itself (after TLS decryption; bytes
    /// tcp_proxy moves with splice(2) never pass through Tern's buffers and are not counted).
    public var bytesIn = 0, bytesOut = 0

    public init() { responsesByCode = Array(repeating: 0, count: 500) }

    @inline(__always) public mutating func recordResponse(httpStatus: Int) {
        let slot = httpStatus &- 100
        if slot >= 0 && slot < responsesByCode.count { responsesByCode[slot] &+= 1 }
        switch httpStatus {
        case ..<200: responses1xx &+= 1
        case ..<300: responses2xx &+= 1
        case ..<400: responses3xx &+= 1
        case ..<500: responses4xx &+= 1
        default: responses5xx &+= 1
        }
    }

    @inline(__always) public mutating func recordResponse(boltStatus: UInt16) {
        if boltStatus == 0 { boltResponsesSuccess &+= 1 } else { boltResponsesFailed &+= 1 }
    }

    /// Sums another worker's copy into this one.
    public mutating func add(_ o: ListenerStats) {
        connectionsTotal += o.connectionsTotal; connectionsActive += o.connectionsActive
        requests += o.requests
        responses1xx += o.responses1xx; responses2xx += o.responses2xx; responses3xx += o.responses3xx
        responses4xx += o.responses4xx; responses5xx += o.responses5xx
        for i in o.responsesByCode.indices where o.responsesByCode[i] != 0 && i < responsesByCode.count { responsesByCode[i] += o.responsesByCode[i] }
        boltResponsesSuccess += o.boltResponsesSuccess; boltResponsesFailed += o.boltResponsesFailed
        bytesIn += o.bytesIn; bytesOut += o.bytesOut
    }
}

/// A worker's counters for one listener, shared by reference with that listener's chain and its
/// accepted connections (all on the worker's thread).
public final class ListenerCounters {
    public var stats = ListenerStats()
    public init() {}
}
