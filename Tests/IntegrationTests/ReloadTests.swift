import Foundation
import Glibc
import Testing
import TernTestSupport

/// `tern reload` / SIGHUP: the running process reads its config file again and swaps routes,
/// clusters and proxy settings in place, while keep-alive clients keep their connections.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class ReloadTests {
    let first: PythonUpstream
    let second: PythonUpstream
    let port = freePort()
    let directory = NSTemporaryDirectory() + "tern-uds-\(UUID().uuidString.prefix(8))"

    deinit {
        first.stop()
        second.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    init() throws {
        first = try PythonUpstream()
        second = try PythonUpstream()
    }

    /// Routes as `(prefix, cluster)`, clusters as `(name, upstream port)`.
    func config(routes: [(String, String)], clusters: [(String, UInt16)], listen: UInt16? = nil, extraFilter: String = "") -> String {
        let r = routes.map { #"{ "match": {"prefix": "\#($0.0)"}, "route": {"cluster_name": "\#($0.1)", "prefix_rewrite": "/"} }"# }.joined(separator: ", ")
        let c = clusters.map { #"{ "name": "\#($0.0)", "hosts": [{ "address": "127.0.0.1:\#($0.1)" }] }"# }.joined(separator: ", ")
        return """
        { "uds_dir": "\(directory)",
          "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [\(r)] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\(listen ?? port)", "bind_port": true, \(extraFilter)
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }] }] }],
          "cluster_manager": { "clusters": [\(c)] } }
        """
    }

    func reload(_ tern: TernProcess, _ text: String) throws -> (Int32, String) {
        try text.write(toFile: tern.configPath, atomically: true, encoding: .utf8)
        return try run(TestPaths.ternBinary, ["reload", "-c", tern.configPath], includeStderr: true)
    }

    func get(_ path: String) -> HTTPResponse? {
        guard let c = try? RawClient(port: port) else { return nil }
        defer { c.close() }
        c.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
        return c.readResponses(1).first
    }

    func servedBy(_ upstream: PythonUpstream, _ marker: String) -> Bool { upstream.requestLog.contains { $0.contains(marker) } }

    @Test func aRouteAndAClusterAddedUnderLoadWithoutClosingAConnection() throws {
        let tern = try TernProcess(config: config(routes: [("/a/", "one")], clusters: [("one", first.port)]), waitFor: [port], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("started") })
        #expect(get("/b/x")?.status == 404)
        let load = KeepAliveLoad(port: port, clients: 16) { id, n in "/a/load-\(id)-\(n)" }
        #expect(waitUntil(timeout: 10) { load.served > 300 })
        let (status, output) = try reload(tern, config(routes: [("/a/", "one"), ("/b/", "two")], clusters: [("one", first.port), ("two", second.port)]))
        #expect(status == 0, "\(output)")
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("reloaded (SIGHUP)") }, "\(tern.child.output.suffix(1500))")
        #expect(tern.child.output.contains("clusters added [two]"))
        #expect(waitUntil(timeout: 5) { self.get("/b/new-route")?.status == 200 })
        #expect(servedBy(second, "/new-route"))
        let before = load.served
        #expect(waitUntil(timeout: 10) { load.served > before + 300 })
        let result = load.stop()
        // In place: not one failed request, and no connection was closed on a client.
        #expect(result.failed == 0, "\(result.failures)")
        #expect(result.reconnects == 0)
    }

    @Test func aChangedClusterTakesNewRequestsToItsNewHosts() throws {
        let tern = try TernProcess(config: config(routes: [("/a/", "one")], clusters: [("one", first.port)]), waitFor: [port])
        defer { tern.stop() }
        #expect(get("/a/before")?.status == 200 && servedBy(first, "/before"))
        // A keep-alive client that spans the reload: its next request goes to the new host.
        let c = try RawClient(port: port)
        defer { c.close() }
        c.send("GET /a/kept-1 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.readResponses(1).first?.status == 200)
        let (status, _) = try reload(tern, config(routes: [("/a/", "one")], clusters: [("one", second.port)]))
        #expect(status == 0)
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("changed [one]") })
        c.send("GET /a/kept-2 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.readResponses(1).first?.status == 200)
        #expect(servedBy(second, "/kept-2") && !servedBy(first, "/kept-2"))
        // Removing the cluster and its route: 404 from then on, and a later reload can add it back.
        _ = try reload(tern, config(routes: [("/z/", "other")], clusters: [("other", first.port)]))
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("removed [one]") })
        #expect(get("/a/gone")?.status == 404)
        _ = try reload(tern, config(routes: [("/a/", "one")], clusters: [("one", first.port)]))
        #expect(waitUntil(timeout: 5) { self.get("/a/back")?.status == 200 })
        #expect(servedBy(first, "/back"))
    }

    @Test func anInvalidOrUnappliableConfigIsRefusedAndTheRunningOneStays() throws {
        let tern = try TernProcess(config: config(routes: [("/a/", "one")], clusters: [("one", first.port)]), waitFor: [port])
        defer { tern.stop() }
        // Invalid: `tern reload` says so and signals nothing.
        let (status, output) = try reload(tern, config(routes: [("/a/", "missing")], clusters: [("one", first.port)]))
        #expect(status == 1 && output.contains("missing"), "\(output)")
        #expect(!tern.child.output.contains("SIGHUP"))
        // Invalid and signalled anyway (SIGHUP by hand): refused in the log, still serving.
        tern.child.signal(SIGHUP)
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("refused (SIGHUP)") })
        #expect(get("/a/still")?.status == 200)
        // A listener change cannot be applied in place: refused, naming the listener.
        let (moved, _) = try reload(tern, config(routes: [("/a/", "one")], clusters: [("one", first.port)], listen: freePort()))
        #expect(moved == 0)
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("listener(s) l changed") }, "\(tern.child.output.suffix(1000))")
        #expect(get("/a/still-2")?.status == 200)
        // No running Tern for a config: an error.
        let lonely = NSTemporaryDirectory() + "tern-lonely-\(UUID().uuidString).json"
        try config(routes: [("/a/", "one")], clusters: [("one", first.port)]).replacingOccurrences(of: directory, with: directory + "-none").write(toFile: lonely, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: lonely) }
        let (none, text) = try run(TestPaths.ternBinary, ["reload", "-c", lonely], includeStderr: true)
        #expect(none == 1 && text.contains("no running Tern"), "\(text)")
    }

    /// ip_access decides once per connection (the peer does not change), keyed by the filter: a
    /// reload that changes the lists applies to the next request of a connection opened before.
    @Test func aReloadedIPAccessListAppliesToOpenKeepAliveConnections() throws {
        func filter(_ action: String) -> String {
            #""stream_filters": [{"type": "ip_access", "config": {"default_action": "allow", "ips": [{"action": "\#(action)", "addrs": ["10.0.0.0/8", "127.0.0.0/8"]}]}}],"#
        }
        let tern = try TernProcess(config: config(routes: [("/a/", "one")], clusters: [("one", first.port)], extraFilter: filter("allow")), waitFor: [port])
        defer { tern.stop() }
        let c = try RawClient(port: port)
        defer { c.close() }
        for n in 1...3 {
            c.send("GET /a/open-\(n) HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(c.readResponses(1).first?.status == 200)
        }
        let (status, output) = try reload(tern, config(routes: [("/a/", "one")], clusters: [("one", first.port)], extraFilter: filter("deny")))
        #expect(status == 0, "\(output)")
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("reloaded (SIGHUP)") })
        for n in 1...3 {
            c.send("GET /a/denied-\(n) HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(c.readResponses(1).first?.status == 403)
        }
        #expect(!servedBy(first, "/denied-"))
    }

}
