import Foundation
import Testing
@testable import TernServer
import TernCore
import TernTestSupport

/// The config file of this name under Tests/TernServerTests/configs (MOSN-shaped, written for Tern).
func fixture(_ name: String) -> ConfigResult {
    ConfigLoader.load(path: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("configs/\(name)").path)
}

func routeTable(_ plan: ServerPlan, listener: Int = 0) throws -> RouteTable {
    let proxy = try #require(plan.listeners[listener].filters.first as? ProxyFilterPlan)
    return proxy.settings.routes
}

func hasError(_ r: ConfigResult, at path: String, saying words: String...) -> Bool {
    r.diagnostics.errors.contains { e in e.hasPrefix(path + ":") && words.allSatisfy { e.contains($0) } }
}

/// Config MOSN runs that Tern used to refuse or half-apply.
struct ConfigFidelityTests {
    @Test func routerEntriesWithoutMatchMatchEveryRequestHTTPAndBolt() throws {
        for router in ["{ \"route\": {\"cluster_name\": \"c\"} }", "{ \"match\": {}, \"route\": {\"cluster_name\": \"c\"} }"] {
            let json = config().replacingOccurrences(of: "{ \"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster_name\": \"c\"} }", with: router)
            #expect(json.contains(router))
            let r = load(json)
            #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
            let table = try routeTable(try #require(r.plan))
            // An HTTP request with any path, and a bolt request (no path, only RPC headers).
            #expect(table.route(FakeRequest(path: "/any/path", host: "x")) != nil)
            #expect(table.route(FakeRequest(path: "", headers: [("service", "com.example.Echo:1.0")])) != nil)
            #expect(table.route(FakeRequest(path: "")) != nil)
        }
    }

    @Test func processorTakesAutoStringsAndNumbersAsMOSNDoes() {
        func workers(_ value: String) -> ConfigResult {
            load(config().replacingOccurrences(of: "\"default_log_level\": \"WARN\",", with: "\"default_log_level\": \"WARN\", \"processor\": \(value),"))
        }
        for (value, expected) in [("\"auto\"", nil), ("\"Auto\"", nil), ("\"AUTO\"", nil), ("\"4\"", 4), ("3", 3), ("0", nil), ("-1", nil)] as [(String, Int?)] {
            let r = workers(value)
            #expect(r.plan != nil, "\(value): \(r.diagnostics.errors)")
            #expect(r.plan?.workers == expected, "\(value)")
        }
        let word = workers("\"many\"")
        #expect(word.plan?.workers == nil)
        #expect(word.diagnostics.warnings.contains { $0.hasPrefix("$.servers[0].processor:") })
        #expect(hasError(workers("5000"), at: "$.servers[0].processor", saying: "1024"))
        #expect(hasError(workers("\"5000\""), at: "$.servers[0].processor", saying: "1024"))
        #expect(hasError(workers("1.5"), at: "$.servers[0].processor"))
    }

    @Test func loadBalancerNamesMOSNHasAreAccepted() throws {
        for lb in ["LB_RANDOM", "LB_ROUNDROBIN", "LB_WEIGHTED_ROUNDROBIN", "LB_REQUEST_ROUNDROBIN"] {
            let r = load(config(cluster: "\"name\": \"c\", \"lb_type\": \"\(lb)\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]"))
            #expect(r.plan?.clusters.first?.lbType == lb, "\(lb): \(r.diagnostics.errors)")
        }
        // MOSN falls back to round robin when lb_type is absent.
        let absent = load(config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]"))
        #expect(absent.plan?.clusters.first?.lbType == "LB_ROUNDROBIN")
    }

    @Test func hostWeightsFollowMOSNsRange() throws {
        func cluster(_ weight: String) -> ConfigResult {
            load(config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}, {\"address\": \"127.0.0.1:8081\"\(weight)}]"))
        }
        #expect(try #require(cluster("").plan).clusters[0].hosts.map(\.weight) == [1, 1])
        #expect(try #require(cluster(", \"weight\": 128").plan).clusters[0].hosts.map(\.weight) == [1, 128])
        let zero = cluster(", \"weight\": 0")
        #expect(try #require(zero.plan).clusters[0].hosts.map(\.weight) == [1, 1])
        #expect(zero.diagnostics.warnings.contains { $0.hasPrefix("$.cluster_manager.clusters[0].hosts[1].weight:") })
        for bad in ["129", "-1", "1.5", "\"2\""] {
            #expect(hasError(cluster(", \"weight\": \(bad)"), at: "$.cluster_manager.clusters[0].hosts[1].weight"), "\(bad)")
        }
    }

    @Test func durationsAndCountsAreRangeChecked() {
        let cluster = "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]"
        #expect(hasError(load(config(cluster: cluster + ", \"connect_timeout\": \"-1s\"")), at: "$.cluster_manager.clusters[0].connect_timeout"))
        #expect(hasError(load(config(cluster: cluster + ", \"connect_timeout\": \"2h\"")), at: "$.cluster_manager.clusters[0].connect_timeout", saying: "1h"))
        #expect(hasError(load(config(cluster: cluster + ", \"idle_timeout\": \"25h\"")), at: "$.cluster_manager.clusters[0].idle_timeout", saying: "24h"))
        #expect(hasError(load(config(cluster: cluster + ", \"max_request_per_conn\": -5")), at: "$.cluster_manager.clusters[0].max_request_per_conn"))
        #expect(hasError(load(config(route: "{\"cluster_name\": \"c\", \"timeout\": \"100000h\"}")), at: "$.servers[0].routers[0].virtual_hosts[0].routers[0].route.timeout"))
        let proxy = "\"downstream_protocol\": \"Http1\", \"router_config_name\": \"r\""
        #expect(hasError(load(config(proxy: proxy + ", \"route_timeout\": \"25h\"")), at: "$.servers[0].listeners[0].filter_chains[0].filters[0].config.route_timeout"))
        #expect(hasError(load(config(proxy: proxy + ", \"max_header_count\": 0")), at: "$.servers[0].listeners[0].filter_chains[0].filters[0].config.max_header_count"))
        let bolt = "\"downstream_protocol\": \"bolt\", \"router_config_name\": \"r\""
        #expect(hasError(load(config(proxy: bolt + ", \"heartbeat_interval\": \"1ms\"")), at: "$.servers[0].listeners[0].filter_chains[0].filters[0].config.heartbeat_interval", saying: "100ms"))
        #expect(hasError(load(config().replacingOccurrences(of: "127.0.0.1:2045", with: "127.0.0.1:70000")), at: "$.servers[0].listeners[0].address"))
        #expect(hasError(load(config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:0\"}]")), at: "$.cluster_manager.clusters[0].hosts[0].address", saying: "port 0"))
        #expect(hasError(load(config().replacingOccurrences(of: "\"default_log_level\": \"WARN\",", with: "\"graceful_timeout\": \"48h\",")), at: "$.servers[0].graceful_timeout"))
        // A bare 0 is a duration for MOSN (Go's ParseDuration("0")); 0 keeps the connect default.
        let zero = load(config(cluster: cluster + ", \"connect_timeout\": 0, \"idle_timeout\": 0"))
        #expect(zero.plan?.clusters[0].connectTimeoutMS == 3_000, "\(zero.diagnostics.errors)")
        #expect(zero.plan?.clusters[0].idleTimeoutMS == 0)
    }

    @Test func configsWithoutAListenerToOpenAreErrors() {
        let none = load("""
        { "servers": [{ "routers": [] }], "cluster_manager": { "clusters": [] } }
        """)
        #expect(hasError(none, at: "$.servers[0].listeners", saying: "at least one listener"))
        let empty = load("{ \"servers\": [{ \"listeners\": [] }] }")
        #expect(hasError(empty, at: "$.servers[0].listeners"))
        let unbound = load(config().replacingOccurrences(of: "\"bind_port\": true", with: "\"bind_port\": false"))
        #expect(hasError(unbound, at: "$.servers", saying: "bind_port"))
    }

    @Test(arguments: [
        // (where the key goes, the key and value, the path of the error)
        ("listener", "\"stream_filters\": [{\"type\": \"gzip\", \"config\": {}}]", "$.servers[0].listeners[0].stream_filters[0].type"),
        ("match", "\"variables\": [{\"name\": \"x\", \"value\": \"y\"}]", "$.servers[0].routers[0].virtual_hosts[0].routers[0].match.variables"),
        ("match", "\"dsl_expressions\": [{\"expression\": \"true\"}]", "$.servers[0].routers[0].virtual_hosts[0].routers[0].match.dsl_expressions"),
        ("route", "\"cluster_header\": \"x-cluster\"", "$.servers[0].routers[0].virtual_hosts[0].routers[0].route.cluster_header"),
    ])
    func securityAndRoutingKeysAreRefusedUntilHonoured(place: String, key: String, path: String) {
        var json = config()
        switch place {
        case "listener": json = json.replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(key),")
        case "chain": json = json.replacingOccurrences(of: "\"filter_chains\": [{ ", with: "\"filter_chains\": [{ \(key), ")
        case "cluster": json = config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}], \(key)")
        case "match": json = json.replacingOccurrences(of: "\"match\": {\"prefix\": \"/\"}", with: "\"match\": {\"prefix\": \"/\", \(key)}")
        default: json = config(route: "{\"cluster_name\": \"c\", \(key)}")
        }
        #expect(json.contains(key))
        let r = load(json)
        #expect(r.plan == nil)
        #expect(hasError(r, at: path, saying: "not supported by Tern yet"), "\(r.diagnostics.errors)")
    }

    @Test func theBoltHeartbeatStreamFilterOfMOSNsRPCSamplesIsAcceptedAlone() {
        let healthcheck = "\"stream_filters\": [{\"type\": \"healthcheck\", \"config\": {}}]"
        let alone = load(config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(healthcheck),"))
        #expect(alone.diagnostics.errors.isEmpty, "\(alone.diagnostics.errors)")
        #expect(alone.diagnostics.warnings.contains { $0.hasPrefix("$.servers[0].listeners[0].stream_filters[0]:") })
        let withAnother = "\"stream_filters\": [{\"type\": \"healthcheck\"}, {\"type\": \"ipaccess\"}]"
        #expect(hasError(load(config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(withAnother),")),
                         at: "$.servers[0].listeners[0].stream_filters[1].type", saying: "not supported by Tern yet"))
    }

    @Test func disabledOrEmptySecurityKeysStayAccepted() {
        let json = config().replacingOccurrences(of: "\"bind_port\": true,", with:
            "\"bind_port\": true, \"use_original_dst\": false, \"inspector\": false, \"stream_filters\": [], \"listener_filters\": [], \"tls_context\": {\"status\": false},")
        let r = load(json)
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
    }

    @Test func nearMissKeysAreErrorsWithASuggestion() {
        let top = load(config().replacingOccurrences(of: "\"listeners\":", with: "\"listners\":"))
        #expect(hasError(top, at: "$.servers[0].listners", saying: "did you mean `listeners`?"))
        let route = load(config(route: "{\"cluster_name\": \"c\", \"cluster_nmae\": \"d\"}"))
        #expect(hasError(route, at: "$.servers[0].routers[0].virtual_hosts[0].routers[0].route.cluster_nmae", saying: "`cluster_name`"))
        let camel = load(config(cluster: "\"name\": \"c\", \"LbType\": \"LB_RANDOM\", \"hosts\": []"))
        #expect(hasError(camel, at: "$.cluster_manager.clusters[0].LbType", saying: "`lb_type`"))
        let timeout = load(config(cluster: "\"name\": \"c\", \"hosts\": [], \"conect_timeout\": \"1s\""))
        #expect(hasError(timeout, at: "$.cluster_manager.clusters[0].conect_timeout", saying: "`connect_timeout`"))
        // Far from every known key: still only a warning. Short keys need an exact fold.
        let far = load(config(cluster: "\"name\": \"c\", \"hosts\": [], \"frobnicate\": 1", extra: ", \"id\": 1"))
        #expect(far.plan != nil, "\(far.diagnostics.errors)")
        #expect(far.diagnostics.warnings.contains { $0.hasPrefix("$.cluster_manager.clusters[0].frobnicate:") })
        #expect(far.diagnostics.warnings.contains { $0.hasPrefix("$.id:") })
    }

    @Test func eachProblemIsReportedOnce() {
        // Auto builds bolt from the proxy config and the bolt upstream protocol reads it again.
        let r = load(config(proxy: "\"downstream_protocol\": \"Auto\", \"upstream_protocol\": \"bolt\", \"router_config_name\": \"r\", \"heartbeat_interval\": 5"))
        #expect(r.diagnostics.errors.filter { $0.contains("heartbeat_interval") }.count == 1, "\(r.diagnostics.errors)")
    }

    @Test func editDistanceCountsSwapsAsOneEdit() {
        #expect(editDistance(Array("clustername".utf8), Array("clusternmae".utf8), limit: 2) == 1)
        #expect(editDistance(Array("listeners".utf8), Array("listners".utf8), limit: 2) == 1)
        #expect(editDistance(Array("abc".utf8), Array("xyz".utf8), limit: 2) == 3)
        #expect(nearestKey(to: "Cluster_Manager", among: ["cluster_manager", "servers"]) == "cluster_manager")
        #expect(nearestKey(to: "path", among: ["name"]) == nil)
    }
}

/// MOSN-shaped configs written for these tests (Tests/TernServerTests/configs).
struct MOSNShapedConfigTests {
    @Test func tcpProxySampleShapeCompilesToOneRouteForItsCluster() throws {
        let r = fixture("tcpproxy.json")
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        let tcp = try #require(plan.listeners[0].filters.first as? TCPProxyFilterPlan)
        #expect(tcp.settings.routes.count == 1 && tcp.settings.routes[0].clusterIndex == 0)
        // No idle_timeout: the listener's connection_idle_timeout (90 s by default, as in MOSN).
        #expect(tcp.settings.idleTimeoutMS == 90_000)
        #expect(tcp.settings.maxConnectAttempts == nil)
    }

    @Test func sofarpcWithAutoAndRoutersWithoutMatchValidatesAndRoutes() throws {
        let r = fixture("sofarpc-auto-nomatch.json")
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        #expect(plan.workers == nil)
        #expect(plan.clusters.map(\.lbType) == ["LB_REQUEST_ROUNDROBIN", "LB_ROUNDROBIN"])
        #expect(plan.clusters[1].hosts.map(\.weight) == [3, 1])
        let bolt = FakeRequest(path: "", headers: [("service", "com.alipay.test.TestService:1.0")])
        #expect(try routeTable(plan, listener: 0).route(bolt) != nil)
        #expect(try routeTable(plan, listener: 1).route(bolt) != nil)
    }

    @Test func httpSampleValidates() throws {
        let r = fixture("http-sample.json")
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        #expect(plan.workers == 2 && plan.drainTimeoutMS == 10_000)
        #expect(plan.clusters[0].hosts.map(\.weight) == [2, 1])
        #expect(r.diagnostics.warnings.isEmpty, "\(r.diagnostics.warnings)")
        #expect(plan.admin.address == SocketAddress.parse("0.0.0.0:34901"))
    }

    @Test func downstreamAndUpstreamTLSAreRead() {
        let r = fixture("tls-server.json")
        #expect(r.plan == nil)
        // The fixture's certificate paths do not exist: the listener's context is read, and says so.
        #expect(hasError(r, at: "$.servers[0].listeners[0].filter_chains[0].tls_context.cert_chain", saying: "cannot read ./certs/cert.pem"))
        // The cluster's context has no ca_cert: never silently unverified.
        #expect(hasError(r, at: "$.cluster_manager.clusters[0].tls_context.ca_cert", saying: "required", "insecure_skip"))
    }
}
