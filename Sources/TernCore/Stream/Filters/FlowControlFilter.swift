import Glibc
import Synchronization

/// MOSN's `flowControlFilter` (Sentinel flow rules): requests whose key (`limit_key_type`: the
/// path, the query string or path?query) equals a rule's `resource` are counted, and beyond
/// `threshold` requests a second they are answered with the configured action. Runs after
/// routing, as MOSN's.
///
/// The count holds across all workers: each rule has one atomic word shared by every worker's
/// chain, updated with compare-and-swap, no lock. Windows are fixed one-second windows of the
/// monotonic clock (Sentinel slides a window of buckets): at most `threshold` requests pass in any
/// such second, but up to twice that can pass within one second that straddles two windows.
public final class FlowControlFilter: Sendable {
    /// What a request is matched by, MOSN's `limit_key_type`.
    public enum KeyType: Sendable {
        /// The path without the query (bolt: the `service` header).
        case path
        /// The query string without `?` (bolt calls have none and never match).
        case arg
        /// The path and, when present, `?` and the query (bolt: the `service` header).
        case uri
    }

    public final class Rule: Sendable {
        public let resource: [UInt8]
        /// Requests that pass per one-second window.
        public let threshold: UInt32
        /// High 32 bits: the window (a monotonic second); low 32 bits: requests passed in it.
        let window = Atomic<UInt64>(0)

        public init(resource: String, threshold: UInt32) {
            self.resource = Array(resource.utf8)
            self.threshold = threshold
        }

        /// Counts one request in the window of `second`; false when the window is full (then
        /// nothing is counted).
        @inline(__always)
        public func admit(second: UInt32) -> Bool {
            var current = window.load(ordering: .relaxed)
            while true {
                let sameWindow = UInt32(truncatingIfNeeded: current >> 32) == second
                let passed = sameWindow ? UInt32(truncatingIfNeeded: current) : 0
                if passed >= threshold { return false }
                let next = UInt64(second) << 32 | UInt64(passed + 1)
                let (exchanged, seen) = window.compareExchange(expected: current, desired: next, ordering: .relaxed)
                if exchanged { return true }
                current = seen
            }
        }
    }

    public let keyType: KeyType
    public let rules: [Rule]
    public let limited: LocalAnswer
    public var phase: FilterPhase { .afterRoute }

    static let serviceHeader: [UInt8] = Array("service".utf8)

    public init(keyType: KeyType, rules: [Rule], status: Int, body: String) {
        self.keyType = keyType
        self.rules = rules
        limited = LocalAnswer(status: status, body: body, code: "flow_limited")
    }

    /// The monotonic second the windows count in (coarse clock: a vDSO read, no system call).
    @inline(__always)
    static func currentSecond() -> UInt32 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return UInt32(truncatingIfNeeded: ts.tv_sec)
    }

    public func decide<R: StreamRequest>(_ request: R) -> FilterVerdict {
        decide(request, second: Self.currentSecond())
    }

    /// Every rule whose resource is the request's key counts it; one full window blocks it.
    public func decide<R: StreamRequest>(_ request: R, second: UInt32) -> FilterVerdict {
        for rule in rules where matches(request, rule.resource) {
            if !rule.admit(second: second) { return .answer(limited) }
        }
        return .proceed
    }

    func matches<R: StreamRequest>(_ request: R, _ resource: [UInt8]) -> Bool {
        switch keyType {
        case .arg:
            return request.withQuery { q, n in n > 0 && Bytes.equals(q, n, resource) }
        case .path, .uri:
            let (pathMatches, pathLength): (Bool, Int) = request.withPath { p, n in
                if n == 0 { return (false, 0) }
                if keyType == .path { return (Bytes.equals(p, n, resource), n) }
                // uri: the path must be the resource's prefix, then "?query" or nothing.
                guard n <= resource.count else { return (false, n) }
                return (resource.withUnsafeBufferPointer { r in Bytes.memcmpEqual(r.baseAddress!, p, n) }, n)
            }
            if pathLength == 0 {   // bolt: no path; its service is what it is routed by
                return request.withHeader(lowercasedName: Self.serviceHeader) { v, n in Bytes.equals(v, n, resource) } ?? false
            }
            if keyType == .path || !pathMatches { return pathMatches }
            return request.withQuery { q, n in
                if n == 0 { return resource.count == pathLength }
                guard resource.count == pathLength + 1 + n, resource[pathLength] == UInt8(ascii: "?") else { return false }
                return resource.withUnsafeBufferPointer { r in Bytes.memcmpEqual(r.baseAddress! + pathLength + 1, q, n) }
            }
        }
    }
}
