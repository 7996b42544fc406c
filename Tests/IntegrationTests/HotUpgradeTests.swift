import Foundation
import Glibc
import Synchronization
import Testing
import TernTestSupport

/// Hot upgrade the MOSN way (`uds_dir`): a second `tern start` takes the listening sockets over
/// from the running one, which drains and exits, while keep-alive clients keep sending.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class HotUpgradeTests {
    let upstream: PythonUpstream
    let port = freePort()
    let boltPort = freePort()
    let adminPort = freePort()
    let directory = NSTemporaryDirectory() + "tern-uds-\(UUID().uuidString.prefix(8))"

    deinit {
        upstream.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    init() throws { upstream = try PythonUpstream() }

    /// HTTP on `port`, and with `boltUpstream` a bolt listener on `boltPort` too.
    func config(extraListener: UInt16? = nil, graceful: String = "5s", boltUpstream: UInt16? = nil) -> String {
        let boltListener = boltUpstream == nil ? "" : #", { "name": "bolt", "address": "127.0.0.1:\#(boltPort)", "bind_port": true, "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "bolt", "upstream_protocol": "bolt", "router_config_name": "rb" } }] }] }"#
        let boltRouter = boltUpstream == nil ? "" : #", { "router_config_name": "rb", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [{ "match": {"headers": [{"name": "service", "value": ".*", "regex": true}]}, "route": {"cluster_name": "bolt"} }] }] }"#
        let boltCluster = boltUpstream.map { #", { "name": "bolt", "hosts": [{ "address": "127.0.0.1:\#($0)" }] }"# } ?? ""
        let extra = boltListener + (extraListener.map { #", { "name": "extra", "address": "127.0.0.1:\#($0)", "bind_port": true, "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }] }"# } ?? "")
        return """
        { "uds_dir": "\(directory)",
          "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "graceful_timeout": "\(graceful)",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "up"} }] }] }\(boltRouter)],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\(port)", "bind_port": true,
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }] }\(extra)] }],
          "cluster_manager": { "clusters": [{ "name": "up", "hosts": [{ "address": "127.0.0.1:\(upstream.port)" }] }\(boltCluster)] },
          "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": \(adminPort) } } } }
        """
    }

    /// Starts a Tern that takes over (no port to wait for: the old one already listens) once the
    /// running one offers its upgrade socket.
    func successor(_ config: String, of current: TernProcess) throws -> TernProcess {
        guard waitUntil(timeout: 10, { current.child.output.contains("takes over from this process") }) else {
            throw TestError("the running tern offers no upgrade socket: \(current.child.output)")
        }
        let next = try TernProcess(config: config, waitFor: [])
        guard waitUntil(timeout: 15, { next.child.output.contains("started") || !next.child.isRunning }), next.child.isRunning else {
            throw TestError("the new tern did not start: \(next.child.output)")
        }
        return next
    }


    @Test func twoUpgradesUnderKeepAliveLoadLoseNoRequest() throws {
        let first = try TernProcess(config: config(), waitFor: [port], extraArguments: ["--workers", "2"])
        defer { first.stop() }
        let load = KeepAliveLoad(port: port, clients: 24)
        #expect(waitUntil(timeout: 10) { load.served > 500 })
        let second = try successor(config(), of: first)
        defer { second.stop() }
        #expect(first.child.waitForExit(timeout: 10) == 0, "the old process exits after its drain: \(first.child.output.suffix(1500))")
        let before = load.served
        #expect(waitUntil(timeout: 10) { load.served > before + 500 })
        let third = try successor(config(), of: second)
        defer { third.stop() }
        #expect(second.child.waitForExit(timeout: 10) == 0)
        let afterSecond = load.served
        #expect(waitUntil(timeout: 10) { load.served > afterSecond + 500 })
        let result = load.stop()
        #expect(result.failed == 0, "\(result.failures)")
        #expect(result.reconnects >= 24, "each client was told to close by a draining process: \(result.reconnects)")
        #expect(first.child.output.contains("handed 2 listening socket(s) to a new process"))
        #expect(third.child.isRunning)
        // The admin API moved over too.
        let (_, body) = try run("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(adminPort)/api/v1/states"])
        #expect(!body.isEmpty)
    }

    @Test func aNewProcessThatCannotStartLeavesTheOldOneServing() throws {
        let first = try TernProcess(config: config(), waitFor: [port])
        defer { first.stop() }
        // An invalid config is refused before anything is taken over.
        let invalid = try TernProcess(config: config().replacingOccurrences(of: "\"cluster_name\": \"up\"", with: "\"cluster_name\": \"missing\""), waitFor: [])
        #expect(invalid.child.waitForExit(timeout: 10) == 1)
        // A valid config whose new listener cannot bind (the port is taken by someone else): the
        // new process takes the sockets, fails, gives them back by exiting; the old one serves on.
        let squatter = try listeningSocket(backlog: 1)
        defer { close(squatter.0) }
        #expect(waitUntil(timeout: 10) { first.child.output.contains("takes over from this process") })
        let failing = try TernProcess(config: config(extraListener: squatter.1), waitFor: [])
        #expect(failing.child.waitForExit(timeout: 15) == 1, "\(failing.child.output)")
        #expect(waitUntil(timeout: 5) { first.child.output.contains("the new process did not start; this one serves on") })
        #expect(first.child.isRunning)
        for i in 0..<5 {
            let c = try RawClient(port: port)
            c.send("GET /after\(i) HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(c.readResponses(1).first?.status == 200)
        }
        // And a later upgrade still works.
        let next = try successor(config(), of: first)
        defer { next.stop() }
        #expect(first.child.waitForExit(timeout: 10) == 0)
        let c = try RawClient(port: port)
        c.send("GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.readResponses(1).first?.status == 200)
    }

    @Test func boltCallersOnLongLivedConnectionsSeeNoErrorAcrossAnUpgrade() throws {
        let boltServerPort = freePort()
        let boltServer = try startBoltServer(port: boltServerPort)
        defer { boltServer.stop() }
        let first = try TernProcess(config: config(boltUpstream: boltServerPort), waitFor: [port, boltPort], extraArguments: ["--workers", "2"])
        defer { first.stop() }
        // anthunder callers: 4 threads on long-lived connections, each call checked against its own
        // request; the upgrade happens while they call.
        let callers = try ChildProcess(venvPython, [boltPeers, "client", String(boltPort), "1500", "4"], name: "bolt-callers")
        defer { callers.stop() }
        // And one caller that never reconnects: one connection, calls one after another.
        let single = UncheckedSendableBox(try RawClient(port: boltPort, timeout: 10))
        defer { single.value.close() }
        let singleResult = Mutex<(ok: Int, failed: Int)>((0, 0))
        let stopSingle = Atomic<Bool>(false)
        let singleDone = Atomic<Bool>(false)
        Thread.detachNewThread {
            var id: UInt32 = 1
            while !stopSingle.load(ordering: .relaxed) {
                single.value.send(BoltTestFrame.request(id: id, service: echoService, method: "echo", body: Array("single-\(id)".utf8)))
                let answer = BoltTestFrame.readResponses(single.value, 1).first
                if answer?.id == id && answer?.status == 0 { singleResult.withLock { $0.ok += 1 } } else { singleResult.withLock { $0.failed += 1 }; break }
                id += 1
            }
            singleDone.store(true, ordering: .relaxed)
        }
        #expect(waitUntil(timeout: 30) { self.boltCallsRouted() > 300 || !callers.isRunning })
        let second = try successor(config(boltUpstream: boltServerPort), of: first)
        defer { second.stop() }
        #expect(first.child.waitForExit(timeout: 15) == 0, "\(first.child.output.suffix(1500))")
        #expect(callers.waitForExit(timeout: 60) == 0, "\(callers.output.suffix(800))")
        #expect(callers.output.contains("ok 6000"), "\(callers.output.suffix(800))")
        stopSingle.store(true, ordering: .relaxed)
        #expect(waitUntil(timeout: 15) { singleDone.load(ordering: .relaxed) })
        let counted = singleResult.withLock { $0 }
        #expect(counted.failed == 0 && counted.ok > 100, "one long-lived connection across the upgrade: \(counted); old: \(first.child.output.suffix(1200)); new: \(second.child.output.suffix(600))")
        // The callers' connections moved to the new process (none was closed on them).
        #expect(waitUntil(timeout: 5) { second.child.output.contains("client connection(s) from the previous process") }, "\(second.child.output.suffix(800))")
    }

    /// Bolt calls the running Tern routed so far (its admin `stats_glob`).
    func boltCallsRouted() -> Int {
        guard let (_, body) = try? run("/usr/bin/curl", ["-s", "--max-time", "2", "http://127.0.0.1:\(adminPort)/api/v1/stats_glob"]) else { return 0 }
        let line = body.split(separator: "\n").first { $0.hasPrefix("cluster.bolt.requests_total:") }
        return line.flatMap { Int($0.split(separator: ":").last ?? "") } ?? 0
    }
}

/// Hands a test's client to the one thread that uses it.
struct UncheckedSendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Keep-alive clients sending requests back to back until stopped; every answer must be a
/// 200 (a `Connection: close` answer makes the client reconnect, as HTTP/1.1 clients do).
final class KeepAliveLoad: Sendable {
    let port: UInt16
    let stopped = Atomic<Bool>(false)
    let counts = Mutex<(ok: Int, failed: Int, reconnects: Int, failures: [String])>((0, 0, 0, []))
    let finished = Atomic<Int>(0)
    let clients: Int

    /// `path(client, n)`: the target of client `client`'s n-th request.
    let path: @Sendable (Int, Int) -> String

    init(port: UInt16, clients: Int, path: @escaping @Sendable (Int, Int) -> String = { "/c\($0)/\($1)" }) {
        self.path = path
        self.port = port
        self.clients = clients
        for i in 0..<clients { Thread.detachNewThread { self.run(i) } }
    }

    func run(_ id: Int) {
        var client: RawClient?
        var n = 0
        while !stopped.load(ordering: .relaxed) {
            if client == nil { client = try? RawClient(port: port, timeout: 10) }
            guard let c = client else { note(failure: "client \(id): connect failed"); break }
            n += 1
            c.send("GET \(path(id, n)) HTTP/1.1\r\nHost: x\r\n\r\n")
            let answer = c.readResponses(1).first
            guard let r = answer, r.status == 200 else {
                note(failure: "client \(id) request \(n): \(answer.map { "\($0.status) \($0.header("x-tern-error") ?? "")" } ?? "no answer (errno \(errno))")")
                c.close(); client = nil
                continue
            }
            if r.header("connection")?.lowercased() == "close" {
                c.close(); client = nil
                counts.withLock { $0.reconnects += 1 }
            }
            counts.withLock { $0.ok += 1 }
        }
        client?.close()
        finished.wrappingAdd(1, ordering: .relaxed)
    }

    func note(failure: String) { counts.withLock { $0.failed += 1; if $0.failures.count < 5 { $0.failures.append(failure) } } }

    func stop() -> (ok: Int, failed: Int, reconnects: Int, failures: [String]) {
        stopped.store(true, ordering: .relaxed)
        _ = waitUntil(timeout: 15) { self.finished.load(ordering: .relaxed) == self.clients }
        return counts.withLock { $0 }
    }

    var served: Int { counts.withLock { $0.ok } }
}
