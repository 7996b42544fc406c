import Foundation
import Glibc
import Testing
import TernTestSupport

/// One listener of `unixSocketConfig`: a TCP "ip:port" or a unix path, proxying everything to a cluster.
struct ProxyListener {
    var name: String
    var address: String
    var unix: Bool
    var cluster: String
    var protocolName = "Http1"
}

/// A MOSN config of the uds-sample's shape: listeners (unix ones with `"network": "unix"`), each
/// routing every request to one cluster of one host (`unix:/path` or `ip:port`).
func unixSocketConfig(_ listeners: [ProxyListener], clusters: [String: String]) -> String {
    let routers = listeners.map { l in
        """
        { "router_config_name": "\(l.name)-routes", "virtual_hosts": [{ "name": "all", "domains": ["*"],
            "routers": [{ "route": {"cluster_name": "\(l.cluster)", "timeout": "5s"} }] }] }
        """
    }
    let listenerJSON = listeners.map { l in
        """
        { "name": "\(l.name)", "address": "\(l.address)", "bind_port": true\(l.unix ? ", \"network\": \"unix\"" : ""),
          "filter_chains": [{ "tls_context": {}, "filters": [{ "type": "proxy", "config": {
              "downstream_protocol": "\(l.protocolName)", "upstream_protocol": "\(l.protocolName)", "router_config_name": "\(l.name)-routes" } }] }] }
        """
    }
    let clusterJSON = clusters.sorted { $0.key < $1.key }.map { name, host in
        """
        { "Name": "\(name)", "type": "SIMPLE", "lb_type": "LB_RANDOM", "max_request_per_conn": 1024,
          "conn_buffer_limit_bytes": 32768, "connect_timeout": "1s", "hosts": [{ "address": "\(host)" }] }
        """
    }
    return """
    { "disable_upgrade": true,
      "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "graceful_timeout": "5s",
        "routers": [\(routers.joined(separator: ","))],
        "listeners": [\(listenerJSON.joined(separator: ","))] }],
      "cluster_manager": { "clusters": [\(clusterJSON.joined(separator: ","))] },
      "tracing": { "enable": true, "driver": "SOFATracer" } }
    """
}

@Suite(.serialized, .timeLimit(.minutes(3)))
final class UnixSocketTests {
    let dir: UnixTempDirectory

    init() throws { dir = try UnixTempDirectory() }
    deinit { dir.remove() }

    /// A unix listener sending to a TCP upstream.
    func unixFrontedConfig(_ socket: String, upstream: UInt16) -> String {
        unixSocketConfig([ProxyListener(name: "clientListener", address: socket, unix: true, cluster: "app")],
                         clusters: ["app": "127.0.0.1:\(upstream)"])
    }

    /// A TCP upstream and a Tern with a unix listener on `socket` in front of it, accepting.
    func startUnixFronted(_ socket: String, workers: Int = 2) throws -> (upstream: PythonUpstream, tern: TernProcess) {
        let upstream = try PythonUpstream()
        do {
            let tern = try TernProcess(config: unixFrontedConfig(socket, upstream: upstream.port), waitForUnixPaths: [socket],
                                       extraArguments: ["--workers", String(workers)])
            return (upstream, tern)
        } catch {
            upstream.stop()
            throw error
        }
    }

    @Test func httpThroughAUnixListenerToATCPUpstream() throws {
        let socket = dir.file("client-proxy.sock")
        let (upstream, tern) = try startUnixFronted(socket)
        defer { tern.stop(); upstream.stop() }
        #expect(isSocketFile(socket))
        // Several connections to the one socket both workers accept on: each is served once.
        for i in 0..<8 {
            let (status, body) = try curlUnix(socket, "http://tern/unix/\(i)")
            #expect(status == 0 && body == "hello from upstream /unix/\(i)", "\(body)\n\(tern.child.output.suffix(2000))")
        }
        // Two URLs: curl sends the second on the same (kept-alive) unix connection.
        let (status, body) = try curlUnix(socket, "http://tern/a", "http://tern/b")
        #expect(status == 0 && body == "hello from upstream /ahello from upstream /b", "\(body)")
    }

    @Test func httpThroughATCPListenerToAUnixUpstream() throws {
        let upstreamSocket = dir.file("server-proxy.sock")
        let upstream = try PythonUnixUpstream(path: upstreamSocket)
        defer { upstream.stop() }
        let port = freePort()
        let config = unixSocketConfig([ProxyListener(name: "serverListener", address: "127.0.0.1:\(port)", unix: false, cluster: "serverCluster")],
                                      clusters: ["serverCluster": "unix:\(upstreamSocket)"])
        let tern = try TernProcess(config: config, waitFor: [port])
        defer { tern.stop() }
        let body = try run("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(port)/via/unix"]).1
        #expect(body == "hello from unix upstream /via/unix", "\(tern.child.output.suffix(2000))")
        /// One request on a fresh connection; its one response.
        func exchange(_ request: String) throws -> HTTPResponse {
            let c = try RawClient(port: port)
            c.send(request)
            return try #require(c.readResponses(1).first)
        }
        // A request without Host gets "localhost" upstream: a socket path is no host name.
        let noHost = try exchange("GET /no-host HTTP/1.0\r\n\r\n")
        #expect(noHost.status == 200 && noHost.header("x-upstream-host") == "localhost")
        // The upstream gone (its socket file too): a 502 for the client, Tern keeps serving.
        upstream.stop()
        unlink(upstreamSocket)
        let gone = try exchange("GET /gone HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(gone.status == 502 && gone.header("x-tern-error") == "upstream_connect_failed")
    }

    @Test func boltToAUnixUpstreamAndThroughAUnixListener() throws {
        // anthunder client → TCP bolt listener → unix:/… → unix bolt listener → anthunder server:
        // both directions of bolt over a unix socket, in one Tern.
        let serverPort = freePort()
        let server = try startBoltServer(port: serverPort)
        defer { server.stop() }
        let port = freePort()
        let socket = dir.file("bolt.sock")
        let config = unixSocketConfig([
            ProxyListener(name: "front", address: "127.0.0.1:\(port)", unix: false, cluster: "viaUnix", protocolName: "bolt"),
            ProxyListener(name: "back", address: socket, unix: true, cluster: "app", protocolName: "bolt"),
        ], clusters: ["viaUnix": "unix:\(socket)", "app": "127.0.0.1:\(serverPort)"])
        let tern = try TernProcess(config: config, waitForUnixPaths: [socket], ports: [port])
        defer { tern.stop() }
        let client = try ChildProcess(venvPython, [boltPeers, "client", String(port), "20", "4"], name: "bolt-client")
        #expect(client.waitForExit(timeout: 60) == 0, "\(client.output)\n--- tern:\n\(tern.child.output.suffix(2000))")
        #expect(client.output.contains("ok 80"))
    }

    @Test func abstractSocketsAtBothEnds() throws {
        // Linux's abstract namespace ("@name", as Go and MOSN spell it): no file anywhere.
        let tag = UUID().uuidString.prefix(8)
        let upstream = try PythonUnixUpstream(path: "@tern-up-\(tag)")
        defer { upstream.stop() }
        let listen = "@tern-listen-\(tag)"
        let config = unixSocketConfig([ProxyListener(name: "abstract", address: listen, unix: true, cluster: "app")],
                                      clusters: ["app": "unix:@tern-up-\(tag)"])
        let tern = try TernProcess(config: config, waitForUnixPaths: [listen])
        defer { tern.stop() }
        #expect(try curlUnix(listen, "http://tern/abstract").body == "hello from unix upstream /abstract", "\(tern.child.output)")
        tern.child.signal(SIGTERM)
        #expect(tern.child.waitForExit(timeout: 10) == 0)
        #expect(!canConnect(unixPath: listen))
    }

    @Test func aStaleSocketFileIsReplaced() throws {
        let socket = dir.file("stale.sock")
        try makeStaleSocketFile(socket)
        #expect(isSocketFile(socket) && !canConnect(unixPath: socket))
        let (upstream, tern) = try startUnixFronted(socket)
        defer { tern.stop(); upstream.stop() }
        #expect(try curlUnix(socket, "http://tern/after-stale").body == "hello from upstream /after-stale")
        #expect(tern.child.output.contains("listener clientListener: replaced the stale socket file at unix:\(socket)"))
    }

    @Test func aLiveOwnerIsRefusedAndKeepsServing() throws {
        let socket = dir.file("owned.sock")
        let (upstream, first) = try startUnixFronted(socket)
        defer { first.stop(); upstream.stop() }
        let second = try TernProcess(config: unixFrontedConfig(socket, upstream: upstream.port), waitFor: [])
        defer { second.stop() }
        let status = second.child.waitForExit(timeout: 10)
        #expect(status == 1, "\(second.child.output)")
        #expect(second.child.output.contains("listener clientListener: unix:\(socket) is in use by another process"), "\(second.child.output)")
        #expect(isSocketFile(socket))
        #expect(first.child.isRunning)
        #expect(try curlUnix(socket, "http://tern/first").body == "hello from upstream /first")
    }

    @Test func aPathThatIsNotASocketIsNeverRemoved() throws {
        let path = dir.file("not-a-socket")
        try "precious".write(toFile: path, atomically: false, encoding: .utf8)
        let tern = try TernProcess(config: unixFrontedConfig(path, upstream: 1), waitFor: [])
        defer { tern.stop() }
        #expect(tern.child.waitForExit(timeout: 10) == 1)
        #expect(tern.child.output.contains("listener clientListener: \(path) exists and is not a socket; not removed"), "\(tern.child.output)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "precious")
    }

    @Test(arguments: [SIGTERM, SIGINT, SIGQUIT])
    func theSocketFileIsRemovedOnExit(signal: Int32) throws {
        let socket = dir.file("exit-\(signal).sock")
        let (upstream, tern) = try startUnixFronted(socket)
        defer { tern.stop(); upstream.stop() }
        #expect(try curlUnix(socket, "http://tern/before").body == "hello from upstream /before")
        tern.child.signal(signal)
        #expect(tern.child.waitForExit(timeout: 10) == 0, "\(tern.child.output)")
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    @Test func aStartupFailureAfterBindingRemovesTheFilesBound() throws {
        // The first unix listener binds; the second cannot (no such directory): Tern exits 1
        // before serving and leaves no socket file behind.
        let bound = dir.file("first.sock")
        let unbindable = dir.file("missing-dir/second.sock")
        let config = unixSocketConfig([
            ProxyListener(name: "first", address: bound, unix: true, cluster: "app"),
            ProxyListener(name: "second", address: unbindable, unix: true, cluster: "app"),
        ], clusters: ["app": "127.0.0.1:1"])
        let tern = try TernProcess(config: config, waitFor: [])
        defer { tern.stop() }
        #expect(tern.child.waitForExit(timeout: 10) == 1)
        #expect(tern.child.output.contains("listener second: bind unix:\(unbindable)"), "\(tern.child.output)")
        #expect(!FileManager.default.fileExists(atPath: bound))
    }

    @Test func validateAcceptsTheUDSSampleShapeAndTouchesNoFile() throws {
        let socket = dir.file("validate.sock")
        let path = try writeTempConfig(unixFrontedConfig(socket, upstream: 2046))
        let (status, output) = try runTern(["validate", "-c", path])
        #expect(status == 0, "\(output)")
        #expect(!FileManager.default.fileExists(atPath: socket))
    }
}
