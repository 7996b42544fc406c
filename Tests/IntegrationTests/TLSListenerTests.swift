import Foundation
import Glibc
import Testing
import TernTestSupport

/// Listener-side TLS features on the real `tern`: certificates picked by SNI (`tls_context_set`),
/// TLS and plain text on one port (`inspector`), certificate reload.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class TLSListenerTests {
    let certs: TestCertificates
    let upstream: PythonUpstream
    var terns: [TernProcess] = []

    init() throws {
        certs = try TestCertificates.get()
        upstream = try PythonUpstream()
    }

    deinit {
        for t in terns { t.stop() }
        upstream.stop()
    }

    /// A Tern whose listener carries `listenerKeys` (TLS keys, `inspector`...); returns its port.
    func startTern(_ listenerKeys: String, idleTimeout: String? = nil) throws -> (port: UInt16, tern: TernProcess) {
        let port = freePort()
        let config = proxyConfig(listen: port, upstream: upstream.port, routeTimeout: "10s", idleTimeout: idleTimeout)
            .replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(listenerKeys),")
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "2"])
        terns.append(tern)
        return (port, tern)
    }

    func context(_ cert: String, _ key: String, _ extra: String = "") -> String {
        "{\"status\": true, \"cert_chain\": \"\(cert)\", \"private_key\": \"\(key)\"\(extra)}"
    }

    /// The subject line `openssl s_client` prints for the server's certificate, with `serverName`
    /// as SNI (nil: no SNI at all).
    func servedSubject(port: UInt16, serverName: String?) throws -> String {
        let sni = serverName.map { ["-servername", $0] } ?? ["-noservername"]
        let empty = NSTemporaryDirectory() + "tern-empty-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let out = try run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", certs.caCert] + sni,
                          timeout: 20, standardInput: empty, includeStderr: true).1
        return out.split(separator: "\n").first { $0.hasPrefix("subject=") }.map(String.init) ?? "no subject in: \(out)"
    }

    func curl(_ args: [String]) throws -> (status: Int32, output: String) {
        try run("/usr/bin/curl", ["-sS", "--max-time", "20", "--cacert", certs.caCert] + args, includeStderr: true)
    }

    @Test func sniPicksTheCertificateThatNamesItAndTheFirstIsTheDefault() throws {
        let alpha = try certs.serverLeaf("sni-alpha", commonName: "alpha", dnsNames: ["alpha.test", "alpha2.test"])
        let wild = try certs.serverLeaf("sni-wild", commonName: "wild", dnsNames: ["*.wild.test"])
        let exact = try certs.serverLeaf("sni-exact", commonName: "exact", dnsNames: ["exact.wild.test"])
        let secure = try certs.serverLeaf("sni-secure", commonName: "secure", dnsNames: ["secure.test"])
        let set = [context(certs.serverCert, certs.serverKey), context(alpha.cert, alpha.key), context(wild.cert, wild.key),
                   context(exact.cert, exact.key),
                   context(secure.cert, secure.key, ", \"ca_cert\": \"\(certs.caCert)\", \"verify_client\": true, \"min_version\": \"TLSv1_3\"")]
        let (port, _) = try startTern("\"tls_context_set\": [\(set.joined(separator: ", "))]")

        let expected: [(String?, String)] = [
            ("alpha.test", "CN = alpha"), ("ALPHA2.Test", "CN = alpha"),
            ("x.wild.test", "CN = wild"), ("exact.wild.test", "CN = exact"),   // exact beats the wildcard before it
            ("a.b.wild.test", "CN = localhost"), ("wild.test", "CN = localhost"),  // a wildcard covers one label
            ("unknown.test", "CN = localhost"), (nil, "CN = localhost"),
        ]
        for (name, subject) in expected {
            let got = try servedSubject(port: port, serverName: name)
            #expect(got == "subject=\(subject)", "SNI \(name ?? "none"): \(got)")
        }

        // Requests run on whichever context was picked.
        let resolve = { (name: String) in ["--resolve", "\(name):\(port):127.0.0.1", "https://\(name):\(port)/sni"] }
        #expect(try curl(resolve("alpha.test")).output == "hello from upstream /sni")
        #expect(try curl(["--tlsv1.2", "--tls-max", "1.2"] + resolve("x.wild.test")).output == "hello from upstream /sni")

        // The chosen context's own settings: secure.test asks for a client certificate and TLS 1.3.
        let noCertificate = try curl(resolve("secure.test"))
        #expect(noCertificate.status != 0 && !noCertificate.output.contains("hello from upstream"), "\(noCertificate.output)")
        let withCertificate = ["--cert", certs.clientCert, "--key", certs.clientKey]
        #expect(try curl(withCertificate + resolve("secure.test")).output == "hello from upstream /sni")
        let oldVersion = try curl(withCertificate + ["--tlsv1.2", "--tls-max", "1.2"] + resolve("secure.test"))
        #expect(oldVersion.status != 0 && !oldVersion.output.contains("hello from upstream"), "\(oldVersion.output)")
    }

    /// A session from one context never resumes under another (secure.test's client certificate
    /// check would otherwise be skipped), while it does resume under its own.
    @Test func sessionsResumeOnlyUnderTheContextThatIssuedThem() throws {
        let alpha = try certs.serverLeaf("sni-alpha", commonName: "alpha", dnsNames: ["alpha.test", "alpha2.test"])
        let secure = try certs.serverLeaf("sni-secure", commonName: "secure", dnsNames: ["secure.test"])
        let set = [context(certs.serverCert, certs.serverKey), context(alpha.cert, alpha.key),
                   context(secure.cert, secure.key, ", \"ca_cert\": \"\(certs.caCert)\", \"verify_client\": true")]
        let (port, _) = try startTern("\"tls_context_set\": [\(set.joined(separator: ", "))]")
        let session = NSTemporaryDirectory() + "tern-sni-session-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: session) }
        let request = NSTemporaryDirectory() + "tern-sni-request-\(UUID().uuidString)"
        try "GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".write(toFile: request, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: request) }
        for version in ["-tls1_2", "-tls1_3"] {
            let base = ["s_client", version, "-connect", "127.0.0.1:\(port)", "-CAfile", certs.caCert, "-ign_eof"]
            let first = try run("/usr/bin/openssl", base + ["-servername", "alpha.test", "-sess_out", session], timeout: 20, standardInput: request, includeStderr: true).1
            #expect(first.contains("hello from upstream /r") && first.contains("New, TLSv1."), "\(version): \(first)")
            let same = try run("/usr/bin/openssl", base + ["-servername", "alpha.test", "-sess_in", session], timeout: 20, standardInput: request, includeStderr: true).1
            #expect(same.contains("Reused, TLSv1."), "\(version): \(same)")
            let other = try run("/usr/bin/openssl", base + ["-servername", "secure.test", "-sess_in", session], timeout: 20, standardInput: request, includeStderr: true).1
            #expect(!other.contains("Reused, TLSv1.") && !other.contains("hello from upstream /r"), "\(version): \(other)")
        }
    }

    @Test func anInspectorServesTLSAndPlainTextOnOnePort() throws {
        let (port, _) = try startTern("\"inspector\": true, \"tls_context\": \(context(certs.serverCert, certs.serverKey))", idleTimeout: "2s")
        // TLS, with keep-alive: three requests on one connection.
        let url = "https://localhost:\(port)"
        let tls = try curl(["-w", " connects=%{num_connects}\n", "\(url)/a", "\(url)/b", "\(url)/c"])
        #expect(tls.output.contains("hello from upstream /a connects=1") && tls.output.contains("hello from upstream /c connects=0"), "\(tls.output)")
        // Plain HTTP on the same port, and a raw client that half-closes after its request: the
        // FIN seen while the inspector waited still ends the connection after the answer.
        #expect(try curl(["http://localhost:\(port)/plain"]).output == "hello from upstream /plain")
        let raw = try RawClient(port: port)
        raw.send("GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.halfClose()
        let answer = raw.readUntilClosed(timeout: 5)
        #expect(String(decoding: answer.bytes, as: UTF8.self).contains("hello from upstream /raw"))
        #expect(answer.closed && answer.elapsed < 1.5, "closed=\(answer.closed) after \(answer.elapsed) s")

        // A silent client is let go by the idle timeout; the port serves on.
        let silent = try RawClient(port: port)
        let r = silent.readUntilClosed(timeout: 8)
        #expect(r.closed && r.elapsed > 1 && r.elapsed < 4, "closed=\(r.closed) after \(r.elapsed) s")
        #expect(try curl(["\(url)/after"]).output == "hello from upstream /after")
    }
}
