import Foundation
import Glibc
import Testing
import TernTestSupport

/// Upstream TLS end to end, Tern to Tern with mutual TLS: a client-side Tern (plain listener) →
/// its cluster's `tls_context` (client certificate, ca_cert, server_name) → a server-side Tern whose
/// listener requires client certificates → the Python HTTP upstream or anthunder's bolt server.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class UpstreamTLSTests {
    let certs: TestCertificates
    let upstream: PythonUpstream
    var processes: [TernProcess] = []
    var servers: [ChildProcess] = []

    init() throws {
        certs = try TestCertificates.get()
        upstream = try PythonUpstream()
    }

    deinit {
        for t in processes { t.stop() }
        for s in servers { s.stop() }
        upstream.stop()
    }

    var rogueCA: String { certs.directory + "/rogue-ca.crt" }
    var clientCertificate: String { "\"cert_chain\": \"\(certs.clientCert)\", \"private_key\": \"\(certs.clientKey)\"" }
    /// The client side's context that the server side accepts.
    var goodContext: String { "\"ca_cert\": \"\(certs.caCert)\", \(clientCertificate), \"server_name\": \"localhost\"" }

    /// The server-side Tern: a TLS listener that requires a client certificate from the test CA.
    func startServerSide(bolt boltUpstream: UInt16? = nil) throws -> UInt16 {
        let port = freePort()
        let tls = "\"tls_context\": {\"status\": true, \"cert_chain\": \"\(certs.serverCert)\", \"private_key\": \"\(certs.serverKey)\", \"ca_cert\": \"\(certs.caCert)\", \"verify_client\": true},"
        let base = boltUpstream.map { boltConfig(listen: port, upstream: $0) } ?? proxyConfig(listen: port, upstream: upstream.port, routeTimeout: "20s")
        let tern = try TernProcess(config: base.replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(tls)"), waitFor: [port])
        processes.append(tern)
        return port
    }

    /// The client-side Tern (one worker, DEBUG log): `/bad…` goes to cluster `bad` with
    /// `badContext` (when given), everything else to cluster `up` with `context`, both toward `target`.
    func startClientSide(target: UInt16, context: String, badContext: String? = nil, clusterExtra: String = "",
                         filter: String? = nil) throws -> (port: UInt16, tern: TernProcess) {
        let port = freePort()
        func cluster(_ name: String, _ tls: String) -> String {
            """
            { "name": "\(name)", "type": "SIMPLE", "connect_timeout": "2s"\(clusterExtra),
              "tls_context": {"status": true, \(tls)}, "hosts": [{ "address": "127.0.0.1:\(target)" }] }
            """
        }
        let clusters = [cluster("up", context)] + (badContext.map { [cluster("bad", $0)] } ?? [])
        let routes = (badContext == nil ? "" : "{ \"match\": {\"prefix\": \"/bad\"}, \"route\": {\"cluster_name\": \"bad\"} }, ")
            + "{ \"route\": {\"cluster_name\": \"up\", \"timeout\": \"20s\"} }"   // no match: every request, bolt too
        let networkFilter = filter ?? "{ \"type\": \"proxy\", \"config\": { \"downstream_protocol\": \"Http1\", \"upstream_protocol\": \"Http1\", \"router_config_name\": \"r\" } }"
        let config = """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "DEBUG",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [\(routes)] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\(port)", "bind_port": true,
               "filter_chains": [{ "filters": [\(networkFilter)] }] }] }],
          "cluster_manager": { "clusters": [\(clusters.joined(separator: ", "))] } }
        """
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "1"])
        processes.append(tern)
        return (port, tern)
    }

    func curl(_ args: [String]) throws -> (status: Int32, output: String) {
        try run("/usr/bin/curl", ["-sS", "--max-time", "20"] + args, includeStderr: true)
    }

    func count(_ text: String, in output: String) -> Int { output.components(separatedBy: text).count - 1 }

    @Test func httpKeepAliveAndFiveMegabytesCrossMutualTLSBetweenTwoTerns() throws {
        let serverSide = try startServerSide()
        let (port, client) = try startClientSide(target: serverSide, context: goodContext)
        let url = "http://127.0.0.1:\(port)"
        let (status, out) = try curl(["-w", " code=%{http_code}\n", "\(url)/a", "\(url)/b", "\(url)/c"])
        #expect(status == 0, "\(out)")
        for p in ["a", "b", "c"] { #expect(out.contains("hello from upstream /\(p) code=200"), "\(out)") }
        // One upstream TLS connection carried the three requests (the keep-alive pool).
        #expect(count("established (TLSv1.3", in: client.child.output) == 1, "\(client.child.output)")

        let size = 5 * 1024 * 1024 + 321
        let (path, expected) = try temporaryPatternFile(size: size, multiplier: 131)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let upload = try curl(["--data-binary", "@\(path)", "\(url)/sha"])
        #expect(upload.output == "\(expected) \(size)", "\(upload.output)")
        let download = NSTemporaryDirectory() + "tern-upstream-tls-download-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: download) }
        let got = try curl(["-o", download, "-w", "%{size_download}", "\(url)/big?n=\(size)"])
        #expect(got.output == "\(size)", "\(got.output)")
        let body = try #require(FileManager.default.contents(atPath: download))
        var intact = body.count == size
        for i in stride(from: 0, to: min(size, body.count), by: 4093) where body[i] != UInt8(i % 256) { intact = false }
        #expect(intact)
    }

    @Test func sessionsAreResumedOnReconnect() throws {
        let serverSide = try startServerSide()
        for version in ["TLSv1_3", "TLSv1_2"] {
            // One request per upstream connection: every request reconnects.
            let (port, client) = try startClientSide(target: serverSide, context: goodContext + ", \"max_version\": \"\(version)\"",
                                                     clusterExtra: ", \"max_request_per_conn\": 1")
            for i in 0..<4 {
                #expect(try curl(["http://127.0.0.1:\(port)/r\(i)"]).output == "hello from upstream /r\(i)")
            }
            let log = client.child.output
            #expect(count("full handshake", in: log) == 1, "\(version): \(log)")
            #expect(count("session resumed", in: log) == 3, "\(version): \(log)")
        }
    }

    @Test func failedHandshakesAnswer502WithTheReasonAndTheNextRequestsCarryOn() throws {
        let serverSide = try startServerSide()
        let cases: [(context: String, reason: String)] = [
            // The server's certificate is not from the CA this side trusts.
            ("\"ca_cert\": \"\(rogueCA)\", \(clientCertificate), \"server_name\": \"localhost\"", "certificate verify failed (server certificate: self-signed certificate in certificate chain)"),
            // The certificate does not name the server_name.
            ("\"ca_cert\": \"\(certs.caCert)\", \(clientCertificate), \"server_name\": \"other.example\"", "hostname mismatch"),
            // No client certificate for a server that requires one.
            ("\"ca_cert\": \"\(certs.caCert)\", \"server_name\": \"localhost\"", "certificate required"),
        ]
        for (context, reason) in cases {
            let (port, client) = try startClientSide(target: serverSide, context: goodContext, badContext: context)
            let url = "http://127.0.0.1:\(port)"
            // One client connection: the refused request, then a good one on the same connection.
            let (_, out) = try curl(["-i", "-w", "connects=%{num_connects}\n", "\(url)/bad/x", "\(url)/good"])
            #expect(out.contains("HTTP/1.1 502") && out.lowercased().contains("x-tern-error: upstream_tls_handshake_failed"), "\(reason): \(out)")
            #expect(out.contains("hello from upstream /good") && out.contains("connects=0"), "\(reason): \(out)")
            #expect(waitUntil(timeout: 5) { client.child.output.contains("TLS handshake with 127.0.0.1:\(serverSide) failed") }, "\(client.child.output)")
            #expect(client.child.output.contains(reason), "\(reason): \(client.child.output)")
            #expect(try curl(["\(url)/bad/again"]).output.contains("TLS handshake"))
            #expect(client.child.isRunning)
        }
    }

    @Test func boltCrossesMutualTLSBetweenTwoTerns() throws {
        let boltPort = freePort()
        servers.append(try startBoltServer(port: boltPort))
        let serverSide = try startServerSide(bolt: boltPort)
        let bolt = "{ \"type\": \"proxy\", \"config\": { \"downstream_protocol\": \"bolt\", \"upstream_protocol\": \"bolt\", \"router_config_name\": \"r\" } }"
        let (port, clientTern) = try startClientSide(target: serverSide, context: goodContext, filter: bolt)
        let client = try ChildProcess(venvPython, [boltPeers, "client", String(port), "40", "8"], name: "bolt-client")
        #expect(client.waitForExit(timeout: 120) == 0, "\(client.output)\n--- client side tern:\n\(clientTern.child.output.suffix(3000))")
        #expect(client.output.contains("ok 320"), "\(client.output)")
        #expect(count("established (TLSv1.3", in: clientTern.child.output) == 1, "\(clientTern.child.output.suffix(3000))")
    }

    @Test func boltCallsToARefusingServerGetConnectionClosed() throws {
        let serverSide = try startServerSide(bolt: freePort())
        let bolt = "{ \"type\": \"proxy\", \"config\": { \"downstream_protocol\": \"bolt\", \"upstream_protocol\": \"bolt\", \"router_config_name\": \"r\" } }"
        let (port, clientTern) = try startClientSide(target: serverSide, context: "\"ca_cert\": \"\(rogueCA)\"", filter: bolt)
        let c = try RawClient(port: port, timeout: 3)
        c.send(BoltTestFrame.request(id: 77, service: "com.tern.test.EchoService:1.0", method: "echo", body: [1, 2, 3]))
        let answer = c.readAll()   // until the receive timeout: the connection stays open
        try #require(answer.count >= 20, "\(clientTern.child.output)")
        #expect(Int(answer[10]) << 8 | Int(answer[11]) == 0x0010, "\(answer.prefix(20))")   // CONNECTION_CLOSED
        #expect(clientTern.child.output.contains("certificate verify failed"), "\(clientTern.child.output)")
    }

    @Test func tcpProxyConnectsToATLSClusterWithTLS() throws {
        let serverSide = try startServerSide()
        let (port, _) = try startClientSide(target: serverSide, context: goodContext,
                                            filter: "{ \"type\": \"tcp_proxy\", \"config\": { \"cluster\": \"up\" } }")
        #expect(try curl(["http://127.0.0.1:\(port)/l4"]).output == "hello from upstream /l4")
    }

    @Test func tcpProxyToARefusingTLSServerResetsTheClientAndCountsIt() throws {
        let serverSide = try startServerSide()
        let (port, clientTern) = try startClientSide(target: serverSide, context: "\"ca_cert\": \"\(rogueCA)\"",
                                                     filter: "{ \"type\": \"tcp_proxy\", \"config\": { \"cluster\": \"up\" } }")
        let c = try RawClient(port: port, timeout: 5)
        c.send("GET /l4 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(TCPBytes.readToEnd(c.fd) { _ in } == .reset)
        #expect(waitUntil(timeout: 5) { clientTern.child.output.contains("upstream_tls_handshake_failed") }, "\(clientTern.child.output)")
        #expect(clientTern.child.output.contains("certificate verify failed"), "\(clientTern.child.output)")
        clientTern.child.signal(SIGTERM)
        _ = clientTern.child.waitForExit(timeout: 10)
        // The drain line counts the refused handshake (the readiness probe's pair is refused too).
        #expect(clientTern.child.output.contains("connect_failures="), "\(clientTern.child.output)")
        #expect(!clientTern.child.output.contains("connect_failures=0"), "\(clientTern.child.output)")
    }
}
