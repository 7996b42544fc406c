/// MOSN's `fault_tolerance` stream filter, a send-side filter: it sees every answer to a request
/// that went to an upstream host and, per cluster, takes hosts whose share of failed answers is
/// far above the cluster's average out of rotation for `recoverTime`.
///
/// Every `timeWindow` ms (per worker, counted from the first answer of a window), among the
/// cluster's hosts that answered at least `leastWindowCount` requests in the window, the average
/// exception rate is the exceptions over the calls of all of them; a host whose own rate is at
/// least `exceptionRateMultiple` times that average is taken out (for every worker, through the
/// cluster's `HostHealth`), at most `maxIpCount` hosts of the cluster at once. An exception is an
/// answer whose status is in `exceptionTypes`: the HTTP status the client got (502, 503 and 504
/// by default, Tern's own answers for failed exchanges included), or for bolt the HTTP status
/// matching its response status (`httpStatus(boltStatus:)`).
public final class FaultToleranceFilter: Sendable {
    public let exceptionStatuses: [Int]
    public let timeWindowMS: Int64
    public let leastWindowCount: Int
    public let exceptionRateMultiple: Double
    public let maxHostsOut: Int
    public let maxHostRatio: Double
    public let recoverMS: Int64

    public init(exceptionStatuses: [Int], timeWindowMS: Int64, leastWindowCount: Int, exceptionRateMultiple: Double,
                maxHostsOut: Int, maxHostRatio: Double, recoverMS: Int64) {
        self.exceptionStatuses = exceptionStatuses
        self.timeWindowMS = timeWindowMS
        self.leastWindowCount = leastWindowCount
        self.exceptionRateMultiple = exceptionRateMultiple
        self.maxHostsOut = maxHostsOut
        self.maxHostRatio = maxHostRatio
        self.recoverMS = recoverMS
    }

    public var phase: FilterPhase { .response }

    /// The HTTP status a bolt response status stands for when matching `exceptionTypes` (the
    /// inverse of how Tern maps its own HTTP-style answers to bolt statuses).
    public static func httpStatus(boltStatus: Int) -> Int {
        switch boltStatus {
        case 0x00: return 200
        case 0x06: return 404
        case 0x04: return 503
        case 0x07: return 504
        case 0x10: return 502
        default: return 500
        }
    }
}

/// One answer as the send-side filters see it.
public struct StreamResponse {
    /// The HTTP status the client got (bolt: `FaultToleranceFilter.httpStatus(boltStatus:)`).
    public let status: Int
    public let clusterIndex: Int
    public let host: Int
    public init(status: Int, clusterIndex: Int, host: Int) {
        self.status = status; self.clusterIndex = clusterIndex; self.host = host
    }
}

/// A fault_tolerance filter's counts on one worker: per cluster, calls and exceptions per host in
/// the current window.
final class FaultToleranceWindow {
    var windowEnds: [Int64] = []
    var calls: [[Int]] = []
    var exceptions: [[Int]] = []

    func observe(_ r: StreamResponse, _ f: FaultToleranceFilter, cluster: ClusterRuntime, logger: Logger) {
        let c = r.clusterIndex
        if c >= calls.count {
            let missing = c + 1 - calls.count
            calls += Array(repeating: [], count: missing)
            exceptions += Array(repeating: [], count: missing)
            windowEnds += Array(repeating: 0, count: missing)
        }
        let hostCount = cluster.config.hosts.count
        if calls[c].count != hostCount {
            calls[c] = Array(repeating: 0, count: hostCount)
            exceptions[c] = Array(repeating: 0, count: hostCount)
        }
        guard r.host >= 0 && r.host < hostCount else { return }
        let now = cluster.pool.loop.nowMS
        if windowEnds[c] == 0 { windowEnds[c] = now + f.timeWindowMS }
        calls[c][r.host] += 1
        if f.exceptionStatuses.contains(r.status) { exceptions[c][r.host] += 1 }
        guard now >= windowEnds[c] else { return }
        measure(c, f, cluster: cluster, now: now, logger: logger)
        for h in 0..<hostCount { calls[c][h] = 0; exceptions[c][h] = 0 }
        windowEnds[c] = now + f.timeWindowMS
    }

    private func measure(_ c: Int, _ f: FaultToleranceFilter, cluster: ClusterRuntime, now: Int64, logger: Logger) {
        guard let health = cluster.config.health else { return }
        var sumCalls = 0, sumExceptions = 0
        for h in calls[c].indices where calls[c][h] >= f.leastWindowCount {
            sumCalls += calls[c][h]; sumExceptions += exceptions[c][h]
        }
        guard sumCalls > 0, sumExceptions > 0 else { return }
        let average = Double(sumExceptions) / Double(sumCalls)
        let hostCount = calls[c].count
        var cap = f.maxHostsOut
        if f.maxHostRatio > 0 { cap = min(cap, max(1, Int(f.maxHostRatio * Double(hostCount)))) }
        for h in calls[c].indices where calls[c][h] >= f.leastWindowCount {
            let rate = Double(exceptions[c][h]) / Double(calls[c][h])
            guard rate / average >= f.exceptionRateMultiple else { continue }
            guard health.hold(h, forMS: f.recoverMS, nowMS: now, maxOut: cap) else { continue }
            cluster.stats.ejections += 1
            logger.warn("fault_tolerance", "cluster \(cluster.config.name): host \(cluster.config.hosts[h].address) out of rotation for \(f.recoverMS) ms: \(exceptions[c][h]) of \(calls[c][h]) answers failed, \(String(Int(rate / average * 10) / 10)).\(Int(rate / average * 10) % 10)× the cluster's rate")
        }
    }
}
