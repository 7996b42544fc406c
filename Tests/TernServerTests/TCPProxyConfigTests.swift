import Testing
@testable import TernServer
import TernCore

/// `tcp_proxy` config as MOSN writes it, and the errors for what Tern cannot honour.
struct TCPProxyConfigTests {
    func config(filter: String, clusters: String = #"{ "name": "a", "hosts": [{ "address": "127.0.0.1:9001" }] }, { "name": "b", "hosts": [{ "address": "127.0.0.1:9002" }] }"#,
                listener: String = "") -> String {
        """
        { "servers": [{ "default_log_level": "WARN", "listeners": [{ "name": "l", "address": "127.0.0.1:0",\(listener)
            "filter_chains": [{ "filters": [{ "type": "tcp_proxy", "config": \(filter) }] }] }] }],
          "cluster_manager": { "clusters": [\(clusters)] } }
        """
    }

    func settings(_ r: ConfigResult) throws -> TCPProxySettings {
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        return try #require(plan.listeners[0].filters.first as? TCPProxyFilterPlan).settings
    }

    @Test func routesReadGoNamesAndSnakeCaseAndMatchInOrder() throws {
        let r = load(config(filter: """
        { "stat_prefix": "db", "max_connect_attempts": 2, "idle_timeout": "30s", "routes": [
            { "cluster": "a", "SourceAddrs": [{ "address": "10.0.0.0", "length": 8 }], "DestinationPort": "5432,6000-6010" },
            { "cluster": "b", "destination_addrs": [{ "address": "fd00::", "length": 8 }] },
            { "cluster": "b" } ] }
        """))
        let s = try settings(r)
        #expect(s.statPrefix == "db" && s.maxConnectAttempts == 2 && s.idleTimeoutMS == 30_000)
        #expect(s.routes.map(\.clusterIndex) == [0, 1, 1])
        let first = s.routes[0]
        let client = SocketAddress.parse("10.1.2.3:40000")!, other = SocketAddress.parse("192.168.0.1:40000")!
        #expect(first.matches(source: client, destination: SocketAddress.parse("127.0.0.1:5432")))
        #expect(first.matches(source: client, destination: SocketAddress.parse("127.0.0.1:6005")))
        #expect(!first.matches(source: client, destination: SocketAddress.parse("127.0.0.1:6011")))
        #expect(!first.matches(source: other, destination: SocketAddress.parse("127.0.0.1:5432")))
        #expect(!first.matches(source: nil, destination: SocketAddress.parse("127.0.0.1:5432")))
        #expect(s.routes[1].matches(source: other, destination: SocketAddress.parse("[fd12::1]:80")))
        #expect(!s.routes[1].matches(source: other, destination: SocketAddress.parse("[fe80::1]:80")))
        // An empty route matches anything (MOSN's code matches nothing; Envoy and Tern: anything).
        #expect(s.routes[2].matches(source: nil, destination: nil))
    }

    @Test func clusterKeyTakesEveryConnectionAsInMOSN() throws {
        let s = try settings(load(config(filter: #"{ "cluster": "b", "routes": [{ "cluster": "a" }] }"#)))
        #expect(s.routes.count == 1 && s.routes[0].clusterIndex == 1 && s.routes[0].matches(source: nil, destination: nil))
    }

    @Test func idleTimeoutAsGoNanosecondsAsMOSNDecodesIt() throws {
        #expect(try settings(load(config(filter: #"{ "cluster": "a", "idle_timeout": 5000000000 }"#))).idleTimeoutMS == 5_000)
        // Absent or 0: the listener's connection_idle_timeout.
        #expect(try settings(load(config(filter: #"{ "cluster": "a", "idle_timeout": 0 }"#, listener: #" "connection_idle_timeout": "7s","#))).idleTimeoutMS == 7_000)
        let bad = load(config(filter: #"{ "cluster": "a", "idle_timeout": -1 }"#))
        #expect(hasError(bad, at: "$.servers[0].listeners[0].filter_chains[0].filters[0].config.idle_timeout", saying: "duration"), "\(bad.diagnostics.errors)")
    }

    @Test func errorsNameTheirPath() {
        let base = "$.servers[0].listeners[0].filter_chains[0].filters[0].config"
        let cases: [(String, String, [String])] = [
            (#"{ "cluster": "nope" }"#, base + ".cluster", ["unknown cluster"]),
            (#"{ }"#, base, ["cluster", "routes"]),
            (#"{ "routes": [{ "cluster": "a", "SourceAddrs": [{ "address": "10.0.0.0", "length": 33 }] }] }"#, base + ".routes[0].SourceAddrs[0]", ["invalid CIDR"]),
            (#"{ "routes": [{ "cluster": "a", "SourceAddrs": [{ "address": "not-an-ip", "length": 8 }] }] }"#, base + ".routes[0].SourceAddrs[0]", ["invalid CIDR"]),
            (#"{ "routes": [{ "cluster": "a", "SourceAddrs": [{ "address": "10.0.0.0" }] }] }"#, base + ".routes[0].SourceAddrs[0].length", ["required"]),
            (#"{ "routes": [{ "cluster": "a", "DestinationPort": "80,90-70" }] }"#, base + ".routes[0].DestinationPort", ["90-70"]),
            (#"{ "routes": [{ "cluster": "a", "DestinationPort": "http" }] }"#, base + ".routes[0].DestinationPort", ["http"]),
            (#"{ "cluster": "a", "max_conect_attempts": 3 }"#, base + ".max_conect_attempts", ["did you mean", "max_connect_attempts"]),
        ]
        for (filter, path, words) in cases {
            let r = load(config(filter: filter))
            #expect(r.plan == nil, "\(filter)")
            #expect(r.diagnostics.errors.contains { e in e.hasPrefix(path + ":") && words.allSatisfy { e.contains($0) } }, "\(filter): \(r.diagnostics.errors)")
        }
    }

    @Test func originalDestinationClustersTakeNoHostsAndOnlyTheirBalancer() throws {
        let ok = load(config(filter: #"{ "cluster": "o" }"#, clusters: #"{ "name": "o", "type": "ORIGINAL_DST", "lb_type": "LB_ORIGINAL_DST" }"#))
        let plan = try #require(ok.plan, "\(ok.diagnostics.errors)")
        #expect(plan.clusters[0].originalDestination)
        let path = "$.cluster_manager.clusters[0]"
        let withHosts = load(config(filter: #"{ "cluster": "o" }"#, clusters: #"{ "name": "o", "type": "ORIGINAL_DST", "hosts": [{ "address": "127.0.0.1:1" }] }"#))
        #expect(hasError(withHosts, at: path + ".hosts", saying: "no hosts"), "\(withHosts.diagnostics.errors)")
        let wrongBalancer = load(config(filter: #"{ "cluster": "o" }"#, clusters: #"{ "name": "o", "type": "ORIGINAL_DST", "lb_type": "LB_RANDOM" }"#))
        #expect(hasError(wrongBalancer, at: path + ".lb_type", saying: "LB_ORIGINAL_DST"), "\(wrongBalancer.diagnostics.errors)")
        let balancerOnly = load(config(filter: #"{ "cluster": "o" }"#, clusters: #"{ "name": "o", "lb_type": "LB_ORIGINAL_DST", "hosts": [{ "address": "127.0.0.1:1" }] }"#))
        #expect(hasError(balancerOnly, at: path + ".lb_type", saying: "ORIGINAL_DST"), "\(balancerOnly.diagnostics.errors)")
        let byHeader = load(config(filter: #"{ "cluster": "o" }"#, clusters: #"{ "name": "o", "type": "ORIGINAL_DST", "original_dst_lb_config": { "use_header": true } }"#))
        #expect(hasError(byHeader, at: path + ".original_dst_lb_config.use_header", saying: "not supported"), "\(byHeader.diagnostics.errors)")
    }

    @Test func proxiedRoutesToOriginalDestinationClustersAreRefused() {
        let json = """
        { "servers": [{ "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
              "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "o"} }] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:0", "filter_chains": [{ "filters": [{ "type": "proxy",
              "config": { "downstream_protocol": "Http1", "router_config_name": "r" } }] }] }] }],
          "cluster_manager": { "clusters": [{ "name": "o", "type": "ORIGINAL_DST", "lb_type": "LB_ORIGINAL_DST" }] } }
        """
        let r = load(json)
        #expect(hasError(r, at: "$.servers[0].routers[0].virtual_hosts[0].routers[0].route.cluster_name", saying: "ORIGINAL_DST"), "\(r.diagnostics.errors)")
    }
}
