import Foundation
import Glibc
import Testing
import TernTestSupport

/// Subset load balancing and the newer balancers through the real binary: four HTTP upstreams
/// (each logs the requests it gets, so a test sees who served what) carrying host metadata, and
/// routes whose `metadata_match` picks among them; then bolt routes picking a subset of bolt
/// servers that answer with their own name.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class LoadBalancingTests {
    /// v1 zone a, v2 zone a, v2 zone b, and one host with no metadata.
    static let metadata = [#"{"version": "v1", "zone": "a"}"#, #"{"version": "v2", "zone": "a"}"#, #"{"version": "v2", "zone": "b"}"#, "{}"]
    let upstreams: [PythonUpstream]
    let tern: TernProcess
    let port: UInt16

    deinit {
        tern.stop()
        for u in upstreams { u.stop() }
    }

    init() throws {
        upstreams = try (0..<4).map { _ in try PythonUpstream() }
        port = freePort()
        tern = try TernProcess(config: Self.config(listen: port, upstreams: upstreams.map(\.port)), waitFor: [port], extraArguments: ["--workers", "1"])
    }

    static func hosts(_ ports: [UInt16]) -> String {
        zip(ports, metadata).map { #"{"address": "127.0.0.1:\#($0.0)", "metadata": {"filter_metadata": {"mosn.lb": \#($0.1)}}}"# }
            .joined(separator: ", ")
    }

    static func subsetCluster(_ name: String, fallback: Int, ports: [UInt16]) -> String {
        #"""
        {"name": "\#(name)", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "1s",
         "lb_subset_config": {"fall_back_policy": \#(fallback), "default_subset": {"version": "v1"},
                              "subset_selectors": [["version"], ["version", "zone"]]},
         "hosts": [\#(hosts(ports))]}
        """#
    }

    static func match(_ pairs: String) -> String { #""metadata_match": {"filter_metadata": {"mosn.lb": {\#(pairs)}}}"# }

    static func route(_ prefix: String, _ action: String) -> String {
        #"{"match": {"prefix": "\#(prefix)"}, "route": \#(action)}"#
    }

    static func config(listen: UInt16, upstreams ports: [UInt16]) -> String {
        let routes = [
            route("/v2/", #"{"cluster_name": "none", \#(match(#""version": "v2""#))}"#),
            route("/v2b/", #"{"cluster_name": "none", \#(match(#""zone": "b", "version": "v2""#))}"#),
            route("/all/", #"{"cluster_name": "none"}"#),
            route("/nofallback/", #"{"cluster_name": "none", \#(match(#""version": "v9""#))}"#),
            route("/anyendpoint/", #"{"cluster_name": "any", \#(match(#""version": "v9""#))}"#),
            route("/defaultsubset/", #"{"cluster_name": "default", \#(match(#""version": "v9""#))}"#),
            route("/canary/", #"""
                {"weighted_clusters": [{"cluster": {"name": "none", "weight": 50, \#(match(#""version": "v1""#))}},
                                       {"cluster": {"name": "none", "weight": 50, \#(match(#""version": "v2", "zone": "b""#))}}]}
                """#),
            route("/lr/", #"{"cluster_name": "leastrequest", "prefix_rewrite": "/"}"#),
            route("/hash/", #"{"cluster_name": "maglev", "hash_policy": [{"header": {"key": "x-user"}}]}"#),
        ].joined(separator: ",\n")
        return #"""
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "WARN",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [\#(routes)] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\#(listen)", "bind_port": true,
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": {
                  "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }] }] }],
          "cluster_manager": { "clusters": [
            \#(subsetCluster("none", fallback: 0, ports: ports)),
            \#(subsetCluster("any", fallback: 1, ports: ports)),
            \#(subsetCluster("default", fallback: 2, ports: ports)),
            {"name": "leastrequest", "lb_type": "LB_LEAST_REQUEST", "hosts": [\#(hosts(Array(ports[0..<2])))]},
            {"name": "maglev", "lb_type": "LB_MAGLEV", "hosts": [\#(hosts(ports))]} ] } }
        """#
    }

    /// One request on its own connection; the status.
    func get(_ path: String, headers: String = "") throws -> Int {
        let c = try RawClient(port: port)
        defer { c.close() }
        c.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\(headers)\r\n")
        return c.readResponses(1).first?.status ?? 0
    }

    /// How many requests whose target starts with `prefix` each upstream received.
    func served(_ prefix: String) -> [Int] {
        upstreams.map { u in u.requestLog.filter { $0.hasPrefix("GET \(prefix)") }.count }
    }

    /// `n` requests under `prefix`, each answered 200; what each upstream got.
    func spread(_ prefix: String, _ n: Int = 12) throws -> [Int] {
        for i in 0..<n { #expect(try get("\(prefix)\(i)") == 200, "\(prefix)\(i)") }
        return served(prefix)
    }

    @Test func aRouteWithMetadataMatchUsesItsSubsetOnly() throws {
        // {version: v2}: upstreams 1 and 2, round robin between them.
        #expect(try spread("/v2/") == [0, 6, 6, 0])
        // {version: v2, zone: b} (written in the other order): upstream 2 alone.
        #expect(try spread("/v2b/") == [0, 0, 12, 0])
        // No metadata_match: every host of the same cluster.
        #expect(try spread("/all/") == [3, 3, 3, 3])
    }

    @Test func eachFallbackPolicyIsObserved() throws {
        // {version: v9} names no subset with hosts. NO_FALLBACK: no host, 503, nothing forwarded.
        for i in 0..<4 { #expect(try get("/nofallback/\(i)") == 503) }
        #expect(served("/nofallback/") == [0, 0, 0, 0])
        // ANY_ENDPOINT: every host. DEFAULT_SUBSET ({version: v1}): upstream 0 alone.
        #expect(try spread("/anyendpoint/") == [3, 3, 3, 3])
        #expect(try spread("/defaultsubset/") == [12, 0, 0, 0])
    }

    @Test func weightedClustersEachWithTheirOwnSubset() throws {
        // 50/50 between {v1} (upstream 0) and {v2, b} (upstream 2); 200 requests: each side
        // expects 100, sd 7; both must be used and nothing else.
        let s = try spread("/canary/", 200)
        #expect(s[1] == 0 && s[3] == 0, "\(s)")
        #expect(s[0] >= 65 && s[2] >= 65, "\(s)")
    }

    @Test func leastRequestSendsAroundABusyHost() throws {
        // A slow request holds one of the two hosts; with one worker, every request after it goes
        // to the other host (two hosts, two distinct draws). Round robin would alternate.
        let slow = try RawClient(port: port, timeout: 10)
        defer { slow.close() }
        slow.send("GET /lr/slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(waitUntil(timeout: 5) { self.served("/slow").reduce(0, +) == 1 })
        let busy = served("/slow").firstIndex(of: 1)!
        _ = try spread("/lr/fast", 10)
        let fast = served("/fast")
        #expect(fast[busy] == 0 && fast[1 - busy] == 10, "busy host \(busy): \(fast)")
        #expect(slow.readResponses(1).first?.status == 200)
    }

    @Test func maglevKeepsAUserOnOneHost() throws {
        var hostsByUser: [Int: Set<Int>] = [:]
        for user in 0..<16 {
            for i in 0..<3 {
                #expect(try get("/hash/u\(user)-\(i)", headers: "x-user: user-\(user)\r\n") == 200)
            }
            let got = served("/hash/u\(user)-")
            hostsByUser[user] = Set(got.indices.filter { got[$0] > 0 })
        }
        // Every user on exactly one host; 16 users over 4 hosts land on more than one of them.
        #expect(hostsByUser.values.allSatisfy { $0.count == 1 }, "\(hostsByUser)")
        #expect(Set(hostsByUser.values.flatMap { $0 }).count >= 2, "\(hostsByUser)")
    }
}

/// A bolt route with `metadata_match`: the call goes to the subset its route names, chosen by
/// the RPC's `service` header.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class BoltSubsetTests {
    let servers: [ChildProcess]
    let ports: [UInt16]
    let tern: TernProcess
    let port = freePort()

    deinit {
        tern.stop()
        for s in servers { s.stop() }
    }

    init() throws {
        ports = (0..<3).map { _ in freePort() }
        servers = try ports.enumerated().map { i, p in
            let s = try ChildProcess("/usr/bin/env", ["python3", "-u", boltPeers, "v2echo", String(p), "server\(i)"], name: "bolt-named-\(i)")
            guard waitUntil(timeout: 10, { canConnect(p) }) else { throw TestError("bolt server \(i) did not start: \(s.output)") }
            return s
        }
        let versions = ["v1", "v2", "v2"]
        let hosts = zip(ports, versions).map { #"{"address": "127.0.0.1:\#($0.0)", "metadata": {"filter_metadata": {"mosn.lb": {"version": "\#($0.1)"}}}}"# }
        func route(_ service: String, _ version: String) -> String {
            #"""
            {"match": {"headers": [{"name": "service", "value": "\#(service)"}]},
             "route": {"cluster_name": "up", "metadata_match": {"filter_metadata": {"mosn.lb": {"version": "\#(version)"}}}}}
            """#
        }
        let config = #"""
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "WARN",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
               "routers": [\#(route("com.tern.Old:1.0", "v1")), \#(route("com.tern.New:1.0", "v2")), \#(route("com.tern.Gone:1.0", "v9"))] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\#(port)", "bind_port": true,
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": {
                  "downstream_protocol": "bolt", "upstream_protocol": "bolt", "router_config_name": "r" } }] }] }] }],
          "cluster_manager": { "clusters": [{"name": "up", "lb_type": "LB_ROUNDROBIN",
             "lb_subset_config": {"fall_back_policy": 0, "subset_selectors": [["version"]]},
             "hosts": [\#(hosts.joined(separator: ", "))]}] } }
        """#
        tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "1"])
    }

    /// `n` calls to `service` on one connection; their answers.
    func call(_ service: String, _ n: Int) throws -> [BoltTestFrame.Response] {
        let c = try RawClient(port: port)
        defer { c.close() }
        for i in 0..<n { c.send(BoltTestFrame.request(id: UInt32(i + 1), service: service, method: "echo", body: Array("x".utf8))) }
        let responses = BoltTestFrame.readResponses(c, n)
        #expect(responses.count == n)
        return responses
    }

    /// Which servers answered `n` calls to `service`, by name.
    func answers(_ service: String, _ n: Int) throws -> [String: Int] {
        let responses = try call(service, n)
        #expect(responses.allSatisfy { $0.status == 0 }, "\(responses.map(\.status))")
        return responses.reduce(into: [:]) { $0[String(decoding: $1.content, as: UTF8.self), default: 0] += 1 }
    }

    @Test func aBoltRouteWithMetadataMatchPicksItsSubset() throws {
        #expect(try answers("com.tern.Old:1.0", 6) == ["server0": 6])
        #expect(try answers("com.tern.New:1.0", 8) == ["server1": 4, "server2": 4])
        // {version: v9} with NO_FALLBACK: no host, each call answered CONNECTION_CLOSED (0x10).
        #expect(try call("com.tern.Gone:1.0", 3).map(\.status) == [0x10, 0x10, 0x10])
    }
}
