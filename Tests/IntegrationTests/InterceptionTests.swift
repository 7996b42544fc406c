import Foundation
import Glibc
import Testing
import TernTestSupport

extension Tag {
    /// Needs root: creates network namespaces, veth pairs and iptables rules inside them.
    @Tag static var netns: Self
}

/// Three network namespaces joined by veth pairs, only for one test:
///
///     client 10.77.1.2 / fd77:1::2  ──  router 10.77.1.1 / fd77:1::1 (Tern, forwarding, iptables)
///                                       router 10.77.2.1 / fd77:2::1  ──  server 10.77.2.2 / fd77:2::2
///
/// The addresses exist only inside these namespaces. Deleting a namespace removes its veth end,
/// its iptables rules, policy rules and routes, so `tearDown` (run by deinit, also when a test
/// fails) deletes the three namespaces; a run killed before that leaves namespaces named after
/// its PID, which the next run deletes first.
final class NetnsLab {
    static let prefix = "tern-ic-"
    nonisolated(unsafe) private static var created = 0
    let client: String, router: String, server: String
    private var children: [ChildProcess] = []

    /// nil when the lab can run here; otherwise why not (printed, and the suite is skipped).
    static let problem: String? = {
        if getuid() != 0 { return report("not root (uid \(getuid())): network namespaces and iptables need root") }
        let probe = "\(prefix)probe-\(getpid())"
        let added = (try? run("/usr/sbin/ip", ["netns", "add", probe]).0) ?? -1
        _ = try? run("/usr/sbin/ip", ["netns", "del", probe])
        if added != 0 { return report("`ip netns add` does not work here (exit \(added))") }
        return nil
    }()

    private static func report(_ reason: String) -> String {
        FileHandle.standardError.write(Data("InterceptionTests skipped: \(reason)\n".utf8))
        return reason
    }

    init() throws {
        NetnsLab.removeStale()
        NetnsLab.created += 1
        let base = "\(NetnsLab.prefix)\(getpid())-\(NetnsLab.created)-"
        client = base + "c"; router = base + "r"; server = base + "s"
        do { try build() } catch { tearDown(); throw error }
    }

    deinit { tearDown() }

    /// Namespaces of earlier runs whose process is gone (killed before its cleanup ran).
    static func removeStale() {
        let list = (try? run("/usr/sbin/ip", ["netns", "list"]).1) ?? ""
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix(prefix) else { continue }
            let pid = Int32(name.dropFirst(prefix.count).split(separator: "-").first ?? "") ?? 0
            if pid > 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                _ = try? run("/usr/sbin/ip", ["netns", "del", name])
            }
        }
    }

    private func build() throws {
        for ns in [client, router, server] {
            _ = try? run("/usr/sbin/ip", ["netns", "del", ns])   // delete-if-exists
            try ip(["netns", "add", ns])
            try ip(["-n", ns, "link", "set", "lo", "up"])
        }
        // Each veth end is created inside its namespace, so the names need not be unique outside.
        try ip(["link", "add", "name", "to-router", "netns", client, "type", "veth", "peer", "name", "to-client", "netns", router])
        try ip(["link", "add", "name", "to-server", "netns", router, "type", "veth", "peer", "name", "to-router", "netns", server])
        let addresses = [(client, "to-router", ["10.77.1.2/24", "fd77:1::2/64"]),
                         (router, "to-client", ["10.77.1.1/24", "fd77:1::1/64"]),
                         (router, "to-server", ["10.77.2.1/24", "fd77:2::1/64"]),
                         (server, "to-router", ["10.77.2.2/24", "fd77:2::2/64"])]
        for (ns, device, list) in addresses {
            for a in list { try ip(["-n", ns, "addr", "add", a, "dev", device] + (a.contains(":") ? ["nodad"] : [])) }
            try ip(["-n", ns, "link", "set", device, "up"])
        }
        try ip(["-n", client, "route", "add", "default", "via", "10.77.1.1"])
        try ip(["-n", client, "-6", "route", "add", "default", "via", "fd77:1::1"])
        try ip(["-n", server, "route", "add", "default", "via", "10.77.2.1"])
        try ip(["-n", server, "-6", "route", "add", "default", "via", "fd77:2::1"])
        try exec(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
    }

    func tearDown() {
        for c in children { c.stop() }
        children = []
        for ns in [client, router, server] { _ = try? run("/usr/sbin/ip", ["netns", "del", ns]) }
    }

    func ip(_ arguments: [String]) throws {
        let (status, output) = try run("/usr/sbin/ip", arguments)
        guard status == 0 else { throw TestError("ip \(arguments.joined(separator: " ")): exit \(status) \(output)") }
    }

    /// Runs a command inside `ns` to its end; throws unless it exits 0.
    @discardableResult
    func exec(_ ns: String, _ command: [String], timeout: Double = 15) throws -> String {
        let (status, output) = try run("/usr/sbin/ip", ["netns", "exec", ns] + command, timeout: timeout)
        guard status == 0 else { throw TestError("in \(ns): \(command.joined(separator: " ")): exit \(status) \(output)") }
        return output
    }

    /// iptables or ip6tables inside the router namespace.
    func iptables(ipv6: Bool = false, _ rule: [String]) throws {
        let tool = ipv6 ? "ip6tables" : "iptables"
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/\(tool)") else {
            throw TestError("/usr/sbin/\(tool) is missing: `make test` installs iptables (apt-get install -y iptables)")
        }
        try exec(router, [tool] + rule)
    }

    /// A process started inside `ns` (`ip netns exec` execs it, so the PID is the process's own).
    func spawn(_ ns: String, _ command: [String], name: String) throws -> ChildProcess {
        let child = try ChildProcess("/usr/sbin/ip", ["netns", "exec", ns] + command, name: name)
        children.append(child)
        return child
    }

    /// intercept_peer.py in the server namespace; returns once it listens.
    func startPeer(host: String, port: Int, name: String, mode: String = "http") throws {
        let peer = try spawn(server, ["python3", "-u", TestPaths.peers + "/intercept_peer.py", "--host", host, "--port", String(port),
                                      "--name", name, "--mode", mode], name: "peer")
        guard waitUntil(timeout: 10, { peer.output.contains("ready") || !peer.isRunning }), peer.isRunning else {
            throw TestError("peer \(name) did not start: \(peer.output)")
        }
    }

    /// Tern in the router namespace on `config`; returns once it logged that it started.
    func startTern(_ config: String) throws -> ChildProcess {
        let path = NSTemporaryDirectory() + "tern-intercept-\(UUID().uuidString).json"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let tern = try spawn(router, [TestPaths.ternBinary, "start", "-c", path, "--workers", "2"], name: "tern")
        guard waitUntil(timeout: 10, { tern.output.contains("started") || !tern.isRunning }), tern.isRunning else {
            throw TestError("tern did not start: \(tern.output)")
        }
        return tern
    }

    /// curl in the client namespace: the body, or the error curl printed.
    func get(_ url: String) throws -> String {
        let (status, output) = try run("/usr/sbin/ip", ["netns", "exec", client, "curl", "-sS", "--max-time", "5", url], timeout: 10)
        return status == 0 ? output : "curl exit \(status): \(output)"
    }
}

/// Tern's config for these tests: a capturing listener per family (`capture` below), listeners
/// that own the server's port 8080 (bind_port: false) and proxy HTTP to it, and a direct answer on
/// the capturing listeners' own chain.
func interceptConfig(capture4: String, capture6: String, captureFilter: String = ownChainFilter) -> String {
    """
    { "servers": [{ "default_log_path": "stderr", "default_log_level": "DEBUG",
      "routers": [
        { "router_config_name": "to_app", "virtual_hosts": [{ "name": "h", "domains": ["*"],
            "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "app"} }] }] },
        { "router_config_name": "to_app6", "virtual_hosts": [{ "name": "h", "domains": ["*"],
            "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "app6"} }] }] },
        { "router_config_name": "own", "virtual_hosts": [{ "name": "h", "domains": ["*"],
            "routers": [{ "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": "capturing listener's own chain"} }] }] } ],
      "listeners": [
        { "name": "capture", \(capture4),
          "filter_chains": [{ "filters": [\(captureFilter)] }] },
        { "name": "capture6", \(capture6),
          "filter_chains": [{ "filters": [\(captureFilter)] }] },
        { "name": "app-8080", "address": "10.77.2.2:8080", "bind_port": false,
          "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "router_config_name": "to_app" } }] }] },
        { "name": "app6-8080", "address": "[fd77:2::2]:8080", "bind_port": false,
          "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "router_config_name": "to_app6" } }] }] }
        ] }],
      "cluster_manager": { "clusters": [
        { "name": "app", "type": "SIMPLE", "connect_timeout": "2s", "hosts": [{ "address": "10.77.2.2:8080" }] },
        { "name": "app6", "type": "SIMPLE", "connect_timeout": "2s", "hosts": [{ "address": "[fd77:2::2]:8080" }] },
        { "name": "original", "type": "ORIGINAL_DST", "lb_type": "LB_ORIGINAL_DST", "connect_timeout": "2s" } ] } }
    """
}

let ownChainFilter = """
    { "type": "proxy", "config": { "downstream_protocol": "Http1", "router_config_name": "own" } }
    """
let redirectCapture4 = """
    "address": "0.0.0.0:15001", "bind_port": true, "use_original_dst": true,
    "listener_filters": [{ "type": "original_dst", "config": { "type": "redirect" } }]
    """
let redirectCapture6 = """
    "address": "[::]:15006", "bind_port": true, "use_original_dst": true,
    "listener_filters": [{ "type": "original_dst", "config": { "type": "redirect" } }]
    """

@Suite(.serialized, .timeLimit(.minutes(3)), .tags(.netns),
       .enabled(if: NetnsLab.problem == nil, "needs root and a working `ip netns` (the reason is printed on stderr)"))
struct InterceptionTests {
    /// The server answers with the peer it saw: the router's address means the request came
    /// through Tern, the client's (10.77.1.2) that it went around it.
    @Test func redirectHandsConnectionsToTheListenerOwningTheOriginalDestination() throws {
        let lab = try NetnsLab()
        try lab.startPeers(port: 8080, names: ("app", "app6"))
        // Without Tern or a rule, the client reaches the server directly.
        #expect(try lab.get("http://10.77.2.2:8080/direct") == "app saw 10.77.1.2 /direct")
        try lab.redirectClientConnections()
        let tern = try lab.startTern(interceptConfig(capture4: redirectCapture4, capture6: redirectCapture6))

        #expect(try lab.get("http://10.77.2.2:8080/v4") == "app saw 10.77.2.1 /v4")
        #expect(try lab.get("http://[fd77:2::2]:8080/v6") == "app6 saw fd77:2::1 /v6")
        expectHandOffsLogged(tern)
    }

    @Test func redirectWithNoOwningListenerRunsTheCapturingChainAndDirectConnectionsDoNotLoop() throws {
        let lab = try NetnsLab()
        try lab.redirectClientConnections()
        let tern = try lab.startTern(interceptConfig(capture4: redirectCapture4, capture6: redirectCapture6))

        #expect(try lab.get("http://10.77.2.2:9090/nobody") == "capturing listener's own chain")
        #expect(try lab.get("http://[fd77:2::2]:9090/nobody") == "capturing listener's own chain")
        #expect(tern.output.contains("listener capture: original destination 10.77.2.2:9090 -> own filters"), "\(tern.output)")
        // A client that dials the capturing listener itself gets its chain once, not a loop.
        #expect(try lab.get("http://10.77.1.1:15001/itself") == "capturing listener's own chain")
        #expect(tern.output.contains("listener capture: connection made to the listener itself, not intercepted"), "\(tern.output)")
        #expect(tern.isRunning)
    }

    /// TPROXY leaves the destination alone: the listener is IP_TRANSPARENT, a mark sends the
    /// packets to the local table, and the accepted socket's local address is the original one.
    @Test func tproxyHandsOffByTheAcceptedSocketsLocalAddress() throws {
        let lab = try NetnsLab()
        try lab.startPeers(port: 8080, names: ("app", "app6"))
        try lab.iptables(["-t", "mangle", "-A", "PREROUTING", "-i", "to-client", "-p", "tcp", "-j", "TPROXY",
                          "--on-ip", "0.0.0.0", "--on-port", "15001", "--tproxy-mark", "0x1/0x1"])
        try lab.iptables(ipv6: true, ["-t", "mangle", "-A", "PREROUTING", "-i", "to-client", "-p", "tcp", "-j", "TPROXY",
                                      "--on-ip", "::", "--on-port", "15006", "--tproxy-mark", "0x1/0x1"])
        for family in ["-4", "-6"] {
            try lab.exec(lab.router, ["ip", family, "rule", "add", "fwmark", "0x1/0x1", "lookup", "100"])
            try lab.exec(lab.router, ["ip", family, "route", "add", "local", family == "-4" ? "0.0.0.0/0" : "::/0", "dev", "lo", "table", "100"])
        }
        // IPv4 connections to port 7070 go to the dual-stack [::] listener instead.
        try lab.iptables(["-t", "mangle", "-I", "PREROUTING", "-i", "to-client", "-p", "tcp", "--dport", "7070", "-j", "TPROXY",
                          "--on-ip", "0.0.0.0", "--on-port", "15006", "--tproxy-mark", "0x1/0x1"])
        let tproxy4 = redirectCapture4.replacingOccurrences(of: "\"redirect\"", with: "\"tproxy\"")
        let tproxy6 = redirectCapture6.replacingOccurrences(of: "\"redirect\"", with: "\"tproxy\"")
        let tern = try lab.startTern(interceptConfig(capture4: tproxy4, capture6: tproxy6))

        #expect(try lab.get("http://10.77.2.2:8080/t4") == "app saw 10.77.2.1 /t4")
        #expect(try lab.get("http://[fd77:2::2]:8080/t6") == "app6 saw fd77:2::1 /t6")
        #expect(try lab.get("http://10.77.2.2:9090/nobody") == "capturing listener's own chain")
        expectHandOffsLogged(tern)
        // Its local address is v4-mapped (::ffff:10.77.2.2); the original destination is IPv4.
        #expect(try lab.get("http://10.77.2.2:7070/mapped") == "capturing listener's own chain")
        #expect(tern.output.contains("listener capture6: original destination 10.77.2.2:7070 -> own filters"), "\(tern.output)")
    }

    /// tcp_proxy to an ORIGINAL_DST cluster: each redirected connection goes on to where its
    /// client was going, whatever the port (here an echo server standing in for redis on 6379).
    @Test func redirectThenTcpProxyToTheOriginalDestinationCluster() throws {
        let lab = try NetnsLab()
        try lab.startPeers(port: 6379, names: ("echo", "echo6"), mode: "echo")
        try lab.redirectClientConnections()
        let tcpProxy = "{ \"type\": \"tcp_proxy\", \"config\": { \"cluster\": \"original\" } }"
        let tern = try lab.startTern(interceptConfig(capture4: redirectCapture4, capture6: redirectCapture6, captureFilter: tcpProxy))

        #expect(try lab.echo(host: "10.77.2.2", port: 6379) == "echo saw 10.77.2.1 | ping")
        #expect(try lab.echo(host: "fd77:2::2", port: 6379) == "echo6 saw fd77:2::1 | ping")
        #expect(tern.output.contains("listener capture: original destination 10.77.2.2:6379 -> own filters"), "\(tern.output)")
        // HTTP to the server's port 8080 still goes to the listener owning it, not tcp_proxy.
        try lab.startPeer(host: "10.77.2.2", port: 8080, name: "app")
        #expect(try lab.get("http://10.77.2.2:8080/http") == "app saw 10.77.2.1 /http")
        // A client that dials the capturing listener itself has no original destination: it is
        // closed, never sent back into Tern (which would loop until descriptors ran out).
        let direct = (try? lab.echo(host: "10.77.1.1", port: 15001)) ?? ""
        #expect(!direct.contains("saw"), "\(direct)")
        #expect(waitUntil(timeout: 3) { tern.output.contains("is ORIGINAL_DST but the connection has no original destination") }, "\(tern.output)")
        #expect(!tern.output.contains("connected to 10.77.1.1:15001"), "\(tern.output)")
    }
}

/// Both families' connections to the server's 8080 went to the bind_port: false listeners.
func expectHandOffsLogged(_ tern: ChildProcess, sourceLocation: SourceLocation = #_sourceLocation) {
    for line in ["listener capture: original destination 10.77.2.2:8080 -> app-8080",
                 "listener capture6: original destination [fd77:2::2]:8080 -> app6-8080"] {
        #expect(tern.output.contains(line), "\(tern.output)", sourceLocation: sourceLocation)
    }
}

extension NetnsLab {
    /// iptables REDIRECT of every TCP connection from the client into the capturing listeners:
    /// 15001 (IPv4) and 15006 (IPv6).
    func redirectClientConnections() throws {
        for (ipv6, port) in [(false, "15001"), (true, "15006")] {
            try iptables(ipv6: ipv6, ["-t", "nat", "-A", "PREROUTING", "-i", "to-client", "-p", "tcp", "-j", "REDIRECT", "--to-ports", port])
        }
    }

    /// One peer on the server's IPv4 address and one on its IPv6 address.
    func startPeers(port: Int, names: (String, String), mode: String = "http") throws {
        try startPeer(host: "10.77.2.2", port: port, name: names.0, mode: mode)
        try startPeer(host: "fd77:2::2", port: port, name: names.1, mode: mode)
    }

    /// A TCP client in the client namespace: the server's greeting line, then the echo of "ping".
    func echo(host: String, port: Int) throws -> String {
        let script = """
            import socket, sys
            s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
            f = s.makefile("rb")
            greeting = f.readline().decode().strip()
            s.sendall(b"ping\\n")
            print(greeting, "|", f.readline().decode().strip())
            """
        return try exec(client, ["python3", "-c", script, host, String(port)]).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// examples/redis-intercept and examples/postgres-intercept as shipped: their config and the
/// namespace script their setup.sh and teardown.sh call (under a name unique to this run), with
/// the real redis-server / postgres and their clients.
@Suite(.serialized, .timeLimit(.minutes(3)), .tags(.netns),
       .enabled(if: NetnsLab.problem == nil, "needs root and a working `ip netns` (the reason is printed on stderr)"))
struct InterceptionExampleTests {
    let script = TestPaths.root + "/examples/intercept-netns.sh"

    /// Runs `body` between the example's `up` and `down` (also when it throws).
    func withExampleNamespaces(_ name: String, subnet: String, port: Int, _ body: () throws -> Void) throws {
        NetnsLab.removeStale()
        let (status, output) = try run("/bin/sh", [script, "up", name, subnet, String(port)])
        defer { _ = try? run("/bin/sh", [script, "down", name]) }
        guard status == 0 else { throw TestError("intercept-netns.sh up: exit \(status) \(output)") }
        try body()
    }

    func startTern(example: String, namespace: String) throws -> ChildProcess {
        let tern = try ChildProcess("/usr/sbin/ip", ["netns", "exec", namespace, TestPaths.ternBinary, "start", "-c",
                                                     TestPaths.root + "/examples/\(example)/config.json"], name: "tern")
        guard waitUntil(timeout: 10, { tern.output.contains("started") || !tern.isRunning }), tern.isRunning else {
            throw TestError("tern did not start: \(tern.output)")
        }
        return tern
    }

    func require(_ path: String, package: String) throws {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestError("\(path) is missing: install \(package) (`make test` does, from APT_PACKAGES)")
        }
    }

    @Test func redisInterceptExample() throws {
        try require("/usr/bin/redis-server", package: "redis-server")
        try require("/usr/bin/redis-cli", package: "redis-tools")
        let name = "\(NetnsLab.prefix)\(getpid())-redis"
        try withExampleNamespaces(name, subnet: "10.78", port: 6379) {
            let redis = try ChildProcess("/usr/sbin/ip", ["netns", "exec", "\(name)-db", "redis-server", "--bind", "10.78.2.2", "--port", "6379",
                                                          "--save", "", "--appendonly", "no", "--protected-mode", "no"], name: "redis")
            defer { redis.stop() }
            let tern = try startTern(example: "redis-intercept", namespace: "\(name)-proxy")
            defer { tern.stop() }
            func cli(_ args: String...) throws -> String {
                try run("/usr/sbin/ip", ["netns", "exec", "\(name)-app", "redis-cli", "-h", "10.78.2.2", "-p", "6379"] + args).1
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            _ = waitUntil(timeout: 5) { (try? cli("ping")) == "PONG" }
            #expect(try cli("set", "greeting", "hello") == "OK")
            #expect(try cli("get", "greeting") == "hello")
            // redis sees Tern's address on its side as the client, not the app's 10.78.1.2.
            #expect(try cli("client", "list").contains("addr=10.78.2.1:"))
            #expect(tern.output.contains("listener capture: original destination 10.78.2.2:6379 -> own filters"), "\(tern.output)")
        }
    }

    @Test func postgresInterceptExample() throws {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).sorted { Int($0) ?? 0 < Int($1) ?? 0 }
        let bin = "/usr/lib/postgresql/\(versions.last ?? "?")/bin"
        try require(bin + "/pg_ctl", package: "postgresql")
        try require("/usr/bin/psql", package: "postgresql-client")
        let name = "\(NetnsLab.prefix)\(getpid())-pg"
        let data = NSTemporaryDirectory() + "tern-pg-\(UUID().uuidString)"
        try withExampleNamespaces(name, subnet: "10.79", port: 5432) {
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: data) }
            try #require(try run("/bin/chown", ["postgres", data]).0 == 0)
            let asPostgres = ["/usr/sbin/runuser", "-u", "postgres", "--"]
            try #require(try run(asPostgres[0], Array(asPostgres.dropFirst()) + [bin + "/initdb", "-D", data + "/data", "-A", "trust", "-U", "postgres"], timeout: 60).0 == 0)
            try "host all all 10.79.0.0/16 trust\n".appendLine(to: data + "/data/pg_hba.conf")
            let pgctl = ["/usr/sbin/ip", "netns", "exec", "\(name)-db"] + asPostgres + [bin + "/pg_ctl", "-D", data + "/data"]
            let started = try run(pgctl[0], Array(pgctl.dropFirst()) + ["-l", data + "/log", "-w", "-o",
                                  "-c listen_addresses=10.79.2.2 -c unix_socket_directories=\(data)", "start"], timeout: 60)
            try #require(started.0 == 0, "pg_ctl start: \(started.1)")
            defer { _ = try? run(pgctl[0], Array(pgctl.dropFirst()) + ["-m", "immediate", "stop"], timeout: 30) }
            let tern = try startTern(example: "postgres-intercept", namespace: "\(name)-proxy")
            defer { tern.stop() }
            let answer = try run("/usr/sbin/ip", ["netns", "exec", "\(name)-app", "psql", "host=10.79.2.2 user=postgres dbname=postgres connect_timeout=5",
                                                  "-Atc", "select 'server sees client ' || inet_client_addr()"]).1
            #expect(answer.trimmingCharacters(in: .whitespacesAndNewlines) == "server sees client 10.79.2.1/32")
            #expect(tern.output.contains("listener capture: original destination 10.79.2.2:5432 -> own filters"), "\(tern.output)")
        }
    }
}

extension String {
    func appendLine(to path: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else { throw TestError("cannot open \(path)") }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(utf8))
    }
}
