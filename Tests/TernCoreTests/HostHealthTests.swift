import Testing
@testable import TernCore

/// HostHealth (ejections, checks) and how every balancer picks around hosts out of rotation.
struct HostHealthTests {
    /// The runtimes' loop, kept for the test (the shared `runtime` helper lets its loop go, and
    /// the degraded pick reads the loop's clock).
    let loop = EventLoop()
    func liveRuntime(_ config: ClusterConfig) -> ClusterRuntime {
        ClusterRuntime(config: config, loop: loop, buffers: BufferPool(), logger: Logger(level: .error, fd: 2))
    }

    let outlier = HostHealth.OutlierSettings(consecutiveFailures: 3, baseEjectionMS: 1000, maxEjectionMS: 5000, maxEjectionPercent: 50)

    @Test func ejectionsEndOnTheirOwnAndGrowWithEachEjection() {
        let h = HostHealth(hostCount: 4, outlier: outlier, activelyChecked: false)
        #expect(!h.anyUnhealthy)
        #expect(h.eject(1, nowMS: 10_000) == 1000)
        #expect(h.anyUnhealthy && !h.isHealthy(1, nowMS: 10_999) && h.isHealthy(0, nowMS: 10_999))
        // Already out: no second ejection.
        #expect(h.eject(1, nowMS: 10_500) == nil)
        #expect(h.isHealthy(1, nowMS: 11_000))
        #expect(!h.anyUnhealthy && h.ejectedHosts == 0)
        // The next lasts twice as long, then three times, capped at max_ejection_time.
        #expect(h.eject(1, nowMS: 12_000) == 2000)
        #expect(h.isHealthy(1, nowMS: 14_000))
        for _ in 0..<4 { _ = h.eject(1, nowMS: 20_000); _ = h.isHealthy(1, nowMS: 30_000) }
        #expect(h.eject(1, nowMS: 31_000) == 5000)
        _ = h.isHealthy(1, nowMS: 36_000)
        // Back for longer than max_ejection_time: the count starts again.
        #expect(h.eject(1, nowMS: 50_000) == 1000)
    }

    @Test func neverMoreThanTheAllowedShareOfTheClusterIsEjected() {
        let h = HostHealth(hostCount: 4, outlier: outlier, activelyChecked: false)
        #expect(h.eject(0, nowMS: 0) != nil)
        #expect(h.eject(1, nowMS: 0) != nil)   // 1 of 4 out: 25 % < 50 %
        #expect(h.eject(2, nowMS: 0) == nil)   // 2 of 4 out: 50 %, no more
        #expect(h.ejectedHosts == 2)
    }

    @Test func checkVerdictsAreCountedOnce() {
        let h = HostHealth(hostCount: 2, outlier: nil, activelyChecked: true)
        h.setCheckFailed(0, true); h.setCheckFailed(0, true)
        #expect(h.anyUnhealthy && !h.isHealthy(0, nowMS: 0))
        h.setCheckFailed(0, false)
        #expect(!h.anyUnhealthy && h.isHealthy(0, nowMS: 0))
        #expect(h.eject(0, nowMS: 0) == nil, "no outlier settings: nothing ejects")
    }

    @Test func everyBalancerPicksOnlyHealthyHostsAndNoneWhenAllAreOut() {
        for lbType in ["LB_ROUNDROBIN", "LB_RANDOM", "LB_LEAST_REQUEST", "LB_LEAST_CONNECTION", "LB_PEAK_EWMA", "LB_MAGLEV", "LB_RING_HASH", "LB_REQUEST_ROUNDROBIN"] {
            var config = cluster(lbType: lbType, weights: [1, 1, 1, 1])
            let health = HostHealth(hostCount: 4, outlier: nil, activelyChecked: true)
            config.health = health
            let r = liveRuntime(config)
            health.setCheckFailed(0, true)
            health.setCheckFailed(2, true)
            var seen = Set<Int?>()
            for i in 0..<400 { seen.insert(r.chooseHost(.all, LoadBalancerContext(hashKey: UInt64(i) &* 0x9e37_79b9))) }
            #expect(seen.isSubset(of: [1, 3]) && !seen.isEmpty, "\(lbType): \(seen)")
            // A key keeps its host while the rotation is the same (hash balancers).
            let key = LoadBalancerContext(hashKey: 42)
            #expect(r.chooseHost(.all, key) == r.chooseHost(.all, key) || !lbType.contains("HASH") && lbType != "LB_MAGLEV", "\(lbType)")
            health.setCheckFailed(1, true)
            health.setCheckFailed(3, true)
            #expect(r.chooseHost(.all, LoadBalancerContext(hashKey: 7)) == nil, "\(lbType)")
        }
    }

    @Test func subsetsPickOnlyTheirHealthyMembers() {
        var config = subsetCluster(fallback: .noFallback)
        let health = HostHealth(hostCount: 4, outlier: nil, activelyChecked: true)
        config.health = health
        let r = liveRuntime(config)
        let v2 = config.subsets!.resolve(MetadataCriteria(["version": "v2"]))
        #expect(reached(r, v2) == [1, 2])
        health.setCheckFailed(1, true)
        #expect(reached(r, v2) == [2])
        health.setCheckFailed(2, true)
        #expect(reached(r, v2) == [nil])
    }

    @Test func consecutiveFailuresOnAWorkerEjectAndASuccessResetsTheCount() {
        var config = cluster(lbType: "LB_ROUNDROBIN", weights: [1, 1])
        let health = HostHealth(hostCount: 2, outlier: outlier, activelyChecked: false)
        config.health = health
        let r = liveRuntime(config)
        r.noteOutcome(host: 0, failed: true); r.noteOutcome(host: 0, failed: true)
        r.noteOutcome(host: 0, failed: false)
        r.noteOutcome(host: 0, failed: true); r.noteOutcome(host: 0, failed: true)
        #expect(!health.anyUnhealthy)
        r.noteOutcome(host: 0, failed: true)
        #expect(health.ejectedHosts == 1 && r.stats.ejections == 1)
        #expect(Set((0..<20).map { _ in r.chooseHost(.all, LoadBalancerContext()) }) == [1])
    }
}
