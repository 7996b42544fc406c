import Glibc
import Testing
@testable import TernServer
import TernCore

/// The admin thread's collection of worker counters never hangs on a worker that does not answer.
struct StatsCollectionTests {
    @Test func aWorkerThatNeverAnswersLeavesANoteAfterTheTimeout() throws {
        let plan = try #require(load(config()).plan)
        let admin = EventLoop()
        // A worker loop nobody runs: its task is queued and never executed.
        let stuck = EventLoop()
        var result: MergedStats?
        let started = tern_monotonic_ms_for_tests()
        StatsCollection.start(plan: plan, workers: [stuck.remote], loop: admin) { result = $0 }
        while result == nil && tern_monotonic_ms_for_tests() - started < 5000 { admin.runOnce(maxWaitMS: 50) }
        let merged = try #require(result, "the collection did not finish")
        let waited = tern_monotonic_ms_for_tests() - started
        #expect(waited >= StatsCollection.timeoutMS - 50 && waited < StatsCollection.timeoutMS + 2000, "\(waited) ms")
        #expect(merged.workersAsked == 1 && merged.workersAnswered.isEmpty)
        #expect(merged.note?.contains("worker(s) 0 did not answer") == true)
        let report = MetricsReport(plan: plan, merged: merged, process: ProcessFigures(), draining: false)
        #expect(report.json().contains("\"note\": \"worker(s) 0 did not answer"))
    }

    @Test func countersFromSeveralWorkersAreSummed() throws {
        let plan = try #require(load(config()).plan)
        var merged = MergedStats(plan: plan)
        merged.workersAsked = 2
        var l = ListenerStats()
        l.requests = 3; l.recordResponse(httpStatus: 204); l.recordResponse(httpStatus: 503); l.recordResponse(boltStatus: 7)
        var c = ClusterStats(hostCount: 1)
        c.requests = 2; c.hostRequests[0] = 2; c.record(status: 0)
        merged.add(WorkerStatsSnapshot(worker: 0, listeners: [l], clusters: [c], idleConnections: [1], hostActive: [[1]], hostOpen: [[2]]))
        merged.add(WorkerStatsSnapshot(worker: 1, listeners: [l], clusters: [c], idleConnections: [2], hostActive: [[0]], hostOpen: [[3]]))
        #expect(merged.note == nil)
        #expect(merged.listeners[0].requests == 6 && merged.listeners[0].responses2xx == 2 && merged.listeners[0].responses5xx == 2)
        #expect(merged.listeners[0].boltResponsesFailed == 2)
        #expect(merged.clusters[0].hostRequests == [4] && merged.clusters[0].byStatus == [0: 2] && merged.idleConnections == [3])
        #expect(merged.hostActive == [[1]] && merged.hostOpen == [[5]])
    }
}

func tern_monotonic_ms_for_tests() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
