import Foundation
import Glibc
import Testing
import TernTestSupport

/// Listener-side TLS features on the real `tern`, in the TLS suite (its certificates, upstream and
/// curl): certificates picked by SNI (`tls_context_set`), TLS and plain text on one port
/// (`inspector`), certificate reload.
extension TLSTests {
    /// A Tern whose listener carries `listenerKeys` (TLS keys, `inspector`...); returns its port.
    func startTern(listenerKeys: String, idleTimeout: String? = nil) throws -> (port: UInt16, tern: TernProcess) {
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

    @Test func sniPicksTheCertificateThatNamesItAndTheFirstIsTheDefault() throws {
        let alpha = try certs.serverLeaf("sni-alpha", commonName: "alpha", dnsNames: ["alpha.test", "alpha2.test"])
        let wild = try certs.serverLeaf("sni-wild", commonName: "wild", dnsNames: ["*.wild.test"])
        let exact = try certs.serverLeaf("sni-exact", commonName: "exact", dnsNames: ["exact.wild.test"])
        let secure = try certs.serverLeaf("sni-secure", commonName: "secure", dnsNames: ["secure.test"])
        let set = [context(certs.serverCert, certs.serverKey), context(alpha.cert, alpha.key), context(wild.cert, wild.key),
                   context(exact.cert, exact.key),
                   context(secure.cert, secure.key, ", \"ca_cert\": \"\(certs.caCert)\", \"verify_client\": true, \"min_version\": \"TLSv1_3\"")]
        let (port, _) = try startTern(listenerKeys: "\"tls_context_set\": [\(set.joined(separator: ", "))]")

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
        let (port, _) = try startTern(listenerKeys: "\"tls_context_set\": [\(set.joined(separator: ", "))]")
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
        let (port, _) = try startTern(listenerKeys: "\"inspector\": true, \"tls_context\": \(context(certs.serverCert, certs.serverKey))", idleTimeout: "2s")
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

    /// SIGHUP: new handshakes get the certificate now in the files, an open keep-alive connection
    /// goes on with the old one, and a file that does not load keeps the certificate in use. (The
    /// file watch may reload too; the lines checked are SIGHUP's own.)
    @Test func sighupReloadsCertificatesForNewHandshakes() throws {
        let before = try certs.serverLeaf("reload-before", commonName: "before-reload", dnsNames: ["localhost"])
        let after = try certs.serverLeaf("reload-after", commonName: "after-reload", dnsNames: ["localhost"])
        let live = NSTemporaryDirectory() + "tern-reload-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: live) }
        let (cert, key) = (live + "/server.crt", live + "/server.key")
        func install(_ leaf: (cert: String, key: String)) throws {
            for (from, to) in [(leaf.cert, cert), (leaf.key, key)] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
        }
        try install(before)
        let (port, tern) = try startTern(listenerKeys: "\"tls_context\": \(context(cert, key))")
        #expect(try servedSubject(port: port, serverName: "localhost") == "subject=CN = before-reload")

        // A keep-alive client: one request, then a second on the same connection once told to.
        let go = live + "/go"
        let script = """
        import os, socket, ssl, sys, time
        ctx = ssl.create_default_context(cafile=sys.argv[2])
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10), server_hostname="localhost")
        def get(path):
            s.sendall(b"GET " + path + b" HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
            got = b""
            while b"hello from upstream " + path not in got:
                chunk = s.recv(65536)
                if not chunk: return "closed"
                got += chunk
            return "ok"
        print("first", s.getpeercert()["subject"][0][0][1], get(b"/one"), flush=True)
        deadline = time.time() + 20
        while not os.path.exists(sys.argv[3]) and time.time() < deadline: time.sleep(0.02)
        print("second", get(b"/two"), flush=True)
        """
        let client = try ChildProcess("/usr/bin/python3", ["-c", script, String(port), certs.caCert, go], name: "keepalive")
        defer { client.stop() }
        #expect(waitUntil(timeout: 10) { client.output.contains("first") }, "\(client.output)")
        #expect(client.output.contains("first before-reload ok"), "\(client.output)")

        try install(after)
        tern.child.signal(SIGHUP)
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("certificates reloaded (SIGHUP") }, "\(tern.child.output)")
        #expect(waitUntil(timeout: 5) { (try? servedSubject(port: port, serverName: "localhost")) == "subject=CN = after-reload" })
        #expect(try curl(["https://localhost:\(port)/new"]).output == "hello from upstream /new")
        // The connection opened before the reload carries on.
        _ = FileManager.default.createFile(atPath: go, contents: Data())
        #expect(waitUntil(timeout: 10) { client.output.contains("second") }, "\(client.output)")
        #expect(client.output.contains("second ok"), "\(client.output)")

        // A broken certificate file: an ERROR, and the certificate in use stays.
        try "not a certificate".write(toFile: cert, atomically: true, encoding: .utf8)
        tern.child.signal(SIGHUP)
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("[ERROR] [tls] listener l: certificate reload failed (SIGHUP)") }, "\(tern.child.output)")
        #expect(try servedSubject(port: port, serverName: "localhost") == "subject=CN = after-reload")
        #expect(tern.child.isRunning)
    }
}
