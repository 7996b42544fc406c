import Foundation
import Glibc
import Testing
import TernTestSupport

/// Certificate reload without SIGHUP (the files watched), for listeners and for clusters' client
/// certificates, under traffic; 50 MB through a TLS listener and upstream TLS; connections that
/// never finish a handshake; client CA names per SNI context.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class TLSReloadTests {
    let certs: TestCertificates
    let upstream: PythonUpstream
    var terns: [TernProcess] = []
    var directories: [String] = []

    init() throws {
        certs = try TestCertificates.get()
        upstream = try PythonUpstream()
    }

    deinit {
        for t in terns { t.stop() }
        upstream.stop()
        for d in directories { try? FileManager.default.removeItem(atPath: d) }
    }

    var rogueCA: String { certs.directory + "/rogue-ca.crt" }
    var clients: String { TestPaths.peers + "/tls_clients.py" }

    func makeDirectory(_ name: String) throws -> String {
        let d = NSTemporaryDirectory() + "tern-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        directories.append(d)
        return d
    }

    /// Replaces `path` as a whole by a copy of `source` (written aside, then rename(2)), as
    /// cert-manager or an operator would.
    func replaceAtomically(_ path: String, with source: String) throws {
        let aside = path + ".new-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: source, toPath: aside)
        guard rename(aside, path) == 0 else { throw TestError("rename \(aside): \(String(cString: strerror(errno)))") }
    }

    func context(_ cert: String, _ key: String, _ extra: String = "") -> String {
        "{\"status\": true, \"cert_chain\": \"\(cert)\", \"private_key\": \"\(key)\"\(extra)}"
    }

    /// A Tern in front of the Python upstream whose listener carries `listenerKeys`.
    func startTern(listenerKeys: String, workers: Int = 2) throws -> (port: UInt16, tern: TernProcess) {
        let port = freePort()
        let config = proxyConfig(listen: port, upstream: upstream.port, routeTimeout: "60s")
            .replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(listenerKeys),")
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", String(workers)])
        terns.append(tern)
        return (port, tern)
    }

    func curl(_ args: [String]) throws -> (status: Int32, output: String) {
        try run("/usr/bin/curl", ["-sS", "--max-time", "60", "--cacert", certs.caCert] + args, timeout: 90, includeStderr: true)
    }

    /// `openssl s_client`'s whole output for one connection with `serverName` as SNI.
    func sClient(port: UInt16, serverName: String, extra: [String] = []) throws -> String {
        let empty = NSTemporaryDirectory() + "tern-empty-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: empty) }
        return try run("/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", certs.caCert, "-servername", serverName] + extra,
                       timeout: 20, standardInput: empty, includeStderr: true).1
    }

    func servedSubject(port: UInt16) throws -> String {
        let out = try sClient(port: port, serverName: "localhost")
        return out.split(separator: "\n").first { $0.hasPrefix("subject=") }.map(String.init) ?? "no subject in: \(out)"
    }

    /// A Kubernetes secret volume: `tls.crt` and `tls.key` are symlinks through `..data`, itself a
    /// symlink to a versioned directory; an update writes a new directory and renames a new
    /// `..data` link over the old one, so both files change in one step.
    struct SecretVolume {
        let directory: String
        var version = 0
        var cert: String { directory + "/tls.crt" }
        var key: String { directory + "/tls.key" }

        init(directory: String, cert: String, key: String) throws {
            self.directory = directory
            try update(cert: cert, key: key)
            try FileManager.default.createSymbolicLink(atPath: self.cert, withDestinationPath: "..data/tls.crt")
            try FileManager.default.createSymbolicLink(atPath: self.key, withDestinationPath: "..data/tls.key")
        }

        mutating func update(cert: String, key: String) throws {
            version += 1
            let versioned = "..v\(version)"
            try FileManager.default.createDirectory(atPath: directory + "/" + versioned, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: cert, toPath: directory + "/\(versioned)/tls.crt")
            try FileManager.default.copyItem(atPath: key, toPath: directory + "/\(versioned)/tls.key")
            let link = directory + "/..data_tmp"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: versioned)
            guard rename(link, directory + "/..data") == 0 else { throw TestError("rename ..data: \(String(cString: strerror(errno)))") }
        }
    }

    // MARK: listener certificates

    /// The certificate files swapped (a Kubernetes secret update) while clients keep making TLS
    /// requests on new connections and on one keep-alive connection: no request fails, new
    /// handshakes get the new certificate without a SIGHUP, the keep-alive connection carries on.
    @Test func listenerCertificatesReloadUnderTrafficWhenTheFilesChange() throws {
        let before = try certs.serverLeaf("traffic-before", commonName: "traffic-before", dnsNames: ["localhost"])
        let after = try certs.serverLeaf("traffic-after", commonName: "traffic-after", dnsNames: ["localhost"])
        var volume = try SecretVolume(directory: try makeDirectory("secret"), cert: before.cert, key: before.key)
        let (port, tern) = try startTern(listenerKeys: "\"tls_context\": \(context(volume.cert, volume.key))")
        #expect(try servedSubject(port: port) == "subject=CN = traffic-before")

        let stop = try makeDirectory("traffic") + "/stop"
        let traffic = try ChildProcess("/usr/bin/python3", [clients, "traffic", String(port), certs.caCert, stop], name: "traffic")
        defer { traffic.stop() }
        #expect(waitUntil(timeout: 20) { traffic.output.contains("cn traffic-before") }, "\(traffic.output)")

        try volume.update(cert: after.cert, key: after.key)
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("certificates reloaded (files changed") }, "\(tern.child.output)")
        #expect(waitUntil(timeout: 30) { traffic.output.contains("after20") }, "\(traffic.output)")
        _ = FileManager.default.createFile(atPath: stop, contents: Data())
        #expect(traffic.waitForExit(timeout: 30) == 0, "\(traffic.output)")

        let summaryLine = try #require(traffic.output.split(separator: "\n").last { $0.hasPrefix("{") }, "\(traffic.output)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(summaryLine.utf8)) as? [String: Any])
        #expect(summary["new_fail"] as? Int == 0 && summary["keepalive_fail"] as? Int == 0, "\(summaryLine)")
        #expect((summary["new_ok"] as? Int ?? 0) >= 25, "\(summaryLine)")
        // New handshakes: the old certificate, then the new one, and the new one to the end.
        let seen = (summary["cns"] as? [[Any]] ?? []).compactMap { $0.first as? String }
        #expect(seen.first == "traffic-before" && seen.last == "traffic-after", "\(summaryLine)")
        // The keep-alive connection: opened under the old certificate, never reconnected, and
        // still answered after the new one was in use.
        #expect(summary["keepalive_cn"] as? String == "traffic-before", "\(summaryLine)")
        #expect(summary["keepalive_reconnected"] as? Bool == false, "\(summaryLine)")
        #expect((summary["keepalive_after_change"] as? Int ?? 0) > 0, "\(summaryLine)")
        #expect(try servedSubject(port: port) == "subject=CN = traffic-after")
        #expect(!tern.child.output.contains("[ERROR]"), "\(tern.child.output)")
    }

    /// A key that does not match the certificate, then a half-written certificate: each refused
    /// with an ERROR naming why, the certificate in use still served; the write completed, the
    /// new pair is taken.
    @Test func aBadReplacementKeepsTheCertificateInUseAndLogsWhy() throws {
        let first = try certs.serverLeaf("bad-first", commonName: "bad-first", dnsNames: ["localhost"])
        let second = try certs.serverLeaf("bad-second", commonName: "bad-second", dnsNames: ["localhost"])
        let live = try makeDirectory("bad-replacement")
        let (cert, key) = (live + "/server.crt", live + "/server.key")
        try FileManager.default.copyItem(atPath: first.cert, toPath: cert)
        try FileManager.default.copyItem(atPath: first.key, toPath: key)
        let (port, tern) = try startTern(listenerKeys: "\"tls_context\": \(context(cert, key))")
        #expect(try servedSubject(port: port) == "subject=CN = bad-first")

        try replaceAtomically(key, with: certs.strayKey)
        #expect(waitUntil(timeout: 10) { tern.child.output.contains("[ERROR] [tls] listener l: certificate reload failed (files changed)") }, "\(tern.child.output)")
        #expect(tern.child.output.contains("private_key"), "\(tern.child.output)")
        #expect(try servedSubject(port: port) == "subject=CN = bad-first")
        #expect(try curl(["https://localhost:\(port)/still"]).output == "hello from upstream /still")

        // The matching key back with half of the next certificate, written in place.
        try replaceAtomically(key, with: second.key)
        let pem = certs.read(second.cert)
        try String(pem.prefix(pem.count / 2)).write(toFile: cert, atomically: false, encoding: .utf8)
        #expect(waitUntil(timeout: 10) { tern.child.output.components(separatedBy: "certificate reload failed").count - 1 >= 2 }, "\(tern.child.output)")
        #expect(try servedSubject(port: port) == "subject=CN = bad-first")
        // The rest of the write: the next look takes the pair.
        try pem.write(toFile: cert, atomically: false, encoding: .utf8)
        #expect(waitUntil(timeout: 10) { (try? servedSubject(port: port)) == "subject=CN = bad-second" }, "\(tern.child.output)")
        #expect(tern.child.output.contains("certificates reloaded (files changed"), "\(tern.child.output)")
        #expect(tern.child.isRunning)
    }

    // MARK: upstream (cluster) certificates

    /// A server-side Tern (TLS listener requiring a client certificate from the CA in `caFile`)
    /// and a client-side Tern whose cluster `up` speaks TLS to it with the client certificate in
    /// `certFile`/`keyFile`. `clientListenerTLS`: the client side's listener terminates TLS too.
    func startGatewayPair(caFile: String, certFile: String, keyFile: String, clientListenerTLS: Bool = false,
                          clusterExtra: String = "") throws -> (port: UInt16, client: TernProcess, server: TernProcess, serverPort: UInt16) {
        let serverPort = freePort()
        let serverTLS = "\"tls_context\": \(context(certs.serverCert, certs.serverKey, ", \"ca_cert\": \"\(caFile)\", \"verify_client\": true"))"
        let server = try startTern(at: serverPort, listenerKeys: serverTLS, upstreamPort: upstream.port, clusterTLS: nil, clusterExtra: "")
        let port = freePort()
        let listenerTLS = clientListenerTLS ? "\"tls_context\": \(context(certs.serverCert, certs.serverKey))" : nil
        let client = try startTern(at: port, listenerKeys: listenerTLS, upstreamPort: serverPort,
                                   clusterTLS: clusterTLS(certFile: certFile, keyFile: keyFile), clusterExtra: clusterExtra)
        return (port, client, server, serverPort)
    }

    func startTern(at port: UInt16, listenerKeys: String?, upstreamPort: UInt16, clusterTLS: String?, clusterExtra: String,
                   workers: Int = 2, logLevel: String = "INFO") throws -> TernProcess {
        var config = proxyConfig(listen: port, upstream: upstreamPort, routeTimeout: "60s", logLevel: logLevel)
        if let listenerKeys { config = config.replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(listenerKeys),") }
        if let clusterTLS {
            config = config.replacingOccurrences(of: "\"connect_timeout\": \"2s\",", with: "\"connect_timeout\": \"2s\", \"tls_context\": \(clusterTLS)\(clusterExtra),")
        }
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", String(workers)])
        terns.append(tern)
        return tern
    }

    func clusterTLS(certFile: String, keyFile: String) -> String {
        "{\"status\": true, \"ca_cert\": \"\(certs.caCert)\", \"cert_chain\": \"\(certFile)\", \"private_key\": \"\(keyFile)\", \"server_name\": \"localhost\"}"
    }

    /// The upstream comes to require a client certificate from the rogue CA (its ca_cert file
    /// replaced); the client side's cluster certificate files are then replaced by one from that
    /// CA, and its new upstream connections present it, with no SIGHUP on either side. An upstream
    /// keep-alive connection made before (by a second client side, on the same files) carries on.
    @Test func clusterClientCertificatesReloadForNewUpstreamConnections() throws {
        let serverFiles = try makeDirectory("upstream-ca")
        let clientFiles = try makeDirectory("cluster-cert")
        let (ca, cert, key) = (serverFiles + "/ca.crt", clientFiles + "/client.crt", clientFiles + "/client.key")
        try FileManager.default.copyItem(atPath: certs.caCert, toPath: ca)
        try FileManager.default.copyItem(atPath: certs.clientCert, toPath: cert)
        try FileManager.default.copyItem(atPath: certs.clientKey, toPath: key)
        // One request per upstream connection: each request makes a new upstream handshake.
        let (port, client, server, serverPort) = try startGatewayPair(caFile: ca, certFile: cert, keyFile: key, clusterExtra: ", \"max_request_per_conn\": 1")
        let url = "http://127.0.0.1:\(port)"
        #expect(try curl(["\(url)/one"]).output == "hello from upstream /one")
        // Keep-alive upstream connections, one worker, DEBUG: one "established" line per connection.
        let pooledPort = freePort()
        let pooled = try startTern(at: pooledPort, listenerKeys: nil, upstreamPort: serverPort, clusterTLS: clusterTLS(certFile: cert, keyFile: key),
                                   clusterExtra: "", workers: 1, logLevel: "DEBUG")
        #expect(try curl(["http://127.0.0.1:\(pooledPort)/pooled-before"]).output == "hello from upstream /pooled-before")

        // The upstream now trusts only the rogue CA: the client certificate in use is refused.
        try replaceAtomically(ca, with: rogueCA)
        #expect(waitUntil(timeout: 10) { server.child.output.contains("listener l: certificates reloaded (files changed") }, "\(server.child.output)")
        let refused = try curl(["-i", "\(url)/two"])
        #expect(refused.output.contains("HTTP/1.1 502") && refused.output.lowercased().contains("upstream_tls_handshake_failed"), "\(refused.output)")

        // The cluster's certificate and key replaced (one rename each).
        try replaceAtomically(cert, with: certs.rogueClientCert)
        try replaceAtomically(key, with: certs.rogueClientKey)
        #expect(waitUntil(timeout: 10) { client.child.output.contains("cluster up: certificates reloaded (files changed)") }, "\(client.child.output)")
        #expect(waitUntil(timeout: 10) { (try? curl(["\(url)/three"]).output) == "hello from upstream /three" }, "\(client.child.output)")
        for i in 0..<3 { #expect(try curl(["\(url)/after\(i)"]).output == "hello from upstream /after\(i)") }
        // The pooled connection made with the old certificate still carries requests.
        #expect(waitUntil(timeout: 10) { pooled.child.output.contains("cluster up: certificates reloaded (files changed)") }, "\(pooled.child.output)")
        #expect(try curl(["http://127.0.0.1:\(pooledPort)/pooled-after"]).output == "hello from upstream /pooled-after")
        #expect(pooled.child.output.components(separatedBy: "established (TLS").count - 1 == 1, "\(pooled.child.output)")
        #expect(client.child.isRunning && server.child.isRunning)
    }

    // MARK: transfers and broken handshakes

    /// 50 MB up (request body) and 50 MB down (response body) through a TLS listener, then
    /// upstream mTLS to a second Tern's TLS listener, checked by SHA-256 at both ends.
    @Test func fiftyMegabytesBothWaysThroughATLSListenerAndUpstreamTLS() throws {
        let (port, client, _, _) = try startGatewayPair(caFile: certs.caCert, certFile: certs.clientCert, keyFile: certs.clientKey, clientListenerTLS: true)
        let size = 50 * 1024 * 1024 + 4321
        let (path, sentDigest) = try temporaryPatternFile(size: size, multiplier: 197)
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Up: the upstream answers the SHA-256 and length of the body it received.
        let upload = try curl(["--data-binary", "@\(path)", "https://localhost:\(port)/sha"])
        #expect(upload.output == "\(sentDigest) \(size)", "\(upload.output)\n\(client.child.output.suffix(2000))")
        // Down: the upstream's SHA-256 of what it sent comes in the chunked trailer.
        let (status, out) = try run("/usr/bin/python3", [clients, "download", String(port), certs.caCert, "/big?n=\(size)&chunked=1"],
                                    timeout: 120, includeStderr: true)
        let fields = out.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(status == 0 && fields.count == 3, "\(out)")
        #expect(fields.count == 3 && fields[1] == String(size) && fields[0] == fields[2] && fields[0].count == 64, "\(out)")
    }

    /// Garbage in place of a ClientHello, and a ClientHello that never finishes, while a
    /// keep-alive client is served: the garbage connection alone is closed at once, the half
    /// handshake waits on its own, the other client and new ones are served.
    @Test func brokenHandshakesCloseOnlyTheirOwnConnection() throws {
        let (port, tern) = try startTern(listenerKeys: "\"tls_context\": \(context(certs.serverCert, certs.serverKey))", workers: 1)
        let go = try makeDirectory("broken-handshakes") + "/go"
        let script = """
        import http.client, os, ssl, sys, time
        conn = http.client.HTTPSConnection("localhost", int(sys.argv[1]), context=ssl.create_default_context(cafile=sys.argv[2]), timeout=10)
        def get(path):
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        print("first", get("/one"), flush=True)
        first = conn.sock
        deadline = time.time() + 20
        while not os.path.exists(sys.argv[3]) and time.time() < deadline: time.sleep(0.02)
        print("second", get("/two"), "same" if conn.sock is first else "reconnected", flush=True)
        """
        let keepAlive = try ChildProcess("/usr/bin/python3", ["-c", script, String(port), certs.caCert, go], name: "keepalive")
        defer { keepAlive.stop() }
        #expect(waitUntil(timeout: 10) { keepAlive.output.contains("first") }, "\(keepAlive.output)")

        let half = try RawClient(port: port)
        // The first 40 bytes of a ClientHello record that announces 512.
        half.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + [UInt8](repeating: 7, count: 29))
        let garbage = try RawClient(port: port)
        garbage.send([0x16, 0x03, 0x01, 0x00, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0x41, count: 64))
        let r = garbage.readUntilClosed(timeout: 5)
        #expect(r.closed && r.elapsed < 2, "closed=\(r.closed) after \(r.elapsed) s")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("TLS handshake with 127.0.0.1") }, "\(tern.child.output)")

        // Served meanwhile: the keep-alive connection and a new client, with the half handshake open.
        _ = FileManager.default.createFile(atPath: go, contents: Data())
        #expect(waitUntil(timeout: 10) { keepAlive.output.contains("second") }, "\(keepAlive.output)")
        #expect(keepAlive.output.contains("second hello from upstream /two same"), "\(keepAlive.output)")
        #expect(try curl(["https://localhost:\(port)/new"]).output == "hello from upstream /new")
        let stillOpen = half.readUntilClosed(timeout: 0.5)
        #expect(!stillOpen.closed, "the half handshake was closed with the others")
        half.close()
    }

    // MARK: client CA names per SNI context

    /// Two contexts with verify_client and different ca_cert: the CertificateRequest names the
    /// CA of the context the SNI chose, and each context accepts only its own CA's clients.
    @Test func eachSNIContextAsksForAndAcceptsOnlyItsOwnClientCA() throws {
        let a = try certs.serverLeaf("ca-names-a", commonName: "a", dnsNames: ["a.test"])
        let b = try certs.serverLeaf("ca-names-b", commonName: "b", dnsNames: ["b.test"])
        let set = [context(a.cert, a.key, ", \"ca_cert\": \"\(certs.caCert)\", \"verify_client\": true"),
                   context(b.cert, b.key, ", \"ca_cert\": \"\(rogueCA)\", \"verify_client\": true")]
        let (port, tern) = try startTern(listenerKeys: "\"tls_context_set\": [\(set.joined(separator: ", "))]")

        func caNames(_ serverName: String, _ cert: String, _ key: String, _ version: String) throws -> String {
            let out = try sClient(port: port, serverName: serverName, extra: [version, "-cert", cert, "-key", key])
            guard let start = out.range(of: "Acceptable client certificate CA names") else { return "no CA names in: \(out)" }
            return String(out[start.upperBound...].prefix { $0 != "-" }.split(separator: "\n").filter { $0.contains("CN") }.joined(separator: ";"))
        }
        for version in ["-tls1_3", "-tls1_2"] {
            #expect(try caNames("a.test", certs.clientCert, certs.clientKey, version) == "CN = Tern Test CA", "\(version)")
            #expect(try caNames("b.test", certs.rogueClientCert, certs.rogueClientKey, version) == "CN = Rogue Test CA", "\(version)")
        }

        func request(_ serverName: String, _ cert: String, _ key: String) throws -> (status: Int32, output: String) {
            try curl(["--cert", cert, "--key", key, "--resolve", "\(serverName):\(port):127.0.0.1", "https://\(serverName):\(port)/ca"])
        }
        #expect(try request("a.test", certs.clientCert, certs.clientKey).output == "hello from upstream /ca")
        #expect(try request("b.test", certs.rogueClientCert, certs.rogueClientKey).output == "hello from upstream /ca")
        let wrongForB = try request("b.test", certs.clientCert, certs.clientKey)
        #expect(wrongForB.status != 0 && !wrongForB.output.contains("hello from upstream"), "\(wrongForB.output)")
        let wrongForA = try request("a.test", certs.rogueClientCert, certs.rogueClientKey)
        #expect(wrongForA.status != 0 && !wrongForA.output.contains("hello from upstream"), "\(wrongForA.output)")
        #expect(waitUntil(timeout: 5) { tern.child.output.components(separatedBy: "certificate verify failed").count - 1 >= 2 }, "\(tern.child.output)")
    }
}
