import Testing
@testable import TernCore

func counts(_ balancer: LoadBalancer, hosts: Int, picks: Int) -> [Int] {
    var seen = Array(repeating: 0, count: hosts)
    for _ in 0..<picks { seen[balancer.chooseHost()!] += 1 }
    return seen
}

func cluster(lbType: String, weights: [Int]) -> ClusterConfig {
    let hosts = weights.enumerated().map {
        HostConfig(address: SocketAddress.parse("127.0.0.1:\(8000 + $0.offset)")!, hostname: "", weight: $0.element, metadata: [:])
    }
    return ClusterConfig(name: "c", lbType: lbType, hosts: hosts, connectTimeoutMS: 1000, idleTimeoutMS: 1000,
                         maxRequestsPerConnection: 1024, connectionBufferLimit: 65536, maxIdlePerHost: 16)
}

struct LoadBalancerTests {
    @Test func roundRobinCyclesThroughEveryHost() {
        let lb = LoadBalancerRegistry.make(cluster(lbType: "LB_ROUNDROBIN", weights: [1, 1, 1]))
        let picks = (0..<6).map { _ in lb.chooseHost()! }
        #expect(Set(picks[0..<3]) == [0, 1, 2])
        #expect(Array(picks[0..<3]) == Array(picks[3..<6]))
    }

    @Test func randomStaysInRangeAndCoversHosts() {
        let lb = LoadBalancerRegistry.make(cluster(lbType: "LB_RANDOM", weights: [1, 1, 1, 1]))
        var seen = Set<Int>()
        for _ in 0..<1000 { let h = lb.chooseHost()!; #expect(h >= 0 && h < 4); seen.insert(h) }
        #expect(seen.count == 4)
    }

    @Test func smoothWeightedRoundRobinGivesNginxsSequence() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a, then again.
        let rr = RoundRobinBalancer(weights: [5, 1, 1], startOffset: 0)
        let picks = (0..<14).map { _ in rr.chooseHost()! }
        #expect(picks == [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0])
    }

    @Test func weightedRoundRobinSharesAreExactOverWholeCycles() {
        // Weights 1:2:7, 10 000 picks = 1 000 cycles of 10: the shares are exact, from any start.
        let rr = RoundRobinBalancer(weights: [1, 2, 7])
        #expect(counts(rr, hosts: 3, picks: 10_000) == [1_000, 2_000, 7_000])
        // And spread inside a cycle: the heavy host never runs more than 4 times in a row (7 of 10).
        let seq = (0..<100).map { _ in rr.chooseHost()! }
        var run = 0, longest = 0
        for h in seq { run = h == 2 ? run + 1 : 0; longest = max(longest, run) }
        #expect(longest <= 4)
    }

    @Test func equalWeightsTakeThePlainRoundRobinPath() {
        let rr = RoundRobinBalancer(weights: [3, 3, 3], startOffset: 0)
        #expect((0..<6).map { _ in rr.chooseHost()! } == [0, 1, 2, 0, 1, 2])
        #expect(!weightsDiffer([3, 3, 3]) && weightsDiffer([1, 2]))
    }

    @Test func weightedRandomPicksProportionally() {
        // 10 000 picks with weights 1:2:7: expected 1 000 / 2 000 / 7 000. The standard deviation
        // is at most 46 picks (host 2: sqrt(10 000 * 0.7 * 0.3)); the tolerance of 250 picks
        // (2.5 points of share) is over 5 of them, so a correct balancer fails about never.
        let random = RandomBalancer(weights: [1, 2, 7])
        let seen = counts(random, hosts: 3, picks: 10_000)
        for (host, expected) in [1_000, 2_000, 7_000].enumerated() {
            #expect(abs(seen[host] - expected) <= 250, "host \(host): \(seen)")
        }
        // Equal weights: uniform, every host used.
        let uniform = counts(RandomBalancer(weights: [5, 5, 5, 5]), hosts: 4, picks: 10_000)
        #expect(uniform.allSatisfy { abs($0 - 2_500) <= 250 }, "\(uniform)")
    }

    @Test func requestRoundRobinStartsEveryRequestAtTheFirstHost() {
        let lb = RequestRoundRobinBalancer(hostCount: 3)
        #expect((0..<5).map { _ in lb.chooseHost() } == [0, 0, 0, 0, 0])
        #expect(RequestRoundRobinBalancer(hostCount: 0).chooseHost() == nil)
    }

    @Test func registryBuildsEveryMOSNNameTernHas() {
        #expect(LoadBalancerRegistry.make(cluster(lbType: "LB_RANDOM", weights: [1, 2])) is RandomBalancer)
        #expect(LoadBalancerRegistry.make(cluster(lbType: "LB_ROUNDROBIN", weights: [1, 2])) is RoundRobinBalancer)
        #expect(LoadBalancerRegistry.make(cluster(lbType: "LB_WEIGHTED_ROUNDROBIN", weights: [1, 2])) is RoundRobinBalancer)
        #expect(LoadBalancerRegistry.make(cluster(lbType: "LB_REQUEST_ROUNDROBIN", weights: [1, 2])) is RequestRoundRobinBalancer)
        // Weights reach the balancer: 1:3 through the registry.
        let lb = LoadBalancerRegistry.make(cluster(lbType: "LB_ROUNDROBIN", weights: [1, 3]))
        #expect(counts(lb, hosts: 2, picks: 400) == [100, 300])
        for empty in ["LB_RANDOM", "LB_ROUNDROBIN", "LB_REQUEST_ROUNDROBIN"] {
            #expect(LoadBalancerRegistry.make(cluster(lbType: empty, weights: [])).chooseHost() == nil)
        }
    }
}
