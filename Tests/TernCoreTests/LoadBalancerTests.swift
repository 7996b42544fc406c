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

/// Hosts with metadata: v1 in zone a, v2 in zone a, v2 in zone b, and one host with no metadata.
func subsetCluster(lbType: String = "LB_ROUNDROBIN", fallback: SubsetFallback, defaultSubset: [String: String] = ["version": "v1"]) -> ClusterConfig {
    let metadata: [[String: String]] = [["version": "v1", "zone": "a"], ["version": "v2", "zone": "a"], ["version": "v2", "zone": "b"], [:]]
    let hosts = metadata.enumerated().map {
        HostConfig(address: SocketAddress.parse("127.0.0.1:\(8000 + $0.offset)")!, hostname: "", weight: 1, metadata: $0.element)
    }
    var config = ClusterConfig(name: "c", lbType: lbType, hosts: hosts, connectTimeoutMS: 1000, idleTimeoutMS: 1000,
                               maxRequestsPerConnection: 1024, connectionBufferLimit: 65536, maxIdlePerHost: 16)
    config.subsets = SubsetTable(hosts: hosts, selectors: [["version"], ["zone", "version"]], fallback: fallback, defaultSubset: defaultSubset)
    return config
}

func runtime(_ config: ClusterConfig) -> ClusterRuntime {
    ClusterRuntime(config: config, loop: EventLoop(), buffers: BufferPool(), logger: Logger(level: .error, fd: 2))
}

/// The hosts `subset` reaches over many picks.
func reached(_ r: ClusterRuntime, _ subset: HostSubset, picks: Int = 400) -> Set<Int?> {
    Set((0..<picks).map { _ in r.chooseHost(subset, LoadBalancerContext()) })
}

struct SubsetBalancerTests {
    @Test func subsetsAreKeyedByTheExactSortedTuple() {
        let table = subsetCluster(fallback: .noFallback).subsets!
        func hosts(_ c: [String: String]) -> [Int]? {
            guard case .subset(let i) = table.resolve(MetadataCriteria(c)) else { return nil }
            return table.subsets[i]
        }
        #expect(hosts(["version": "v2"]) == [1, 2])
        #expect(hosts(["zone": "a", "version": "v2"]) == [1])
        #expect(hosts(["version": "v1", "zone": "a"]) == [0])
        // {zone} is no selector's key set; v3 has no host; no criteria: every host.
        #expect(table.resolve(MetadataCriteria(["zone": "a"])) == .fallback)
        #expect(table.resolve(MetadataCriteria(["version": "v3"])) == .fallback)
        #expect(table.resolve(MetadataCriteria([:])) == .all)
        // Repeated selectors (in any key order) make no second copy.
        let twice = SubsetTable(hosts: subsetCluster(fallback: .noFallback).hosts, selectors: [["zone", "version"], ["version", "zone"]],
                                fallback: .noFallback, defaultSubset: [:])
        #expect(twice.subsets.count == 3)
    }

    @Test func aSubsetSpreadsOverItsOwnHostsOnly() {
        let r = runtime(subsetCluster(fallback: .anyEndpoint))
        let table = r.config.subsets!
        guard case .subset(let v2) = table.resolve(MetadataCriteria(["version": "v2"])) else { Issue.record("no v2"); return }
        // Round robin inside the subset: 1, 2, 1, 2 (from either start).
        let picks = (0..<4).map { _ in r.chooseHost(.subset(v2), LoadBalancerContext())! }
        #expect(Set(picks) == [1, 2] && picks[0] == picks[2] && picks[1] == picks[3], "\(picks)")
        #expect(reached(r, .all) == [0, 1, 2, 3])
    }

    @Test func eachFallbackPolicyDecidesWhereUnmatchedRequestsGo() {
        #expect(reached(runtime(subsetCluster(fallback: .noFallback)), .fallback) == [nil])
        #expect(reached(runtime(subsetCluster(fallback: .anyEndpoint)), .fallback) == [0, 1, 2, 3])
        #expect(reached(runtime(subsetCluster(fallback: .defaultSubset)), .fallback) == [0])
        #expect(reached(runtime(subsetCluster(fallback: .defaultSubset, defaultSubset: ["version": "v2"])), .fallback) == [1, 2])
        // MOSN: an empty default_subset matches every host; one matching nothing leaves no host.
        #expect(reached(runtime(subsetCluster(fallback: .defaultSubset, defaultSubset: [:])), .fallback) == [0, 1, 2, 3])
        #expect(reached(runtime(subsetCluster(fallback: .defaultSubset, defaultSubset: ["version": "v9"])), .fallback) == [nil])
    }

    @Test func leastRequestInASubsetReadsTheClusterWideCounts() {
        let r = runtime(subsetCluster(lbType: "LB_LEAST_REQUEST", fallback: .noFallback))
        guard case .subset(let v2) = r.config.subsets!.resolve(MetadataCriteria(["version": "v2"])) else { Issue.record("no v2"); return }
        // Host 1 busy: the subset {1, 2} sends everything to host 2 (two hosts, two distinct draws).
        let started = r.requestStarted(host: 1)
        #expect(started == 0)   // not timed: no clock read
        #expect(reached(r, .subset(v2)) == [2])
        r.requestEnded(host: 1, startedUS: started)
        #expect(reached(r, .subset(v2)) == [1, 2])
        #expect(r.stats.inFlight == 0 && r.load.activeRequests == [0, 0, 0, 0])
    }
}

struct MoreBalancerTests {
    func hosts(_ weights: [Int], lbType: String, load: HostLoad? = nil) -> (LoadBalancer, HostLoad) {
        let config = cluster(lbType: lbType, weights: weights)
        let load = load ?? HostLoad(hostCount: weights.count)
        return (LoadBalancerRegistry.make(BalancerHosts(config: config, members: Array(weights.indices), load: load)), load)
    }

    @Test func leastRequestPrefersIdleHosts() {
        // Ten hosts, host 0 with 5 requests in flight and the others idle: host 0 would win only
        // if both draws were host 0, and the second draw is always another host, so never.
        let (lb, load) = hosts(Array(repeating: 1, count: 10), lbType: "LB_LEAST_REQUEST")
        load.activeRequests[0] = 5
        let seen = counts(lb, hosts: 10, picks: 10_000)
        #expect(seen[0] == 0, "\(seen)")
        // The idle hosts share the rest evenly: 10 000 / 9 = 1 111 each; sd ≈ 31, tolerance 200.
        #expect(seen[1...].allSatisfy { abs($0 - 1_111) <= 200 }, "\(seen)")
        // Half the hosts loaded (1 request each): an idle host wins unless both draws are loaded,
        // (5/10)(4/9) = 22 % of picks. Expected loaded share 2 222 of 10 000; sd ≈ 42, tolerance 300.
        for h in 0..<5 { load.activeRequests[h] = 1 }
        let half = counts(lb, hosts: 10, picks: 10_000)
        #expect(abs(half[0..<5].reduce(0, +) - 2_222) <= 300, "\(half)")
    }

    @Test func leastConnectionPrefersHostsWithFewerOpenConnections() {
        let (lb, load) = hosts([1, 1, 1], lbType: "LB_LEAST_CONNECTION")
        load.openConnections = [3, 0, 3]
        // Host 1 wins whenever it is drawn: 2/3 of picks, 2 000 of 3 000 (sd 26); tolerance 200.
        #expect(abs(counts(lb, hosts: 3, picks: 3_000)[1] - 2_000) <= 200)
        load.openConnections = [0, 0, 0]
        load.activeRequests = [9, 0, 9]   // requests do not count for this one
        #expect(counts(lb, hosts: 3, picks: 3_000).allSatisfy { $0 > 700 })
    }

    @Test func upstreamConnectionsCountThemselvesOpenUntilTheyClose() throws {
        let r = runtime(cluster(lbType: "LB_LEAST_CONNECTION", weights: [1, 1]))
        let loop = EventLoop(), buffers = BufferPool()
        let c = try Connection.connect(toHost: 1, of: r.config, transports: nil, load: r.load, loop: loop, buffers: buffers)
        #expect(r.load.openConnections == [0, 1])
        c.close()
        c.close()
        #expect(r.load.openConnections == [0, 0])
    }

    @Test func peakEWMATakesPeaksAtOnceAndForgetsThemWithTime() {
        let load = HostLoad(hostCount: 1, measuresLatency: true)
        load.recordLatency(host: 0, startedUS: 0, nowUS: 1_000)          // 1 ms
        #expect(load.latencyUS[0] == 1_000)
        load.recordLatency(host: 0, startedUS: 1_000, nowUS: 51_000)     // a 50 ms peak: taken whole
        #expect(load.latencyUS[0] == 50_000)
        // A fast answer right after barely moves it; one 10 s later (the decay time) weighs 1 - 1/e.
        load.recordLatency(host: 0, startedUS: 51_000, nowUS: 52_000)
        #expect(load.latencyUS[0] > 49_000)
        let before = load.latencyUS[0]
        load.recordLatency(host: 0, startedUS: 10_051_000, nowUS: 10_052_000)
        let e = 2.718281828459045
        let expected = before / e + 1_000 * (1 - 1 / e)
        #expect(abs(load.latencyUS[0] - expected) < 1, "\(load.latencyUS[0]) vs \(expected)")
    }

    @Test func peakEWMAPrefersTheFasterHostUntilItIsBusy() {
        let (lb, load) = hosts([1, 1], lbType: "LB_PEAK_EWMA", load: HostLoad(hostCount: 2, measuresLatency: true))
        let now = monotonicMicroseconds()
        load.recordLatency(host: 0, startedUS: now - 10_000, nowUS: now)   // 10 ms
        load.recordLatency(host: 1, startedUS: now - 1_000, nowUS: now)    // 1 ms
        #expect(counts(lb, hosts: 2, picks: 200) == [0, 200])
        // 1 ms × 21 pending > 10 ms × 1: the slower, idle host wins.
        load.activeRequests[1] = 20
        #expect(counts(lb, hosts: 2, picks: 200) == [200, 0])
        // Never measured and busy: Finagle's penalty keeps traffic off it.
        let (fresh, freshLoad) = hosts([1, 1], lbType: "LB_PEAK_EWMA", load: HostLoad(hostCount: 2, measuresLatency: true))
        freshLoad.recordLatency(host: 0, startedUS: now - 50_000, nowUS: now)
        freshLoad.activeRequests[1] = 1
        #expect(counts(fresh, hosts: 2, picks: 200) == [200, 0])
    }

    @Test func timedClustersStampTheirExchanges() {
        let r = runtime(cluster(lbType: "LB_PEAK_EWMA", weights: [1, 1]))
        let started = r.requestStarted(host: 0)
        #expect(started > 0)
        r.requestEnded(host: 0, startedUS: started - 2_000)
        #expect(r.load.latencyUS[0] >= 2_000 && r.load.activeRequests == [0, 0])
    }

    @Test func leastRequestWithoutLoadFollowsWeights() {
        // All idle: the first draw decides, in proportion to weight (1:3). Expected 2 500 / 7 500
        // of 10 000; sd ≈ 43, tolerance 250.
        let (lb, _) = hosts([1, 3], lbType: "LB_LEAST_REQUEST")
        let seen = counts(lb, hosts: 2, picks: 10_000)
        #expect(abs(seen[0] - 2_500) <= 250, "\(seen)")
    }

    func keyed(_ lb: LoadBalancer, _ key: UInt64) -> Int { lb.chooseHost(LoadBalancerContext(hashKey: key))! }

    @Test(arguments: ["LB_MAGLEV", "LB_RING_HASH"])
    func hashBalancersSpreadKeysAndKeepThemWhenAHostGoes(lbType: String) {
        let names = (0..<5).map { "10.0.0.\($0):80" }
        func make(_ names: [String]) -> LoadBalancer {
            lbType == "LB_MAGLEV" ? MaglevBalancer(names: names) : RingHashBalancer(names: names, weights: names.map { _ in 1 })
        }
        let five = make(names)
        let keys = (0..<20_000).map { HashKey.mix(UInt64($0)) }
        var share = Array(repeating: 0, count: 5)
        for k in keys { share[keyed(five, k)] += 1 }
        // 4 000 each expected. Maglev's table is within 1 % by construction; a ring of 100 points
        // per host is within about 10 %: tolerance 15 % (600 keys).
        #expect(share.allSatisfy { abs($0 - 4_000) <= 600 }, "\(lbType): \(share)")
        // Same key, same host, every time.
        #expect(keys.prefix(100).allSatisfy { keyed(five, $0) == keyed(five, $0) })
        // Host 2 removed: its keys move; of the others' keys at least 90 % stay (a modulo hash
        // would keep about 20 %). Maglev promises "most", the ring all of them.
        let four = make(names.enumerated().filter { $0.offset != 2 }.map(\.element))
        let before = keys.map { names[keyed(five, $0)] }
        let after = keys.map { names.enumerated().filter { $0.offset != 2 }.map(\.element)[keyed(four, $0)] }
        let kept = zip(before, after).filter { $0.0 != names[2] && $0.0 == $0.1 }.count
        let others = before.filter { $0 != names[2] }.count
        #expect(Double(kept) >= 0.9 * Double(others), "\(lbType): kept \(kept) of \(others)")
        #expect(!after.contains(names[2]))
    }

    @Test func ringHashHonoursWeights() {
        let ring = RingHashBalancer(names: ["a:1", "b:1"], weights: [1, 3])
        var share = [0, 0]
        for k in 0..<20_000 { share[keyed(ring, HashKey.mix(UInt64(k)))] += 1 }
        // Expected 5 000 / 15 000; tolerance 15 % of the small share.
        #expect(abs(share[0] - 5_000) <= 750, "\(share)")
    }

    @Test func hashBalancersWithoutAKeyUseTheClientAddressAndEmptyOnesPickNothing() {
        #expect(MaglevBalancer(names: []).chooseHost() == nil)
        #expect(RingHashBalancer(names: [], weights: []).chooseHost() == nil)
        // No key and no connection: hash 0, one fixed host.
        let m = MaglevBalancer(names: ["a:1", "b:1", "c:1"])
        #expect(Set((0..<50).map { _ in m.chooseHost()! }).count == 1)
    }

    @Test func hashPoliciesHashTheConfiguredPart() {
        let cookie = Array("session".utf8)
        func cookieHash(_ header: String) -> UInt64 {
            let bytes = Array(header.utf8)
            return bytes.withUnsafeBufferPointer { HashPolicy.cookieHash($0.baseAddress!, $0.count, cookie) }
        }
        let alone = cookieHash("session=abc")
        #expect(alone != 0)
        #expect(cookieHash("a=1; session=abc") == alone)
        #expect(cookieHash("a=1;session=abc ; b=2") == alone)
        #expect(cookieHash("sessionx=abc; xsession=abc") == 0)
        #expect(cookieHash("session=abd") != alone)
    }
}
