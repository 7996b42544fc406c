import Foundation
import Glibc
import Testing
import TernTestSupport

/// Configs written for Tern in the shapes of MOSN's TLS samples (examples/codes/*/tls_*_config.json,
/// which scripts/run_mosn_tls_samples.sh runs from a MOSN checkout): the same keys in the same
/// places, with certificates made for the run and ports from the OS. Two shapes the other TLS tests
/// do not have: protocol `Auto` on both sides of the TLS hop with `ecdh_curves` and `verify_client`
/// on the client side too, and a bolt-only listener with mutual TLS and the `healthcheck` stream filter.
@Suite(.serialized, .timeLimit(.minutes(3)))
final class MOSNTLSSampleShapeTests {
    let certs: TestCertificates
    var children: [ChildProcess] = []

    init() throws { certs = try TestCertificates.get() }

    deinit { for c in children { c.stop() } }

    /// MOSN's sample layout: one listener, one router `router_config_name`, one cluster to `target`,
    /// plus the keys Tern only warns about (`disable_upgrade`, `admin`, the pool tuning).
    func sampleConfig(listen: UInt16, listenerTLS: String? = nil, proxy: String, match: String,
                      target: UInt16, clusterTLS: String? = nil, streamFilters: String? = nil) -> String {
        let chainTLS = listenerTLS.map { "\"tls_context\": { \"status\": true, \($0) }," } ?? ""
        let filters = streamFilters.map { ", \"stream_filters\": [\($0)]" } ?? ""
        let upstreamTLS = clusterTLS.map { "\"tls_context\": { \"status\": true, \($0) }," } ?? ""
        return """
        { "disable_upgrade": true,
          "servers": [{ "default_log_path": "stderr", "default_log_level": "DEBUG",
            "routers": [{ "router_config_name": "sample_router", "virtual_hosts": [{ "name": "sampleHost", "domains": ["*"],
                "routers": [{ "match": \(match), "route": { "cluster_name": "sampleCluster" } }] }] }],
            "listeners": [{ "name": "sampleListener", "address": "127.0.0.1:\(listen)", "bind_port": true,
                "filter_chains": [{ \(chainTLS) "filters": [{ "type": "proxy", "config": { \(proxy), "router_config_name": "sample_router" } }] }]\(filters) }] }],
          "cluster_manager": { "clusters": [{ "name": "sampleCluster", "type": "SIMPLE", "lb_type": "LB_RANDOM",
              "max_request_per_conn": 1024, "conn_buffer_limit_bytes": 32768, \(upstreamTLS)
              "hosts": [{ "address": "127.0.0.1:\(target)" }] }] },
          "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } } }
        """
    }

    var serverFiles: String { "\"ca_cert\": \"\(certs.caCert)\", \"cert_chain\": \"\(certs.serverCert)\", \"private_key\": \"\(certs.serverKey)\"" }
    var clientFiles: String { "\"ca_cert\": \"\(certs.caCert)\", \"cert_chain\": \"\(certs.clientCert)\", \"private_key\": \"\(certs.clientKey)\"" }

    func start(_ config: String, port: UInt16) throws -> TernProcess {
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "1"])
        children.append(tern.child)
        return tern
    }

    @Test func protocolAutoOnBothSidesOfAMutualTLSHopWithP256() throws {
        let upstream = try PythonUpstream()
        defer { upstream.stop() }
        let serverPort = freePort(), clientPort = freePort()
        let auto = "\"downstream_protocol\": \"Auto\", \"upstream_protocol\": \"Auto\""
        let server = try start(sampleConfig(listen: serverPort, listenerTLS: serverFiles + ", \"verify_client\": true, \"ecdh_curves\": \"P256\"",
                                            proxy: auto, match: "{\"prefix\": \"/\"}", target: upstream.port), port: serverPort)
        let client = try start(sampleConfig(listen: clientPort, proxy: auto, match: "{\"prefix\": \"/\"}", target: serverPort,
                                            clusterTLS: clientFiles + ", \"verify_client\": true, \"ecdh_curves\": \"P256\", \"server_name\": \"127.0.0.1\""),
                               port: clientPort)
        // The client side's listener keys: warnings that name them, not errors.
        #expect(client.child.output.contains("tls_context.verify_client: applies to a listener"), "\(client.child.output)")

        let (status, body) = try run("/usr/bin/curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(clientPort)/auto"], includeStderr: true)
        #expect(status == 0 && body == "hello from upstream /auto", "\(body)\n\(client.child.output.suffix(2000))")
        #expect(client.child.output.contains("TLS with 127.0.0.1:\(serverPort) established (TLSv1.3"), "\(client.child.output.suffix(2000))")

        // The server side's ecdh_curves: P-256 is the only group it takes, though the client offers X25519 first.
        let request = NSTemporaryDirectory() + "tern-auto-request-\(UUID().uuidString)"
        try "GET /direct HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".write(toFile: request, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: request) }
        let direct = try run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(serverPort)", "-CAfile", certs.caCert, "-ign_eof",
                                                  "-cert", certs.clientCert, "-key", certs.clientKey], timeout: 20, standardInput: request, includeStderr: true).1
        #expect(direct.contains("hello from upstream /direct") && direct.contains("Server Temp Key: ECDH, prime256v1"), "\(direct)")
        // verify_client without require_client_cert: still mutual TLS (Tern has no optional mode).
        let anonymous = try run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(serverPort)", "-CAfile", certs.caCert, "-ign_eof"],
                                timeout: 20, standardInput: request, includeStderr: true).1
        #expect(!anonymous.contains("hello from upstream") && anonymous.contains("certificate required"), "\(anonymous)")
        #expect(waitUntil(timeout: 5) { server.child.output.contains("peer did not return a certificate") }, "\(server.child.output)")
    }

    /// A cluster's `ecdh_curves` restricts the groups the client offers, as MOSN's (Go's
    /// CurvePreferences) does: against a server that takes X25519 alone, P256 alone fails.
    @Test func clientSideEcdhCurvesAreTheOnlyGroupsOffered() throws {
        let upstream = try PythonUpstream()
        defer { upstream.stop() }
        let serverPort = freePort()
        let http = "\"downstream_protocol\": \"Http1\", \"upstream_protocol\": \"Http1\""
        _ = try start(sampleConfig(listen: serverPort, listenerTLS: serverFiles + ", \"verify_client\": true, \"ecdh_curves\": \"X25519\"",
                                   proxy: http, match: "{\"prefix\": \"/\"}", target: upstream.port), port: serverPort)
        for (curves, expected) in [("P256", "502"), ("P256,X25519", "200")] {
            let clientPort = freePort()
            let client = try start(sampleConfig(listen: clientPort, proxy: http, match: "{\"prefix\": \"/\"}", target: serverPort,
                                                clusterTLS: clientFiles + ", \"ecdh_curves\": \"\(curves)\", \"server_name\": \"127.0.0.1\""),
                                   port: clientPort)
            let (_, code) = try run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "http://127.0.0.1:\(clientPort)/c"])
            #expect(code == expected, "\(curves): \(client.child.output.suffix(2000))")
            #expect(!client.child.output.contains("ecdh_curves"), "\(client.child.output.prefix(2000))")   // no warning: honoured
            client.stop()
        }
    }

    @Test func boltListenerWithMutualTLSAndTheHealthcheckStreamFilter() throws {
        let appPort = freePort(), serverPort = freePort(), clientPort = freePort()
        children.append(try startBoltServer(port: appPort))
        // MOSN's SOFA rule: a `service` header with the plain value `.*` matches any service.
        let anyService = "{\"headers\": [{\"name\": \"service\", \"value\": \".*\"}]}"
        let server = try start(sampleConfig(listen: serverPort, listenerTLS: serverFiles + ", \"verify_client\": true, \"require_client_cert\": true",
                                            proxy: "\"downstream_protocol\": \"bolt\"", match: anyService, target: appPort,
                                            streamFilters: "{\"type\": \"healthcheck\", \"config\": {}}"), port: serverPort)
        #expect(server.child.output.contains("healthcheck"), "\(server.child.output)")
        let client = try start(sampleConfig(listen: clientPort, proxy: "\"downstream_protocol\": \"bolt\"", match: anyService, target: serverPort,
                                            clusterTLS: clientFiles + ", \"server_name\": \"127.0.0.1\""), port: clientPort)

        let caller = try ChildProcess(venvPython, [boltPeers, "client", String(clientPort), "20", "4"], name: "bolt-caller")
        #expect(caller.waitForExit(timeout: 60) == 0, "\(caller.output)\n\(client.child.output.suffix(2000))")
        #expect(caller.output.contains("ok 80"), "\(caller.output)")
        #expect(client.child.output.contains("TLS with 127.0.0.1:\(serverPort) established (TLSv1.3"), "\(client.child.output.suffix(2000))")

        // A heartbeat straight to the server side over mutual TLS is answered (what MOSN's
        // healthcheck filter does; Tern answers bolt heartbeats itself); without a client
        // certificate the same bytes get no answer.
        #expect(try heartbeatOverTLS(port: serverPort, withClientCertificate: true) == "answered 7 status 0")
        #expect(try heartbeatOverTLS(port: serverPort, withClientCertificate: false).hasPrefix("refused"))
    }

    /// Sends a bolt heartbeat (id 7) over TLS and reads the answer's id and status.
    func heartbeatOverTLS(port: UInt16, withClientCertificate: Bool) throws -> String {
        let input = NSTemporaryDirectory() + "tern-heartbeat-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: input, contents: Data(BoltTestFrame.heartbeat(id: 7)))
        defer { try? FileManager.default.removeItem(atPath: input) }
        let script = """
        import socket, ssl, struct, sys
        ctx = ssl.create_default_context(cafile=sys.argv[2])
        if sys.argv[3] == "cert": ctx.load_cert_chain(sys.argv[4], sys.argv[5])
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10), server_hostname="127.0.0.1")
            s.sendall(sys.stdin.buffer.read())
            got = b""
            while len(got) < 20:
                chunk = s.recv(65536)
                if not chunk: break
                got += chunk
        except (ssl.SSLError, OSError) as e:
            print("refused", e); sys.exit(0)
        if len(got) < 20: print("refused: closed after", len(got), "bytes"); sys.exit(0)
        print("answered", struct.unpack(">I", got[5:9])[0], "status", struct.unpack(">H", got[10:12])[0])
        """
        let arguments = ["-c", script, String(port), certs.caCert, withClientCertificate ? "cert" : "none", certs.clientCert, certs.clientKey]
        let (_, out) = try run("/usr/bin/python3", arguments, timeout: 20, standardInput: input, includeStderr: true)
        return out.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
