import Synchronization

/// Which hosts of a cluster may take requests, for the whole process: every worker's balancer
/// skips a host that failed its active health check (`health_check`) or that passive outlier
/// detection (`outlier_detection`) ejected. Shared by all workers through the cluster's config,
/// in atomic words, so a host found dead on one worker leaves every worker's rotation at once.
///
/// The cost per request while every host is healthy is one relaxed load (`unhealthyHosts` is 0).
/// Ejections end lazily: the first pick after `ejectedUntil` finds the host back.
public final class HostHealth: Sendable {
    /// Passive outlier detection settings (Envoy's names); nil: none.
    public let outlier: OutlierSettings?
    /// Whether an active health checker marks hosts (else only ejections do).
    public let activelyChecked: Bool
    private let hosts: [HostState]
    /// Hosts now failed or ejected (a hint: 0 means every host may be picked without a look).
    private let unhealthy = Atomic<Int>(0)
    private let ejectedCount = Atomic<Int>(0)

    final class HostState: Sendable {
        /// The active check's verdict: true while the host has failed `unhealthy_threshold` checks
        /// in a row (until `healthy_threshold` pass).
        let checkFailed = Atomic<Bool>(false)
        /// Ejected until this monotonic millisecond; 0: not ejected.
        let ejectedUntil = Atomic<Int64>(0)
        /// Ejections so far (the next lasts base × this, up to the maximum).
        let ejections = Atomic<Int>(0)
        /// When the last ejection ended (for the reset of `ejections`).
        let lastEjectionEnd = Atomic<Int64>(0)
    }

    public struct OutlierSettings: Sendable {
        /// Failures in a row (on one worker) that eject a host: 5xx answers and failed exchanges.
        public let consecutiveFailures: Int
        public let baseEjectionMS: Int64
        public let maxEjectionMS: Int64
        /// No ejection when this share (percent) of the cluster's hosts is already out.
        public let maxEjectionPercent: Int
        public init(consecutiveFailures: Int, baseEjectionMS: Int64, maxEjectionMS: Int64, maxEjectionPercent: Int) {
            self.consecutiveFailures = consecutiveFailures
            self.baseEjectionMS = baseEjectionMS
            self.maxEjectionMS = maxEjectionMS
            self.maxEjectionPercent = maxEjectionPercent
        }
    }

    public init(hostCount: Int, outlier: OutlierSettings?, activelyChecked: Bool) {
        self.outlier = outlier
        self.activelyChecked = activelyChecked
        hosts = (0..<hostCount).map { _ in HostState() }
    }

    public var hostCount: Int { hosts.count }

    /// Whether any host may be unhealthy now (when false, no host needs a look).
    @inline(__always)
    public var anyUnhealthy: Bool { unhealthy.load(ordering: .relaxed) > 0 }

    /// Whether `host` may take a request at `nowMS` (monotonic). Ends an ejection that is over.
    public func isHealthy(_ host: Int, nowMS: Int64) -> Bool {
        let state = hosts[host]
        let until = state.ejectedUntil.load(ordering: .relaxed)
        if until != 0 {
            if until > nowMS { return false }
            // Over: whoever swaps it out first counts the host back.
            if state.ejectedUntil.compareExchange(expected: until, desired: 0, ordering: .relaxed).exchanged {
                state.lastEjectionEnd.store(nowMS, ordering: .relaxed)
                ejectedCount.wrappingSubtract(1, ordering: .relaxed)
                unhealthy.wrappingSubtract(1, ordering: .relaxed)
            }
        }
        return !state.checkFailed.load(ordering: .relaxed)
    }

    /// The active checker's verdict changed for `host`.
    public func setCheckFailed(_ host: Int, _ failed: Bool) {
        guard hosts[host].checkFailed.exchange(failed, ordering: .relaxed) != failed else { return }
        if failed { unhealthy.wrappingAdd(1, ordering: .relaxed) } else { unhealthy.wrappingSubtract(1, ordering: .relaxed) }
    }

    public func checkFailed(_ host: Int) -> Bool { hosts[host].checkFailed.load(ordering: .relaxed) }
    public func ejected(_ host: Int, nowMS: Int64) -> Bool {
        let until = hosts[host].ejectedUntil.load(ordering: .relaxed)
        return until != 0 && until > nowMS
    }
    public var ejectedHosts: Int { ejectedCount.load(ordering: .relaxed) }

    /// Takes `host` out for `ms` (the fault_tolerance filter), unless it is out already or
    /// `maxOut` hosts of the cluster are; true when it was taken out.
    public func hold(_ host: Int, forMS ms: Int64, nowMS: Int64, maxOut: Int) -> Bool {
        let state = hosts[host]
        guard state.ejectedUntil.load(ordering: .relaxed) == 0, ejectedCount.load(ordering: .relaxed) < maxOut else { return false }
        guard state.ejectedUntil.compareExchange(expected: 0, desired: nowMS + ms, ordering: .relaxed).exchanged else { return false }
        ejectedCount.wrappingAdd(1, ordering: .relaxed)
        unhealthy.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    /// Ejects `host` (outlier detection); the duration it got, or nil when it is already out or
    /// `max_ejection_percent` of the cluster is. An ejection count resets once the host has been
    /// back for `max_ejection_time`.
    public func eject(_ host: Int, nowMS: Int64) -> Int64? {
        guard let outlier else { return nil }
        let state = hosts[host]
        guard state.ejectedUntil.load(ordering: .relaxed) == 0 else { return nil }
        let out = ejectedCount.load(ordering: .relaxed)
        guard out * 100 < outlier.maxEjectionPercent * hosts.count else { return nil }
        if nowMS - state.lastEjectionEnd.load(ordering: .relaxed) > outlier.maxEjectionMS { state.ejections.store(0, ordering: .relaxed) }
        let count = state.ejections.wrappingAdd(1, ordering: .relaxed).newValue
        let duration = min(outlier.baseEjectionMS * Int64(count), max(outlier.maxEjectionMS, outlier.baseEjectionMS))
        guard state.ejectedUntil.compareExchange(expected: 0, desired: nowMS + duration, ordering: .relaxed).exchanged else { return nil }
        ejectedCount.wrappingAdd(1, ordering: .relaxed)
        unhealthy.wrappingAdd(1, ordering: .relaxed)
        return duration
    }
}
