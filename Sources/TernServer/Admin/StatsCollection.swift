import TernCore

/// One worker's counters, copied on that worker's own thread (so nothing reads a worker's memory
/// from another thread) and sent to the admin loop.
struct WorkerStatsSnapshot: Sendable {
    let worker: Int
    /// By index in `ServerPlan.listeners`.
    let listeners: [ListenerStats]
    /// By index in `ServerPlan.clusters`.
    let clusters: [ClusterStats]
    /// Idle pooled HTTP/1 connections per cluster.
    let idleConnections: [Int]
    /// Per cluster and host: requests in flight and open upstream connections (gauges).
    let hostActive: [[Int]]
    let hostOpen: [[Int]]
}

extension Worker {
    func statsSnapshot() -> WorkerStatsSnapshot {
        WorkerStatsSnapshot(worker: id, listeners: listenerCounters.map(\.stats), clusters: clusters.map(\.stats),
                            idleConnections: clusters.map { $0.pool.idleCount },
                            hostActive: clusters.map { $0.load.activeRequests }, hostOpen: clusters.map { $0.load.openConnections })
    }
}

/// Every worker's counters summed, and which workers answered.
struct MergedStats: Sendable {
    var listeners: [ListenerStats]
    var clusters: [ClusterStats]
    var idleConnections: [Int]
    var hostActive: [[Int]]
    var hostOpen: [[Int]]
    var workersAsked = 0
    var workersAnswered: [Int] = []

    init(plan: ServerPlan) {
        listeners = plan.listeners.map { _ in ListenerStats() }
        clusters = plan.clusters.map { ClusterStats(hostCount: $0.hosts.count) }
        idleConnections = plan.clusters.map { _ in 0 }
        hostActive = plan.clusters.map { Array(repeating: 0, count: $0.hosts.count) }
        hostOpen = hostActive
    }

    mutating func add(_ s: WorkerStatsSnapshot) {
        workersAnswered.append(s.worker)
        for i in listeners.indices where i < s.listeners.count { listeners[i].add(s.listeners[i]) }
        for i in clusters.indices where i < s.clusters.count { clusters[i].add(s.clusters[i]) }
        for i in idleConnections.indices where i < s.idleConnections.count { idleConnections[i] += s.idleConnections[i] }
        for i in hostActive.indices where i < s.hostActive.count {
            for h in hostActive[i].indices where h < s.hostActive[i].count { hostActive[i][h] += s.hostActive[i][h]; hostOpen[i][h] += s.hostOpen[i][h] }
        }
    }

    /// Set when a worker did not answer in time: what is shown lacks its counters.
    var note: String? {
        guard workersAnswered.count < workersAsked else { return nil }
        let missing = (0..<workersAsked).filter { !workersAnswered.contains($0) }.map(String.init).joined(separator: ", ")
        return "worker(s) \(missing) did not answer within \(StatsCollection.timeoutMS) ms; their counters are missing"
    }
}

extension ClusterStats {
    mutating func add(_ o: ClusterStats) {
        requests += o.requests
        responses2xx += o.responses2xx; responses4xx += o.responses4xx; responses5xx += o.responses5xx
        connectFailures += o.connectFailures; timeouts += o.timeouts; overflows += o.overflows; ejections += o.ejections; retries += o.retries; retryOverflows += o.retryOverflows
        connectionsOpened += o.connectionsOpened; connectionsReused += o.connectionsReused
        inFlight += o.inFlight
        for (status, n) in o.byStatus { byStatus[status, default: 0] += n }
        if hostRequests.count < o.hostRequests.count { hostRequests += Array(repeating: 0, count: o.hostRequests.count - hostRequests.count) }
        for i in o.hostRequests.indices { hostRequests[i] += o.hostRequests[i] }
        responseTime.add(o.responseTime)
        if responsesByCode.isEmpty && !o.responsesByCode.isEmpty { responsesByCode = Array(repeating: 0, count: o.responsesByCode.count) }
        for i in o.responsesByCode.indices where o.responsesByCode[i] != 0 && i < responsesByCode.count { responsesByCode[i] += o.responsesByCode[i] }
        if hostResponseTimes.count < o.hostResponseTimes.count {
            hostResponseTimes += Array(repeating: LatencyHistogram(), count: o.hostResponseTimes.count - hostResponseTimes.count)
        }
        for i in o.hostResponseTimes.indices { hostResponseTimes[i].add(o.hostResponseTimes[i]) }
    }
}

/// One request for counters on the admin loop: a task is posted to every worker's queue, each
/// answers with its snapshot through the admin loop's queue, and `done` runs once all have
/// answered or `timeoutMS` has passed (a stuck worker delays an answer, never hangs it).
final class StatsCollection: TimerTarget {
    static let timeoutMS: Int64 = 1000
    private var merged: MergedStats
    private let done: (MergedStats) -> Void
    private var timer: LoopTimer!
    private var finished = false
    private let loop: EventLoop

    private init(plan: ServerPlan, loop: EventLoop, done: @escaping (MergedStats) -> Void) {
        merged = MergedStats(plan: plan)
        self.loop = loop
        self.done = done
        timer = LoopTimer(target: self)
    }

    /// Starts a collection from `workers` (run on the admin loop's thread).
    static func start(plan: ServerPlan, workers: [TaskQueue], loop: EventLoop, done: @escaping (MergedStats) -> Void) {
        let collection = StatsCollection(plan: plan, loop: loop, done: done)
        collection.merged.workersAsked = workers.count
        if workers.isEmpty { collection.finish(); return }
        loop.timers.arm(collection.timer, at: loop.nowMS + timeoutMS)
        let reply = loop.remote
        // Only the admin thread dereferences the collection; workers just carry the box back.
        let box = UncheckedBox(collection)
        for queue in workers {
            queue.execute {
                let snapshot = WorkerRegistry.worker(on: queue)?.statsSnapshot()
                reply.execute { box.value.receive(snapshot) }
            }
        }
    }

    private func receive(_ snapshot: WorkerStatsSnapshot?) {
        guard !finished, let snapshot else { return }
        merged.add(snapshot)
        if merged.workersAnswered.count == merged.workersAsked { finish() }
    }

    func timerFired(_ timer: LoopTimer) { finish() }

    private func finish() {
        guard !finished else { return }
        finished = true
        loop.timers.cancel(timer)
        done(merged)
    }
}
