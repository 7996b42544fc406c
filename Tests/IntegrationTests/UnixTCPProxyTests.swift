import Foundation
import Glibc
import Testing
import TernTestSupport

/// MOSN's uds-sample as a pair of Terns, shapes kept, paths and port substituted: an app on a unix
/// socket behind the server side (127.0.0.1:PORT → tcp_proxy → unix:server-proxy.sock), reached
/// through the client side (unix client-proxy.sock → tcp_proxy → 127.0.0.1:PORT).
@Suite(.serialized, .timeLimit(.minutes(3)))
final class UnixTCPProxyTests {
    let dir: UnixTempDirectory
    let clientSocket: String
    let app: PythonUnixUpstream
    let serverSide: TernProcess
    let clientSide: TernProcess

    static func clientConfig(listen socket: String, serverSidePort: UInt16) -> String {
        """
        { "disable_upgrade": true,
          "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "routers": [],
            "listeners": [{ "name": "clientListener", "address": "\(socket)", "bind_port": true, "network": "unix",
              "filter_chains": [{ "tls_context": {}, "filters": [{ "type": "tcp_proxy",
                "config": { "cluster": "clientCluster", "routes": [{ "cluster": "clientCluster" }] } }] }] }] }],
          "cluster_manager": { "clusters": [{ "Name": "clientCluster", "type": "SIMPLE", "lb_type": "LB_RANDOM",
            "max_request_per_conn": 1024, "conn_buffer_limit_bytes": 32768, "hosts": [{ "address": "127.0.0.1:\(serverSidePort)" }] }] },
          "tracing": { "enable": true, "driver": "SOFATracer" } }
        """
    }

    static func serverConfig(listen port: UInt16, appSocket: String) -> String {
        """
        { "disable_upgrade": true,
          "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "routers": [],
            "listeners": [{ "name": "serverListener", "address": "127.0.0.1:\(port)", "bind_port": true,
              "filter_chains": [{ "tls_context": {}, "filters": [{ "type": "tcp_proxy",
                "config": { "cluster": "serverCluster", "routes": [{ "cluster": "serverCluster" }] } }] }] }] }],
          "cluster_manager": { "clusters": [{ "Name": "serverCluster", "type": "SIMPLE", "lb_type": "LB_RANDOM",
            "max_request_per_conn": 1024, "conn_buffer_limit_bytes": 32768, "hosts": [{ "address": "unix:\(appSocket)" }] }] },
          "tracing": { "enable": true, "driver": "SOFATracer" } }
        """
    }

    init() throws {
        dir = try UnixTempDirectory()
        let appSocket = dir.file("server-proxy.sock")
        clientSocket = dir.file("client-proxy.sock")
        app = try PythonUnixUpstream(path: appSocket)
        let port = freePort()
        serverSide = try TernProcess(config: Self.serverConfig(listen: port, appSocket: appSocket), waitFor: [port])
        clientSide = try TernProcess(config: Self.clientConfig(listen: clientSocket, serverSidePort: port),
                                     waitForUnixPaths: [clientSocket], extraArguments: ["--workers", "2"])
    }

    deinit {
        clientSide.stop()
        serverSide.stop()
        app.stop()
        dir.remove()
    }

    @Test func bothConfigsValidate() throws {
        for config in [Self.clientConfig(listen: dir.file("v.sock"), serverSidePort: 2046), Self.serverConfig(listen: 2046, appSocket: dir.file("a.sock"))] {
            let (status, output) = try runTern(["validate", "-c", try writeTempConfig(config)])
            #expect(status == 0, "\(output)")
        }
    }

    @Test func requestsCrossBothTernsOverUnixSocketsAtBothEnds() throws {
        for i in 0..<6 {
            let (status, body) = try curlUnix(clientSocket, "http://uds/sample/\(i)")
            #expect(status == 0 && body == "hello from unix upstream /sample/\(i)",
                    "\(body)\n--- client side:\n\(clientSide.child.output.suffix(1500))\n--- server side:\n\(serverSide.child.output.suffix(1500))")
        }
        // Two requests on one kept-alive connection: tcp_proxy keeps both legs open between them.
        #expect(try curlUnix(clientSocket, "http://uds/a", "http://uds/b").body == "hello from unix upstream /ahello from unix upstream /b")
    }

    @Test func aLargeBodyCrossesIntact() throws {
        var bytes = [UInt8](repeating: 0, count: 3 << 20)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 9) }
        let file = dir.file("body.bin")
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        let (status, body) = try curlUnix(clientSocket, "http://uds/upload", "--data-binary", "@\(file)")
        let digest = try run("/usr/bin/sha256sum", [file]).1.prefix(64)
        #expect(status == 0 && body == "\(bytes.count) \(digest)", "\(body)")
    }

    @Test func theClientSideSocketFileGoesWithTheClientSide() throws {
        clientSide.child.signal(SIGTERM)
        #expect(clientSide.child.waitForExit(timeout: 10) == 0, "\(clientSide.child.output)")
        #expect(!FileManager.default.fileExists(atPath: clientSocket))
        #expect(serverSide.child.isRunning)
    }
}
