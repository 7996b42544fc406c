import Testing
@testable import TernServer
import TernCore

/// `lb_subset_config`, host metadata, route `metadata_match`, `hash_policy`, `lbconfig` and the
/// new `lb_type`s, as the config compiler reads them.
struct SubsetConfigTests {
    static let routePath = "$.servers[0].routers[0].virtual_hosts[0].routers[0].route"

    /// Three hosts: v1 in zone a, v2 in zone a, v2 in zone b.
    static func cluster(_ subsetConfig: String, lbType: String = "LB_ROUNDROBIN") -> String {
        """
        "name": "c", "lb_type": "\(lbType)", \(subsetConfig) "hosts": [
          {"address": "127.0.0.1:8001", "metadata": {"filter_metadata": {"mosn.lb": {"version": "v1", "zone": "a"}}}},
          {"address": "127.0.0.1:8002", "metadata": {"filter_metadata": {"mosn.lb": {"version": "v2", "zone": "a"}}}},
          {"address": "127.0.0.1:8003", "metadata": {"filter_metadata": {"mosn.lb": {"version": "v2", "zone": "b"}}}}]
        """
    }

    static func match(_ pairs: String) -> String { "\"metadata_match\": {\"filter_metadata\": {\"mosn.lb\": {\(pairs)}}}" }

    static let selectors = "\"lb_subset_config\": {\"fall_back_policy\": 2, \"default_subset\": {\"version\": \"v1\"}, \"subset_selectors\": [[\"version\"], [\"zone\", \"version\"]]},"

    func clusterRoute(_ r: ConfigResult) throws -> ClusterRoute {
        let table = try routeTable(try #require(r.plan))
        let route = try #require(table.virtualHosts[0].routes.first)
        guard case .cluster(let c) = route.action else { throw Failure.notACluster }
        return c
    }
    enum Failure: Error { case notACluster }

    @Test func subsetsAreComputedFromHostMetadataAtLoad() throws {
        let r = load(config(cluster: Self.cluster(Self.selectors)))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let table = try #require(r.plan?.clusters[0].subsets)
        #expect(table.fallback == .defaultSubset)
        // [version]: v1 {0}, v2 {1, 2}; [version, zone] (keys sorted): v1a {0}, v2a {1}, v2b {2}.
        let byName = Dictionary(uniqueKeysWithValues: zip(table.criteria.map(\.description), table.subsets))
        #expect(byName == ["{version=v1}": [0], "{version=v2}": [1, 2], "{version=v1, zone=a}": [0],
                           "{version=v2, zone=a}": [1], "{version=v2, zone=b}": [2]], "\(byName)")
        #expect(table.defaultHosts == [0])
    }

    @Test func routeMetadataMatchResolvesToItsSubsetAtLoad() throws {
        let r = load(config(route: "{\"cluster_name\": \"c\", \(Self.match("\"zone\": \"a\", \"version\": \"v2\""))}", cluster: Self.cluster(Self.selectors)))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let entry = try clusterRoute(r).clusters[0]
        let table = try #require(r.plan?.clusters[0].subsets)
        guard case .subset(let i) = entry.subset else { Issue.record("\(entry.subset)"); return }
        #expect(table.subsets[i] == [1])
    }

    @Test func criteriaNamingNoSubsetTakeTheFallbackWithAWarning() throws {
        // {zone} alone is no selector's key set (MOSN's lookup is exact), and v3 has no host.
        for pairs in ["\"zone\": \"a\"", "\"version\": \"v3\""] {
            let r = load(config(route: "{\"cluster_name\": \"c\", \(Self.match(pairs))}", cluster: Self.cluster(Self.selectors)))
            #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
            #expect(try clusterRoute(r).clusters[0].subset == .fallback)
            #expect(r.diagnostics.warnings.contains { $0.hasPrefix(Self.routePath + ".metadata_match:") && $0.contains("DEFAULT_SUBSET") },
                    "\(r.diagnostics.warnings)")
        }
    }

    @Test func weightedClusterEntriesCarryTheirOwnMetadataOverTheRoutes() throws {
        let route = """
        {"weighted_clusters": [{"cluster": {"name": "c", "weight": 90, \(Self.match("\"version\": \"v1\""))}},
                               {"cluster": {"name": "c", "weight": 10, \(Self.match("\"version\": \"v2\", \"zone\": \"b\""))}},
                               {"cluster": {"name": "c", "weight": 1}}],
         \(Self.match("\"version\": \"v2\""))}
        """
        let r = load(config(route: route, cluster: Self.cluster(Self.selectors)))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let table = try #require(r.plan?.clusters[0].subsets)
        let hosts = try clusterRoute(r).clusters.map { entry -> [Int] in
            guard case .subset(let i) = entry.subset else { return [] }
            return table.subsets[i]
        }
        // The entry's pairs win; the third entry inherits the route's {version: v2}.
        #expect(hosts == [[0], [2], [1, 2]])
    }

    @Test func metadataMatchOnAClusterWithoutSubsetsIsAnError() {
        // MOSN would ignore it and use every host: weaker routing than written.
        let r = load(config(route: "{\"cluster_name\": \"c\", \(Self.match("\"version\": \"v1\""))}", cluster: Self.cluster("")))
        #expect(r.plan == nil)
        #expect(hasError(r, at: Self.routePath + ".metadata_match", saying: "lb_subset_config"), "\(r.diagnostics.errors)")
        let weighted = load(config(route: "{\"weighted_clusters\": [{\"cluster\": {\"name\": \"c\", \(Self.match("\"version\": \"v1\""))}}]}",
                                   cluster: Self.cluster("")))
        #expect(hasError(weighted, at: Self.routePath + ".weighted_clusters[0].cluster.metadata_match", saying: "lb_subset_config"),
                "\(weighted.diagnostics.errors)")
    }

    @Test func badSubsetConfigsAreErrorsWithTheirPaths() {
        let base = "$.cluster_manager.clusters[0].lb_subset_config"
        let policy = load(config(cluster: Self.cluster("\"lb_subset_config\": {\"fall_back_policy\": 3, \"subset_selectors\": [[\"version\"]]},")))
        #expect(hasError(policy, at: base + ".fall_back_policy", saying: "between 0 and 2"), "\(policy.diagnostics.errors)")
        let selector = load(config(cluster: Self.cluster("\"lb_subset_config\": {\"subset_selectors\": [\"version\"]},")))
        #expect(hasError(selector, at: base + ".subset_selectors[0]", saying: "list of metadata keys"), "\(selector.diagnostics.errors)")
        let empty = load(config(cluster: Self.cluster("\"lb_subset_config\": {\"subset_selectors\": [[]]},")))
        #expect(hasError(empty, at: base + ".subset_selectors[0]", saying: "at least one"), "\(empty.diagnostics.errors)")
        let typo = load(config(cluster: Self.cluster("\"lb_subset_config\": {\"fallback_policy\": 1, \"subset_selectors\": [[\"version\"]]},")))
        #expect(hasError(typo, at: base + ".fallback_policy", saying: "did you mean"), "\(typo.diagnostics.errors)")
        let value = load(config(route: "{\"cluster_name\": \"c\", \(Self.match("\"version\": 2"))}", cluster: Self.cluster(Self.selectors)))
        #expect(hasError(value, at: Self.routePath + ".metadata_match.filter_metadata.mosn.lb.version", saying: "expected a string"),
                "\(value.diagnostics.errors)")
    }

    @Test func newBalancerNamesAreKnownAndUnknownOnesStayErrors() {
        for lbType in ["LB_LEAST_REQUEST", "LB_LEAST_CONNECTION", "LB_PEAK_EWMA", "LB_MAGLEV", "LB_RING_HASH", "LB_WEIGHTED_ROUNDROBIN", "LB_REQUEST_ROUNDROBIN"] {
            let r = load(config(cluster: Self.cluster("", lbType: lbType)))
            #expect(r.diagnostics.errors.isEmpty, "\(lbType): \(r.diagnostics.errors)")
        }
        let unknown = load(config(cluster: Self.cluster("", lbType: "LB_FASTEST")))
        #expect(hasError(unknown, at: "$.cluster_manager.clusters[0].lb_type", saying: "LB_FASTEST"), "\(unknown.diagnostics.errors)")
    }

    @Test func lbconfigChoiceCountIsRead() throws {
        let r = load(config(cluster: Self.cluster("\"lbconfig\": {\"choice_count\": 3, \"active_request_bias\": 1.0},", lbType: "LB_LEAST_REQUEST")))
        #expect(r.plan?.clusters[0].balancerSettings.choiceCount == 3, "\(r.diagnostics.errors)")
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("$.cluster_manager.clusters[0].lbconfig.active_request_bias:") })
        let bad = load(config(cluster: Self.cluster("\"lbconfig\": {\"choice_count\": 0},", lbType: "LB_LEAST_REQUEST")))
        #expect(hasError(bad, at: "$.cluster_manager.clusters[0].lbconfig.choice_count"), "\(bad.diagnostics.errors)")
    }

    @Test func hashPolicyIsReadForHashBalancers() throws {
        func policyConfig(_ entry: String) -> ConfigResult {
            load(config(route: "{\"cluster_name\": \"c\", \"hash_policy\": [\(entry)]}", cluster: Self.cluster("", lbType: "LB_MAGLEV")))
        }
        func policy(_ entry: String) throws -> (HashPolicy, ConfigResult) {
            let r = policyConfig(entry)
            return (try clusterRoute(r).hashPolicy, r)
        }
        guard case .header(let name, _) = try policy("{\"header\": {\"key\": \"X-User\"}}").0 else { Issue.record("header"); return }
        #expect(name == Array("x-user".utf8))
        guard case .cookie(let cookie) = try policy("{\"cookie\": {\"name\": \"session\", \"ttl\": \"10s\"}}").0 else { Issue.record("cookie"); return }
        #expect(cookie == Array("session".utf8))
        guard case .sourceAddress = try policy("{\"source_ip\": {}}").0 else { Issue.record("source_ip"); return }
        let both = policyConfig("{\"header\": {\"key\": \"a\"}, \"cookie\": {\"name\": \"b\"}}")
        #expect(hasError(both, at: Self.routePath + ".hash_policy[0]", saying: "only one"), "\(both.diagnostics.errors)")
        #expect(hasError(policyConfig("{\"header\": {}}"), at: Self.routePath + ".hash_policy[0].header.key", saying: "required"))
        #expect(hasError(policyConfig("{\"cookie\": {\"name\": \"\"}}"), at: Self.routePath + ".hash_policy[0].cookie.name", saying: "must name"))
        // On a cluster that does not hash, the policy does nothing: said so.
        let unused = load(config(route: "{\"cluster_name\": \"c\", \"hash_policy\": [{\"source_ip\": {}}]}", cluster: Self.cluster("")))
        #expect(unused.diagnostics.warnings.contains { $0.hasPrefix(Self.routePath + ".hash_policy:") && $0.contains("unused") })
    }
}
