import Foundation
import Glibc
import Testing
import TernTestSupport

/// A DNS server of the test's own (peers/dns_peer.py: UDP, answers from a file the test rewrites).
final class FakeDNSServer: @unchecked Sendable {
    let child: ChildProcess
    let port: UInt16
    let answersPath = NSTemporaryDirectory() + "tern-dns-answers-\(UUID().uuidString).json"
    let logPath = NSTemporaryDirectory() + "tern-dns-log-\(UUID().uuidString).log"

    init(names: [String: [String]], ttl: Int = 30) throws {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let child = try ChildProcess("/usr/bin/env", ["python3", "-u", TestPaths.peers + "/dns_peer.py", "--answers", answersPath, "--log", logPath], name: "dns")
        self.child = child
        port = try child.portOnFirstLine("dns peer")
        try answer(names, ttl: ttl)
    }

    func answer(_ names: [String: [String]], ttl: Int = 30, mode: String = "answer") throws {
        let body = try JSONSerialization.data(withJSONObject: ["mode": mode, "ttl": ttl, "names": names])
        try body.write(to: URL(fileURLWithPath: answersPath + ".tmp"))
        rename(answersPath + ".tmp", answersPath)   // atomically: the server reads it per query
    }

    /// How many queries for `name` (with its trailing dot) arrived so far.
    func queries(_ name: String) -> Int {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("query \(name) ") }.count
    }

    func stop() { child.stop() }
}

/// STRICT_DNS clusters against a real DNS server and real upstreams on two loopback addresses
/// (127.0.0.1 and 127.0.0.2, the same port): the cluster follows the answers with no request lost,
/// keeps its hosts through a DNS outage, and honours respect_dns_ttl.
@Suite(.serialized, .timeLimit(.minutes(3)))
final class StrictDNSTests {
    /// Requests under `/NAME/` go to cluster NAME, the rest to `route`.
    func config(listen: UInt16, clusters: String, route: String = "svc", prefixes: [String] = []) -> String {
        let routers = prefixes.map { #"{ "match": {"prefix": "/\#($0)/"}, "route": {"cluster_name": "\#($0)", "timeout": "5s"} }, "# }.joined()
        return """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
            "routers": [{ "router_config_name": "http", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [\(routers)
              { "match": {"prefix": "/"}, "route": {"cluster_name": "\(route)", "timeout": "5s"} }] }] }],
            "listeners": [{ "name": "http", "address": "127.0.0.1:\(listen)", "bind_port": true,
              "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "http" } }] }] }] }],
          "cluster_manager": { "clusters": [\(clusters)] } }
        """
    }

    /// connect_timeout 5s: Python's upstream accepts slowly on a loaded machine (its backlog is 5),
    /// and a 1 s connect timeout failed a request in a CI rehearsal for a reason that is not DNS's.
    func dnsCluster(_ name: String, host: String, dns: FakeDNSServer, extra: String = "") -> String {
        """
        { "name": "\(name)", "type": "STRICT_DNS", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "5s",
          "dns_resolvers": { "servers": ["127.0.0.1"], "port": "\(dns.port)", "timeout": 1, "attempts": 1 }\(extra),
          "hosts": [{ "address": "\(host)" }] }
        """
    }

    func get(_ port: UInt16, _ path: String) -> Int? {
        guard let c = try? RawClient(port: port) else { return nil }
        defer { c.close() }
        c.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
        return c.readResponses(1).first?.status
    }

    func served(_ upstream: PythonUpstream, _ marker: String) -> Int { upstream.requestLog.filter { $0.contains(marker) }.count }

    @Test func theClusterFollowsItsNameWithoutLosingARequestAndKeepsItsHostsThroughAnOutage() throws {
        let a = try PythonUpstream()
        defer { a.stop() }
        let b = try PythonUpstream(port: a.port, bind: "127.0.0.2")
        defer { b.stop() }
        let dns = try FakeDNSServer(names: ["svc.test.": ["127.0.0.1"]])
        defer { dns.stop() }
        let listen = freePort()
        let tern = try TernProcess(config: config(listen: listen, clusters: dnsCluster("svc", host: "svc.test:\(a.port)", dns: dns, extra: #", "dns_refresh_rate": "200ms""#)),
                                   waitFor: [listen], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        // Resolved before the listener opened: the very first request has a host.
        #expect(get(listen, "/first")  == 200)
        #expect(served(a, "/first") == 1)
        #expect(tern.child.output.contains("cluster svc: svc.test is 127.0.0.1:\(a.port)"))

        let load = KeepAliveLoad(port: listen, clients: 8) { id, n in "/load-\(id)-\(n)" }
        #expect(waitUntil(timeout: 10) { load.served > 200 })
        // The name moves to the other address: new requests follow within a few refreshes.
        try dns.answer(["svc.test.": ["127.0.0.2"]])
        #expect(waitUntil(timeout: 5) { self.served(b, "/load-") > 0 }, "\(tern.child.output.suffix(1500))")
        let movedAt = served(a, "/load-")
        #expect(waitUntil(timeout: 10) { self.served(b, "/load-") > 200 })
        // Requests already on their way to the old host finish there; then no more go to it.
        #expect(served(a, "/load-") <= movedAt + 16, "the old host kept taking requests: \(served(a, "/load-")) after \(movedAt)")
        // Both addresses: both hosts take requests.
        try dns.answer(["svc.test.": ["127.0.0.2", "127.0.0.1"]])
        let both = served(a, "/load-")
        #expect(waitUntil(timeout: 5) { self.served(a, "/load-") > both + 50 })
        // An outage (no answer at all, then SERVFAIL): the cluster keeps its last hosts.
        try dns.answer([:], mode: "silent")
        let queriesBefore = dns.queries("svc.test.")
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("lookup of svc.test failed (svc.test. at 127.0.0.1:\(dns.port): no answer within 1000 ms); keeping its last addresses") })
        try dns.answer([:], mode: "servfail")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("server failure (SERVFAIL)") })
        #expect(dns.queries("svc.test.") > queriesBefore)
        let duringOutage = load.served
        #expect(waitUntil(timeout: 10) { load.served > duringOutage + 200 })
        let result = load.stop()
        #expect(result.failed == 0, "\(result.failures.prefix(5))")
        #expect(get(listen, "/after-outage") == 200)
        // The DNS change swapped the cluster in place: no connection was closed on a client.
        #expect(result.reconnects == 0)
    }

    @Test func respectDNSTTLLooksUpAgainAfterTheTTLAndTheRefreshRateOtherwise() throws {
        let a = try PythonUpstream()
        defer { a.stop() }
        let dns = try FakeDNSServer(names: ["ttl.test.": ["127.0.0.1"], "fixed.test.": ["127.0.0.1"]], ttl: 1)
        defer { dns.stop() }
        let listen = freePort()
        let clusters = dnsCluster("ttl", host: "ttl.test:\(a.port)", dns: dns, extra: #", "dns_refresh_rate": "60s", "respect_dns_ttl": true"#)
            + ", " + dnsCluster("fixed", host: "fixed.test:\(a.port)", dns: dns, extra: #", "dns_refresh_rate": "60s""#)
        let tern = try TernProcess(config: config(listen: listen, clusters: clusters, route: "fixed", prefixes: ["ttl"]), waitFor: [listen])
        defer { tern.stop() }
        #expect(get(listen, "/ttl/x") == 200 && get(listen, "/fixed/x") == 200)
        // TTL 1 s: looked up again after 1 s + 1 s (MOSN's rule), then again.
        #expect(waitUntil(timeout: 8) { dns.queries("ttl.test.") >= 3 }, "ttl.test queries: \(dns.queries("ttl.test."))")
        // The same TTL without respect_dns_ttl: the 60 s refresh rate holds.
        #expect(dns.queries("fixed.test.") == 1)
    }

    @Test func aNameWithNoAnswerYetAnswers503AndTheHostsComeWithTheFirstAnswer() throws {
        let a = try PythonUpstream()
        defer { a.stop() }
        let dns = try FakeDNSServer(names: [:])   // NXDOMAIN for every name
        defer { dns.stop() }
        let listen = freePort()
        let tern = try TernProcess(config: config(listen: listen, clusters: dnsCluster("svc", host: "late.test:\(a.port)", dns: dns, extra: #", "dns_refresh_rate": "200ms""#)),
                                   waitFor: [listen])
        defer { tern.stop() }
        #expect(tern.child.output.contains("lookup of late.test failed (late.test. does not exist (NXDOMAIN from 127.0.0.1:\(dns.port))); it has no address yet"))
        #expect(get(listen, "/early") == 503)
        try dns.answer(["late.test.": ["127.0.0.1"]])
        #expect(waitUntil(timeout: 5) { self.get(listen, "/late") == 200 }, "\(tern.child.output.suffix(800))")
        #expect(served(a, "/late") >= 1 && served(a, "/early") == 0)
    }
    /// Subsets are rebuilt from the new hosts (and the routes re-resolved) when the answer
    /// changes: the route's subset follows the name, no request is lost, the other subset's host
    /// never sees one.
    @Test func subsetsAreRebuiltWhenTheAnswerChanges() throws {
        let a = try PythonUpstream()
        defer { a.stop() }
        let b = try PythonUpstream(port: a.port, bind: "127.0.0.2")
        defer { b.stop() }
        let other = try PythonUpstream()
        defer { other.stop() }
        let dns = try FakeDNSServer(names: ["v1.test.": ["127.0.0.1"]])
        defer { dns.stop() }
        let listen = freePort()
        let cluster = """
            { "name": "svc", "type": "STRICT_DNS", "lb_type": "LB_ROUNDROBIN", "dns_refresh_rate": "200ms",
              "dns_resolvers": { "servers": ["127.0.0.1"], "port": "\(dns.port)", "timeout": 1, "attempts": 1 },
              "lb_subset_config": { "fall_back_policy": 0, "subset_selectors": [["version"]] },
              "hosts": [{ "address": "v1.test:\(a.port)", "metadata": {"filter_metadata": {"mosn.lb": {"version": "v1"}}} },
                        { "address": "127.0.0.1:\(other.port)", "metadata": {"filter_metadata": {"mosn.lb": {"version": "v2"}}} }] }
            """
        let text = config(listen: listen, clusters: cluster)
            .replacingOccurrences(of: #""route": {"cluster_name": "svc", "timeout": "5s"}"#,
                                  with: #""route": {"cluster_name": "svc", "timeout": "5s", "metadata_match": {"filter_metadata": {"mosn.lb": {"version": "v1"}}}}"#)
        #expect(text.contains("metadata_match"))
        let tern = try TernProcess(config: text, waitFor: [listen], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        let load = KeepAliveLoad(port: listen, clients: 6) { id, n in "/sub-\(id)-\(n)" }
        #expect(waitUntil(timeout: 10) { self.served(a, "/sub-") > 100 })
        try dns.answer(["v1.test.": ["127.0.0.2"]])
        #expect(waitUntil(timeout: 5) { self.served(b, "/sub-") > 100 }, "\(tern.child.output.suffix(1500))")
        #expect(tern.child.output.contains("(DNS answer for cluster svc): routes and proxy settings replaced"))
        let result = load.stop()
        #expect(result.failed == 0, "\(result.failures)")
        #expect(served(other, "/sub-") == 0, "the v2 host got requests of the v1 route")
    }
}
