import Foundation
import Glibc
import Testing
import TernTestSupport

/// SNI routing without terminating TLS (`filter_chain_match.server_names`): four TLS backends,
/// each with its own certificate (Tests/IntegrationTests/peers/tls_peer.py), behind one Tern whose
/// chains forward the still-encrypted connection with `tcp_proxy`. Which backend a client reached
/// is read from the certificate it verified and from the backend's answer.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class SNIPassthroughTests {
    let certs: TestCertificates
    var backends: [String: (child: ChildProcess, port: UInt16)] = [:]
    let tern: TernProcess
    /// Chains for a.example, b.example, *.wild, and a default chain; 5 s for a ClientHello (a
    /// trickled one takes a while on a loaded machine).
    let routed: UInt16
    /// Only a.example; no default chain; a 1 s bound on the ClientHello wait.
    let strict: UInt16
    /// Terminates TLS itself (then tcp_proxy): the handshake-timeout check.
    let terminating: UInt16

    init() throws {
        certs = try TestCertificates.get()
        for (name, dns) in [("a", "a.example"), ("b", "b.example"), ("wild", "*.wild"), ("default", "default.example")] {
            let leaf = try certs.serverLeaf("sni-passthrough-\(name)", commonName: dns, dnsNames: [dns])
            let child = try ChildProcess("/usr/bin/env", ["python3", "-u", TestPaths.peers + "/tls_peer.py", "server", "--cert", leaf.cert,
                                                          "--key", leaf.key, "--name", name], name: "tls-backend-\(name)")
            var port: UInt16 = 0
            _ = waitUntil(timeout: 10) {
                port = child.output.split(separator: "\n").first.flatMap { UInt16($0) } ?? 0
                return port != 0
            }
            guard port != 0 else { throw TestError("TLS backend \(name) did not start: \(child.output)") }
            backends[name] = (child, port)
        }
        (routed, strict, terminating) = (freePort(), freePort(), freePort())
        func chain(_ names: [String]?, _ cluster: String) -> String {
            let match = names.map { "\"filter_chain_match\": {\"server_names\": [\($0.map { "\"\($0)\"" }.joined(separator: ", "))]}, " } ?? ""
            return "{ \(match)\"filters\": [{ \"type\": \"tcp_proxy\", \"config\": { \"cluster\": \"\(cluster)\" } }] }"
        }
        let clusters = backends.map { "{ \"name\": \"\($0.key)\", \"connect_timeout\": \"2s\", \"hosts\": [{ \"address\": \"127.0.0.1:\($0.value.port)\" }] }" }
        let server = try certs.serverLeaf("sni-passthrough-terminating", commonName: "terminating", dnsNames: ["localhost"])
        let config = """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "DEBUG", "listeners": [
            { "name": "routed", "address": "127.0.0.1:\(routed)", "bind_port": true, "connection_idle_timeout": "5s", "filter_chains": [
                \(chain(["a.example"], "a")), \(chain(["b.example"], "b")), \(chain(["*.wild"], "wild")), \(chain(nil, "default"))] },
            { "name": "strict", "address": "127.0.0.1:\(strict)", "bind_port": true, "connection_idle_timeout": "1s", "filter_chains": [
                \(chain(["a.example"], "a"))] },
            { "name": "terminating", "address": "127.0.0.1:\(terminating)", "bind_port": true, "connection_idle_timeout": "1s",
              "tls_context": {"status": true, "cert_chain": "\(server.cert)", "private_key": "\(server.key)"},
              "filter_chains": [\(chain(nil, "a"))] } ] }],
          "cluster_manager": { "clusters": [\(clusters.joined(separator: ", "))] } }
        """
        tern = try TernProcess(config: config, waitFor: [routed, strict, terminating], extraArguments: ["--workers", "1"])
    }

    deinit {
        tern.stop()
        for b in backends.values { b.child.stop() }
    }

    /// tls_peer.py's client: "cn=… answer=backend=… sni=… line=hello", or "error=…".
    func client(_ port: UInt16, sni: String?, trickle: Bool = false) throws -> String {
        let args = ["python3", TestPaths.peers + "/tls_peer.py", "client", "--port", String(port), "--ca", certs.caCert, "--sni", sni ?? ""]
        return try run("/usr/bin/env", args + (trickle ? ["--trickle"] : []), timeout: 20, includeStderr: true).1
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func reached(_ backend: String, cn: String, sni: String) -> String { "cn=\(cn) answer=backend=\(backend) sni=\(sni) line=hello" }

    @Test func theServerNamePicksTheChainExactThenWildcardThenDefault() throws {
        #expect(try client(routed, sni: "a.example") == reached("a", cn: "a.example", sni: "a.example"))
        #expect(try client(routed, sni: "B.Example") == reached("b", cn: "b.example", sni: "B.Example"))
        #expect(try client(routed, sni: "x.wild") == reached("wild", cn: "*.wild", sni: "x.wild"))
        #expect(try client(routed, sni: "deep.x.wild") == reached("wild", cn: "*.wild", sni: "deep.x.wild"))
        #expect(try client(routed, sni: "unknown.example") == reached("default", cn: "default.example", sni: "unknown.example"))
        #expect(try client(routed, sni: nil) == reached("default", cn: "default.example", sni: "None"))
    }

    @Test func aClientHelloWrittenOneByteAtATimeStillRoutes() throws {
        #expect(try client(routed, sni: "b.example", trickle: true) == reached("b", cn: "b.example", sni: "b.example"))
    }

    @Test func unknownNamesAndPlainTextAreClosedWithoutADefaultChainAndGoToItWhenThereIsOne() throws {
        #expect(try client(strict, sni: "a.example") == reached("a", cn: "a.example", sni: "a.example"))
        #expect(try client(strict, sni: "b.example").hasPrefix("error="))
        #expect(waitUntil(timeout: 5) { self.tern.child.output.contains("listener strict: server name \"b.example\" matches no filter chain and there is no default one; connection closed") },
                "\(tern.child.output)")
        let plain = try RawClient(port: strict)
        plain.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = plain.readUntilClosed(timeout: 5)
        #expect(r.closed && r.bytes.isEmpty && r.elapsed < 1, "closed=\(r.closed) after \(r.elapsed) s")
        #expect(tern.child.output.contains("listener strict: not TLS (first byte 71) and no default filter chain; connection closed"))
        // With a default chain, bytes that are not TLS go there (the default backend then refuses them).
        let toDefault = try RawClient(port: routed)
        toDefault.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(toDefault.readUntilClosed(timeout: 5).closed)
        #expect(tern.child.output.contains("listener routed: not TLS -> filter chain 3"), "\(tern.child.output)")
    }

    @Test func garbageAndHalfHellosCloseOnlyTheirOwnConnection() throws {
        // A record that announces a 512-byte ClientHello and stops after 40 bytes: the wait ends at
        // the listener's bound (1 s here); others are served meanwhile.
        let half = try RawClient(port: strict)
        half.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + [UInt8](repeating: 7, count: 29))
        let halfThenFIN = try RawClient(port: strict)
        halfThenFIN.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        halfThenFIN.halfClose()
        let malformed = try RawClient(port: strict)
        malformed.send([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00])   // a ServerHello type, not a ClientHello
        let garbage = try RawClient(port: strict)
        garbage.send([0x16, 0x03, 0x01, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 64))   // longer than a record may be
        #expect(try client(routed, sni: "a.example") == reached("a", cn: "a.example", sni: "a.example"))
        for (name, c) in [("FIN", halfThenFIN), ("malformed", malformed), ("garbage", garbage)] {
            let r = c.readUntilClosed(timeout: 5)
            #expect(r.closed && r.bytes.isEmpty && r.elapsed < 0.9, "\(name): closed=\(r.closed) after \(r.elapsed) s")
        }
        let r = half.readUntilClosed(timeout: 6)
        #expect(r.closed && r.bytes.isEmpty && r.elapsed < 3, "half: closed=\(r.closed) after \(r.elapsed) s")
        let log = tern.child.output
        #expect(log.contains("no complete TLS ClientHello within 1000 ms; connection closed"), "\(log)")
        #expect(log.contains("the client ended its stream"), "\(log)")
        #expect(log.contains("malformed TLS ClientHello"), "\(log)")
        #expect(try client(strict, sni: "a.example") == reached("a", cn: "a.example", sni: "a.example"))
    }

    /// The handshake bound: a silent client is closed within the listener's idle timeout, on a
    /// routing listener (the ClientHello wait) and on one that terminates TLS before tcp_proxy (its
    /// no-progress timer covers the handshake).
    @Test func aSilentClientIsClosedWithinTheHandshakeBound() throws {
        let waiting = try RawClient(port: strict)
        let handshaking = try RawClient(port: terminating)
        let start = Date()
        for (name, c) in [("strict", waiting), ("terminating", handshaking)] {
            let r = c.readUntilClosed(timeout: 8)
            let elapsed = Date().timeIntervalSince(start)
            #expect(r.closed && elapsed > 0.5 && elapsed < 4, "\(name): closed=\(r.closed) after \(elapsed) s")
        }
    }
}

extension ExampleTests {
    /// examples/sni-passthrough as shipped: its script's certificates, two `openssl s_server`
    /// backends, curl verifying each backend's certificate for the name it asked for.
    @Test func sniPassthroughExampleRoutesByServerNameWithoutDecrypting() throws {
        try #require(!canConnect(8443) && !canConnect(8444), "ports 8443/8444 are taken by another process; the example needs them")
        let example = TestPaths.root + "/examples/sni-passthrough"
        let dir = NSTemporaryDirectory() + "tern-sni-example-\(UUID().uuidString)"
        let made = try run("/bin/sh", [example + "/make-certs.sh", dir], timeout: 60, includeStderr: true)
        try #require(made.0 == 0, "\(made.1)")
        var backends: [ChildProcess] = []
        defer { for b in backends { b.stop() } }
        for (name, port) in [("a", 8443), ("b", 8444)] {
            backends.append(try ChildProcess("/usr/bin/openssl", ["s_server", "-accept", String(port), "-cert", "\(dir)/\(name).crt",
                                                                  "-key", "\(dir)/\(name).key", "-www"], name: "s_server-\(name)"))
        }
        #expect(waitUntil(timeout: 10) { canConnect(8443) && canConnect(8444) })
        let tern = try TernProcess(config: String(contentsOfFile: example + "/config.json", encoding: .utf8), waitFor: [2045])
        defer { tern.stop() }
        func get(_ name: String) throws -> (status: Int32, output: String) {
            try run("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", "\(dir)/ca.crt", "--resolve", "\(name):2045:127.0.0.1", "https://\(name):2045/"],
                    includeStderr: true)
        }
        for name in ["a.example", "x.b.example"] {
            let r = try get(name)
            #expect(r.status == 0 && r.output.contains("<HTML>"), "\(name): \(r.output)")
        }
        #expect(try get("other.example").status != 0)
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("server name \"other.example\" matches no filter chain") }, "\(tern.child.output)")
    }
}
