import Glibc

/// What a balancer may look at for one pick, besides its own state: the downstream connection
/// (its source address, its original destination when intercepted) and the request's hash key
/// (from the route's hash policy, when it has one). Balancers that need neither ignore it; it is
/// a struct on the stack, so passing it costs nothing per request.
public struct LoadBalancerContext {
    public var downstream: Connection?
    public var hashKey: UInt64?
    public init(downstream: Connection? = nil, hashKey: UInt64? = nil) {
        self.downstream = downstream
        self.hashKey = hashKey
    }
}

/// Picks a host index for one request. One instance per cluster per worker, so state needs no lock.
public protocol LoadBalancer: AnyObject {
    func chooseHost(_ context: LoadBalancerContext) -> Int?
}

extension LoadBalancer {
    /// A pick with no request context (tests, health checks).
    public func chooseHost() -> Int? { chooseHost(LoadBalancerContext()) }
}

/// Load per host of one cluster on one worker. Requests in flight are counted where an exchange
/// with the host starts and ends (`ClusterRuntime.requestStarted/Ended`), read by
/// LB_LEAST_REQUEST; open upstream connections where they are made and closed
/// (`Connection.connect(toHost:…)`, `Connection.close`), read by LB_LEAST_CONNECTION. Plain
/// integers: one worker owns it.
public final class HostLoad {
    public var activeRequests: [Int]
    public var openConnections: [Int]
    /// Exchanges are timed (LB_PEAK_EWMA): each host's peak-sensitive moving average of its
    /// response times, in microseconds, and when it was last updated.
    public let measuresLatency: Bool
    public private(set) var latencyUS: [Double]
    private var latencyStampUS: [Int64]

    public init(hostCount: Int, measuresLatency: Bool = false) {
        activeRequests = Array(repeating: 0, count: hostCount)
        openConnections = activeRequests
        self.measuresLatency = measuresLatency
        latencyUS = measuresLatency ? Array(repeating: 0, count: hostCount) : []
        latencyStampUS = measuresLatency ? Array(repeating: 0, count: hostCount) : []
    }

    /// How fast an old average fades: after `decayUS` without a sample it keeps 1/e of its weight.
    static let decayUS = 10_000_000.0

    /// Finagle's peak EWMA: a sample above the average replaces it at once (a slow host is seen
    /// slow immediately); a lower one is blended in by the time since the last update.
    public func recordLatency(host: Int, startedUS: Int64, nowUS: Int64 = monotonicMicroseconds()) {
        let sample = Double(max(nowUS - startedUS, 0))
        latencyUS[host] = decayed(host, nowUS: nowUS, toward: sample)
        latencyStampUS[host] = nowUS
    }

    /// Host `host`'s average as of `nowUS`, pulled toward `sample` by the time since it was set.
    func decayed(_ host: Int, nowUS: Int64, toward sample: Double = 0) -> Double {
        let current = latencyUS[host]
        if sample > current { return sample }
        let w = exp(-Double(max(nowUS - latencyStampUS[host], 0)) / HostLoad.decayUS)
        return current * w + sample * (1 - w)
    }
}

/// CLOCK_MONOTONIC in microseconds (only balancers that time exchanges read it).
public func monotonicMicroseconds() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Int64(t.tv_sec) * 1_000_000 + Int64(t.tv_nsec) / 1_000
}

/// Where an upstream connection counts itself: `HostLoad.openConnections` on its worker and,
/// with `circuit_breakers`, the process-wide per-host and pending counts. A class, so a
/// connection (downstream ones too) carries one optional reference for it.
final class OpenConnectionSlot {
    let load: HostLoad
    let host: Int
    let breaker: CircuitBreaker?
    private var holdsPending: Bool
    /// Whether it holds one of the host's `max_connections` slots (not while idle in a pool).
    private var holdsConnection: Bool

    init(load: HostLoad, host: Int, breaker: CircuitBreaker?, holdsPending: Bool) {
        self.load = load; self.host = host; self.breaker = breaker; self.holdsPending = holdsPending
        holdsConnection = breaker != nil
    }

    /// The connection is established: its request no longer waits for one.
    func connected() {
        if holdsPending { holdsPending = false; breaker?.releasePending() }
    }

    /// Parked idle in a worker's keep-alive pool: its `max_connections` slot is given back, so an
    /// idle connection on one worker never refuses another worker's request.
    @inline(__always)
    func parked() {
        if holdsConnection { holdsConnection = false; breaker?.releaseConnection(host: host) }
    }

    /// Taken from the pool for a request: takes a slot again; false when the host is at its limit.
    @inline(__always)
    func unparked() -> Bool {
        guard let breaker, !holdsConnection else { return true }
        if breaker.acquireConnection(host: host, pendingRequest: false) != nil { return false }
        holdsConnection = true
        return true
    }

    func closed() {
        load.openConnections[host] -= 1
        connected()
        parked()
    }
}

/// What one balancer picks among: some hosts of a cluster (all of them, or one subset's), in the
/// cluster's order. A balancer answers a position in `members`, not a cluster host index.
public struct BalancerHosts {
    public let config: ClusterConfig
    /// Cluster host indices.
    public let members: [Int]
    public let load: HostLoad
    public init(config: ClusterConfig, members: [Int], load: HostLoad) {
        self.config = config; self.members = members; self.load = load
    }
    public var weights: [Int] { members.map { config.hosts[$0].weight } }
    /// What the hash balancers hash a host by: its address, so a host keeps its keys whatever
    /// else changes in the list.
    public var addresses: [String] { members.map { config.hosts[$0].address.description } }
}

/// Tuning for the balancers (MOSN's cluster `lbconfig`).
public struct BalancerSettings: Sendable {
    /// LB_LEAST_REQUEST: how many hosts are drawn per pick (`choice_count`, default 2).
    public var choiceCount = 2
    public init() {}
}

/// `lb_type` names to balancer constructors: a new balancer is one type plus one line here.
public enum LoadBalancerRegistry {
    public static let kinds: [String: @Sendable (BalancerHosts) -> LoadBalancer] = [
        "LB_RANDOM": { RandomBalancer(weights: $0.weights) },
        "LB_ROUNDROBIN": { RoundRobinBalancer(weights: $0.weights) },
        // MOSN's weighted round robin (EDF there) gives each host the same share as the smooth
        // round robin LB_ROUNDROBIN already does with weights, so it is the same balancer.
        "LB_WEIGHTED_ROUNDROBIN": { RoundRobinBalancer(weights: $0.weights) },
        "LB_REQUEST_ROUNDROBIN": { RequestRoundRobinBalancer(hostCount: $0.members.count) },
        "LB_LEAST_REQUEST": { LeastLoadBalancer($0, by: .requests) },
        "LB_LEAST_CONNECTION": { LeastLoadBalancer($0, by: .connections) },
        "LB_PEAK_EWMA": { LeastLoadBalancer($0, by: .peakLatency) },
        "LB_MAGLEV": { MaglevBalancer(names: $0.addresses) },
        // Tern's: MOSN has no ring hash; Envoy's name for it is RING_HASH.
        "LB_RING_HASH": { RingHashBalancer(names: $0.addresses, weights: $0.weights) },
    ]

    /// Balancers that pick by the request's hash key (the route's `hash_policy`).
    public static let hashing: Set<String> = ["LB_MAGLEV", "LB_RING_HASH"]
    /// Balancers that need each exchange timed.
    public static let timing: Set<String> = ["LB_PEAK_EWMA"]

    public static func isKnown(_ name: String) -> Bool { kinds[name] != nil }

    static func make(_ hosts: BalancerHosts) -> LoadBalancer {
        (kinds[hosts.config.lbType] ?? kinds["LB_ROUNDROBIN"]!)(hosts)
    }

    /// A balancer over all of a cluster's hosts with a load table of its own (tests).
    static func make(_ config: ClusterConfig) -> LoadBalancer {
        make(BalancerHosts(config: config, members: Array(config.hosts.indices), load: HostLoad(hostCount: config.hosts.count)))
    }
}

/// Whether weights make a difference: with all weights equal, balancers take their plain path.
@inline(__always)
func weightsDiffer(_ weights: [Int]) -> Bool {
    guard let first = weights.first else { return false }
    return weights.contains { $0 != first }
}

/// Uniform random when all weights are equal; otherwise each host with probability weight / total.
public final class RandomBalancer: LoadBalancer {
    private let hostCount: Int
    /// Running sums of the weights (host i owns [sum(i-1), sum(i))); empty when weights are equal.
    private let cumulativeWeights: [Int]
    private var random = FastRandom()

    public init(weights: [Int]) {
        hostCount = weights.count
        var sums: [Int] = []
        if weightsDiffer(weights) {
            var total = 0
            for w in weights { total += w; sums.append(total) }
        }
        cumulativeWeights = sums
    }

    public convenience init(hostCount: Int) { self.init(weights: Array(repeating: 1, count: hostCount)) }

    public func chooseHost(_ context: LoadBalancerContext) -> Int? {
        if hostCount == 0 { return nil }
        if cumulativeWeights.isEmpty { return random.below(hostCount) }
        let r = random.below(cumulativeWeights[hostCount - 1])
        // First running sum above r (binary search: weights are few, but hosts may be many).
        var low = 0, high = hostCount - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulativeWeights[mid] > r { high = mid } else { low = mid + 1 }
        }
        return low
    }
}

/// Plain round robin when all weights are equal; otherwise nginx's smooth weighted round robin:
/// every pick adds each host's weight to its score, takes the highest score and subtracts the
/// total from it, so weights 5:1:1 give a a b a c a a rather than five a's in a row.
public final class RoundRobinBalancer: LoadBalancer {
    private let hostCount: Int
    private var next: Int
    /// Empty when the weights are equal (the plain path).
    private let weights: [Int]
    private var scores: [Int]
    private let totalWeight: Int

    public init(weights: [Int], startOffset: Int? = nil) {
        hostCount = weights.count
        let weighted = weightsDiffer(weights)
        self.weights = weighted ? weights : []
        scores = weighted ? Array(repeating: 0, count: weights.count) : []
        totalWeight = weighted ? weights.reduce(0, +) : hostCount
        next = 0
        // Workers start at different points of the cycle so N workers do not all hit the same
        // host first.
        // (Bounded: each weighted step costs one pass over the hosts.)
        let offset = startOffset ?? (totalWeight > 0 ? Int.random(in: 0..<min(totalWeight, 256)) : 0)
        if weighted {
            for _ in 0..<offset { _ = chooseWeighted() }
        } else if hostCount > 0 {
            next = offset % hostCount
        }
    }

    public convenience init(hostCount: Int) { self.init(weights: Array(repeating: 1, count: hostCount)) }

    public func chooseHost(_ context: LoadBalancerContext) -> Int? {
        guard hostCount > 0 else { return nil }
        if !weights.isEmpty { return chooseWeighted() }
        let chosen = next
        next = next + 1 == hostCount ? 0 : next + 1
        return chosen
    }

    private func chooseWeighted() -> Int {
        var best = 0
        for i in 0..<hostCount {
            scores[i] += weights[i]
            if scores[i] > scores[best] { best = i }
        }
        scores[best] -= totalWeight
        return best
    }
}

/// MOSN's LB_REQUEST_ROUNDROBIN: every request starts at the first host and moves one host on
/// each retry of that same request. Tern does not retry yet (and has no health checks to skip
/// a host), so every request goes to the first host: an ordered failover list, not a spread.
public final class RequestRoundRobinBalancer: LoadBalancer {
    private let hostCount: Int
    public init(hostCount: Int) { self.hostCount = hostCount }
    public func chooseHost(_ context: LoadBalancerContext) -> Int? { hostCount == 0 ? nil : 0 }
}

/// MOSN's LB_LEAST_REQUEST, LB_LEAST_CONNECTION and LB_PEAK_EWMA: the power of two choices. Draw
/// `choice_count` hosts (in proportion to weight when weights differ) and take the one with the
/// least load on this worker: requests in flight, open upstream connections, or peak EWMA (the
/// host's decayed peak-sensitive response time × (requests in flight + 1), as Finagle scores it;
/// a host never measured scores 0 while idle, so new hosts are tried). With equal weights the
/// second draw is a different host from the first, so with two hosts the less loaded one always
/// wins.
public final class LeastLoadBalancer: LoadBalancer {
    public enum Measure { case requests, connections, peakLatency }
    private let members: [Int]
    private let load: HostLoad
    private let measure: Measure
    private let choices: Int
    /// Draws candidates: uniform, or by weight.
    private let draw: RandomBalancer
    private let weighted: Bool
    private var random = FastRandom()

    public init(_ hosts: BalancerHosts, by measure: Measure) {
        members = hosts.members
        load = hosts.load
        self.measure = measure
        choices = max(hosts.config.balancerSettings.choiceCount, 1)
        let weights = hosts.weights
        weighted = weightsDiffer(weights)
        draw = RandomBalancer(weights: weights)
    }

    public func chooseHost(_ context: LoadBalancerContext) -> Int? {
        let n = members.count
        if n <= 1 { return n == 0 ? nil : 0 }
        let nowUS = measure == .peakLatency ? monotonicMicroseconds() : 0
        var best = draw.chooseHost(context)!
        var bestLoad = current(best, nowUS)
        for round in 1..<choices {
            let candidate = !weighted && round == 1 ? (best + 1 + random.below(n - 1)) % n : draw.chooseHost(context)!
            let candidateLoad = current(candidate, nowUS)
            if candidateLoad < bestLoad { best = candidate; bestLoad = candidateLoad }
        }
        return best
    }

    @inline(__always)
    private func current(_ member: Int, _ nowUS: Int64) -> Double {
        let host = members[member]
        switch measure {
        case .requests: return Double(load.activeRequests[host])
        case .connections: return Double(load.openConnections[host])
        case .peakLatency:
            let pending = load.activeRequests[host]
            let latency = load.decayed(host, nowUS: nowUS)
            // Finagle's penalty: a host with calls out and no measurement yet is assumed slow.
            if latency == 0 && pending > 0 { return 1e12 + Double(pending) }
            return latency * Double(pending + 1)
        }
    }
}

/// The request's hash: the route's hash policy fills `hashKey`; without one (tcp_proxy), the
/// client's address, as MOSN's default source-IP policy.
@inline(__always)
func hashKey(_ context: LoadBalancerContext) -> UInt64 {
    if let key = context.hashKey { return key }
    return context.downstream?.sourceAddressHash ?? 0
}

/// MOSN's LB_MAGLEV: Google's Maglev consistent hashing. A lookup table of a prime size M (about
/// 100 entries per host, so shares differ by about 1 %) is filled from each host's own
/// permutation of the slots (offset and skip from hashes of its address), hosts taking turns; a
/// request takes the slot its hash names. Removing a host moves mostly the keys it had. Hosts are
/// unweighted, as in MOSN.
public final class MaglevBalancer: LoadBalancer {
    private let table: [UInt32]

    public init(names: [String]) {
        let n = names.count
        guard n > 0 else { table = []; return }
        let size = MaglevBalancer.primes.first { $0 >= 100 * n } ?? MaglevBalancer.primes[MaglevBalancer.primes.count - 1]
        let offsets = names.map { Int(HashKey.of($0, seed: 0x6d61676c65762031) % UInt64(size)) }
        let skips = names.map { Int(HashKey.of($0, seed: 0x6d61676c65762032) % UInt64(size - 1)) + 1 }
        var next = Array(repeating: 0, count: n)
        var slots = Array(repeating: UInt32.max, count: size)
        var filled = 0
        fill: while true {
            for host in 0..<n {
                var slot = (offsets[host] + next[host] * skips[host]) % size
                while slots[slot] != UInt32.max {
                    next[host] += 1
                    slot = (offsets[host] + next[host] * skips[host]) % size
                }
                slots[slot] = UInt32(host)
                next[host] += 1
                filled += 1
                if filled == size { break fill }
            }
        }
        table = slots
    }

    /// Table sizes: primes, each about twice the last.
    static let primes = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071, 262139, 524287, 1048573]

    public func chooseHost(_ context: LoadBalancerContext) -> Int? {
        if table.isEmpty { return nil }
        return Int(table[Int(HashKey.mix(hashKey(context)) % UInt64(table.count))])
    }
}

/// Tern's LB_RING_HASH (Envoy's ring hash; MOSN has none): each host owns 100 points per unit of
/// weight on a 64-bit ring (hashes of its address and the point's number); a request goes to the
/// first point at or after its hash. Removing a host moves only the keys of its points.
public final class RingHashBalancer: LoadBalancer {
    private let points: [UInt64]
    private let owners: [UInt32]

    public init(names: [String], weights: [Int]) {
        var ring: [(UInt64, UInt32)] = []
        for (host, name) in names.enumerated() {
            for point in 0..<(100 * max(weights[host], 1)) {
                ring.append((HashKey.of("\(name)#\(point)"), UInt32(host)))
            }
        }
        ring.sort { $0.0 < $1.0 }
        points = ring.map(\.0)
        owners = ring.map(\.1)
    }

    public func chooseHost(_ context: LoadBalancerContext) -> Int? {
        if points.isEmpty { return nil }
        let key = HashKey.mix(hashKey(context))
        var low = 0, high = points.count
        while low < high {
            let mid = (low + high) / 2
            if points[mid] < key { low = mid + 1 } else { high = mid }
        }
        return Int(owners[low == points.count ? 0 : low])
    }
}
