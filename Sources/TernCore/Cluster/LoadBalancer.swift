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

/// `lb_type` names to balancer constructors: a new balancer is one type plus one line here.
public enum LoadBalancerRegistry {
    public static let kinds: [String: @Sendable (ClusterConfig) -> LoadBalancer] = [
        "LB_RANDOM": { RandomBalancer(weights: $0.hosts.map(\.weight)) },
        "LB_ROUNDROBIN": { RoundRobinBalancer(weights: $0.hosts.map(\.weight)) },
        // MOSN's weighted round robin (EDF there) gives each host the same share as the smooth
        // round robin LB_ROUNDROBIN already does with weights, so it is the same balancer.
        "LB_WEIGHTED_ROUNDROBIN": { RoundRobinBalancer(weights: $0.hosts.map(\.weight)) },
        "LB_REQUEST_ROUNDROBIN": { RequestRoundRobinBalancer(hostCount: $0.hosts.count) },
    ]

    public static func isKnown(_ name: String) -> Bool { kinds[name] != nil }

    static func make(_ config: ClusterConfig) -> LoadBalancer {
        (kinds[config.lbType] ?? kinds["LB_ROUNDROBIN"]!)(config)
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
