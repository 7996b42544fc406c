/// Picks a host index for one request. One instance per cluster per worker, so state needs no lock.
public protocol LoadBalancer: AnyObject {
    func chooseHost() -> Int?
}

/// `lb_type` names to balancer constructors: a new balancer is one type plus one line here.
public enum LoadBalancerRegistry {
    public static let kinds: [String: @Sendable (ClusterConfig) -> LoadBalancer] = [
        "LB_RANDOM": { RandomBalancer(hostCount: $0.hosts.count) },
        "LB_ROUNDROBIN": { RoundRobinBalancer(hostCount: $0.hosts.count) },
    ]

    public static func isKnown(_ name: String) -> Bool { kinds[name] != nil }

    static func make(_ config: ClusterConfig) -> LoadBalancer {
        (kinds[config.lbType] ?? kinds["LB_ROUNDROBIN"]!)(config)
    }
}

public final class RandomBalancer: LoadBalancer {
    private let hostCount: Int
    private var random = FastRandom()
    public init(hostCount: Int) { self.hostCount = hostCount }
    public func chooseHost() -> Int? { hostCount == 0 ? nil : random.below(hostCount) }
}

public final class RoundRobinBalancer: LoadBalancer {
    private let hostCount: Int
    private var next: Int
    public init(hostCount: Int) {
        self.hostCount = hostCount
        // Workers start at different offsets so N workers do not all hit host 0 first.
        next = hostCount > 0 ? Int.random(in: 0..<hostCount) : 0
    }
    public func chooseHost() -> Int? {
        guard hostCount > 0 else { return nil }
        let chosen = next
        next = next + 1 == hostCount ? 0 : next + 1
        return chosen
    }
}
