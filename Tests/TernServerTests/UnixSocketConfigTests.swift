import Foundation
import Testing
@testable import TernServer
import TernCore

/// A listener and a cluster host, the way MOSN's uds-sample writes them.
private func unixConfig(listener: String, host: String = "\"address\": \"unix:/tmp/tern-up.sock\"") -> String {
    """
    { "servers": [{ "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
           "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "c"} }] }] }],
        "listeners": [{ "name": "l", \(listener), "bind_port": true,
           "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }] }] }],
      "cluster_manager": { "clusters": [{ "Name": "c", "type": "SIMPLE", "lb_type": "LB_RANDOM", "hosts": [{ \(host) }] }] } }
    """
}

@Suite struct UnixSocketConfigTests {
    @Test func unixListenerAndUnixHostCompile() throws {
        let r = load(unixConfig(listener: "\"address\": \"/tmp/tern-client.sock\", \"network\": \"unix\""))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        #expect(plan.listeners[0].address == (try SocketAddress.unix(path: "/tmp/tern-client.sock")))
        #expect(plan.clusters[0].hosts[0].address.description == "unix:/tmp/tern-up.sock")
    }

    @Test(arguments: ["UNIX", "Unix", "unix"])
    func networkIsReadInAnyCase(network: String) {
        let r = load(unixConfig(listener: "\"address\": \"/tmp/a.sock\", \"network\": \"\(network)\""))
        #expect(r.plan?.listeners[0].address.isUnix == true, "\(r.diagnostics.errors)")
    }

    @Test func abstractNamesAndUnixPrefixOnAListener() throws {
        let abstract = load(unixConfig(listener: "\"address\": \"@tern\", \"network\": \"unix\"", host: "\"address\": \"unix:@up\""))
        #expect(abstract.plan?.listeners[0].address.isAbstractUnix == true, "\(abstract.diagnostics.errors)")
        #expect(abstract.plan?.clusters[0].hosts[0].address.isAbstractUnix == true)
        let prefixed = load(unixConfig(listener: "\"address\": \"unix:/tmp/p.sock\", \"network\": \"unix\""))
        #expect(prefixed.plan?.listeners[0].address.unixPath == "/tmp/p.sock", "\(prefixed.diagnostics.errors)")
    }

    @Test func tooLongPathsAreErrorsAtTheirJSONPath() {
        let long = "/tmp/" + String(repeating: "x", count: 110)
        let listener = load(unixConfig(listener: "\"address\": \"\(long)\", \"network\": \"unix\""))
        #expect(listener.plan == nil)
        #expect(listener.diagnostics.errors.contains { $0.hasPrefix("$.servers[0].listeners[0].address:") && $0.contains("at most 107") }, "\(listener.diagnostics.errors)")
        let host = load(unixConfig(listener: "\"address\": \"/tmp/a.sock\", \"network\": \"unix\"", host: "\"address\": \"unix:\(long)\""))
        #expect(host.plan == nil)
        #expect(host.diagnostics.errors.contains { $0.hasPrefix("$.cluster_manager.clusters[0].hosts[0].address:") && $0.contains("at most 107") }, "\(host.diagnostics.errors)")
        let empty = load(unixConfig(listener: "\"address\": \"/tmp/a.sock\", \"network\": \"unix\"", host: "\"address\": \"unix:\""))
        #expect(empty.diagnostics.errors.contains { $0.hasPrefix("$.cluster_manager.clusters[0].hosts[0].address:") && $0.contains("empty") })
    }

    @Test func aPathNeedsNetworkUnixOrTheUnixScheme() {
        let listener = load(unixConfig(listener: "\"address\": \"/tmp/a.sock\""))
        #expect(listener.diagnostics.errors.contains { $0.hasPrefix("$.servers[0].listeners[0].address:") && $0.contains("\"network\": \"unix\"") }, "\(listener.diagnostics.errors)")
        let prefixedTCP = load(unixConfig(listener: "\"address\": \"unix:/tmp/a.sock\", \"network\": \"tcp\""))
        #expect(prefixedTCP.diagnostics.errors.contains { $0.hasPrefix("$.servers[0].listeners[0].address:") && $0.contains("\"network\": \"unix\"") })
        let host = load(unixConfig(listener: "\"address\": \"127.0.0.1:0\"", host: "\"address\": \"/tmp/up.sock\""))
        #expect(host.diagnostics.errors.contains { $0.hasPrefix("$.cluster_manager.clusters[0].hosts[0].address:") && $0.contains("unix:/tmp/up.sock") }, "\(host.diagnostics.errors)")
        let ip = load(unixConfig(listener: "\"address\": \"127.0.0.1:2045\", \"network\": \"unix\""))
        #expect(ip.plan?.listeners[0].address.unixPath == "127.0.0.1:2045", "a unix listener's address is a path, even one that looks like ip:port (as in MOSN)")
    }

    @Test func udpAndUnknownNetworksAreErrors() {
        let udp = load(unixConfig(listener: "\"address\": \"127.0.0.1:2045\", \"network\": \"udp\""))
        #expect(udp.plan == nil)
        #expect(udp.diagnostics.errors.contains { $0.hasPrefix("$.servers[0].listeners[0].network:") && $0.contains("not supported") }, "\(udp.diagnostics.errors)")
        let other = load(unixConfig(listener: "\"address\": \"127.0.0.1:2045\", \"network\": \"sctp\""))
        #expect(other.diagnostics.errors.contains { $0.hasPrefix("$.servers[0].listeners[0].network:") && $0.contains("unknown network") })
    }

    @Test func twoListenersOnOnePathAreAnError() {
        let json = unixConfig(listener: "\"address\": \"/tmp/same.sock\", \"network\": \"unix\"")
            .replacingOccurrences(of: "\"listeners\": [{", with: "\"listeners\": [{ \"name\": \"first\", \"address\": \"/tmp/same.sock\", \"network\": \"unix\", \"filter_chains\": [{ \"filters\": [{ \"type\": \"proxy\", \"config\": { \"downstream_protocol\": \"Http1\", \"router_config_name\": \"r\" } }] }] }, {")
        let r = load(json)
        #expect(r.diagnostics.errors.contains { $0.contains("both bind unix:/tmp/same.sock") }, "\(r.diagnostics.errors)")
    }
}
