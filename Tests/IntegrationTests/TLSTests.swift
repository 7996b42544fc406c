import Foundation
import Glibc
import Testing
import TernTestSupport

/// Downstream TLS end to end: curl and openssl s_client against the real `tern` with a listener
/// `tls_context`, in front of the Python HTTP upstream, with certificates made for the run.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class TLSTests {
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

    /// Starts a Tern whose listener terminates TLS with `tls` (extra `tls_context` keys); returns its port.
    func startTern(_ tls: String = "", idleTimeout: String? = nil) throws -> (port: UInt16, tern: TernProcess) {
        let port = freePort()
        let context = "\"tls_context\": {\"status\": true, \"cert_chain\": \"\(certs.serverCert)\", \"private_key\": \"\(certs.serverKey)\"\(tls)},"
        let config = proxyConfig(listen: port, upstream: upstream.port, routeTimeout: "10s", idleTimeout: idleTimeout)
            .replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(context)")
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "2"])
        terns.append(tern)
        return (port, tern)
    }

    /// curl's exit status and its output (stderr included: the TLS lines of -v).
    func curl(_ args: [String]) throws -> (status: Int32, output: String) {
        try run("/usr/bin/curl", ["-sS", "--max-time", "20", "--cacert", certs.caCert] + args, includeStderr: true)
    }

    @Test func curlThroughATLSListenerKeepsTheConnectionForSeveralRequests() throws {
        let (port, _) = try startTern(", \"alpn\": [\"http/1.1\"]")
        let url = "https://localhost:\(port)"
        // Three URLs in one curl: one connection (num_connects 1, then 0), each answered.
        let (status, out) = try curl(["-w", " connects=%{num_connects} code=%{http_code}\n", "\(url)/a", "\(url)/b", "\(url)/c"])
        #expect(status == 0, "\(out)")
        #expect(out.contains("hello from upstream /a connects=1 code=200"), "\(out)")
        #expect(out.contains("hello from upstream /b connects=0 code=200"), "\(out)")
        #expect(out.contains("hello from upstream /c connects=0 code=200"), "\(out)")
        // ALPN: the listener's list is offered back.
        let verbose = try curl(["-v", "\(url)/alpn"])
        #expect(verbose.output.contains("ALPN: server accepted http/1.1") || verbose.output.contains("ALPN, server accepted to use http/1.1"), "\(verbose.output)")
    }

    @Test func fiveMegabytesBothWaysArriveIntact() throws {
        let (port, _) = try startTern()
        let size = 5 * 1024 * 1024 + 321
        let (path, expected) = try temporaryPatternFile(size: size, multiplier: 131)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let upload = try curl(["--data-binary", "@\(path)", "https://localhost:\(port)/sha"])
        #expect(upload.output == "\(expected) \(size)", "\(upload.output)")

        let download = NSTemporaryDirectory() + "tern-tls-download-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: download) }
        let got = try curl(["-o", download, "-w", "%{size_download}", "https://localhost:\(port)/big?n=\(size)"])
        #expect(got.output == "\(size)", "\(got.output)")
        let body = try #require(FileManager.default.contents(atPath: download))
        #expect(body.count == size)
        var intact = body.count == size
        for i in stride(from: 0, to: min(size, body.count), by: 4093) where body[i] != UInt8(i % 256) { intact = false }
        #expect(intact)
    }

    @Test func mutualTLSAcceptsTheClientCertificateAndRefusesOthers() throws {
        let (port, tern) = try startTern(", \"ca_cert\": \"\(certs.caCert)\", \"verify_client\": true")
        let url = "https://localhost:\(port)/m"
        let good = ["--cert", certs.clientCert, "--key", certs.clientKey, url]
        #expect(try curl(good).output == "hello from upstream /m")

        let none = try curl([url])
        #expect(none.status != 0 && !none.output.contains("hello from upstream"), "\(none.output)")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("did not return a certificate") }, "\(tern.child.output)")

        let rogue = try curl(["--cert", certs.rogueClientCert, "--key", certs.rogueClientKey, url])
        #expect(rogue.status != 0 && !rogue.output.contains("hello from upstream"), "\(rogue.output)")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("certificate verify failed") }, "\(tern.child.output)")

        // Only the refused connections ended: the proxy serves the next client as before.
        #expect(try curl(good).output == "hello from upstream /m")
        #expect(tern.child.isRunning)
    }

    @Test func aPlainTextClientOnATLSPortIsClosedAtOnceWithALogLine() throws {
        let (port, tern) = try startTern()
        let c = try RawClient(port: port)
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readUntilClosed(timeout: 5)
        #expect(r.closed && r.elapsed < 2, "closed=\(r.closed) after \(r.elapsed) s")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("TLS handshake with 127.0.0.1") }, "\(tern.child.output)")
        #expect(tern.child.output.contains("http request") || tern.child.output.contains("wrong version number"), "\(tern.child.output)")
    }

    @Test func tls12And13AreNegotiatedAndMinVersionRefusesOlder() throws {
        let (port, _) = try startTern()
        let url = "https://localhost:\(port)/v"
        let v12 = try curl(["-v", "--tlsv1.2", "--tls-max", "1.2", url])
        #expect(v12.output.contains("SSL connection using TLSv1.2") && v12.output.contains("hello from upstream /v"), "\(v12.output)")
        let v13 = try curl(["-v", "--tlsv1.3", url])
        #expect(v13.output.contains("SSL connection using TLSv1.3") && v13.output.contains("hello from upstream /v"), "\(v13.output)")

        let (strict, tern) = try startTern(", \"min_version\": \"TLSv1_3\"")
        let refused = try curl(["--tlsv1.2", "--tls-max", "1.2", "https://localhost:\(strict)/v"])
        #expect(refused.status != 0 && !refused.output.contains("hello from upstream"), "\(refused.output)")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("unsupported protocol") }, "\(tern.child.output)")
        #expect(try curl(["https://localhost:\(strict)/v"]).output == "hello from upstream /v")

        let (capped, _) = try startTern(", \"max_version\": \"TLSv1_2\"")
        let v = try curl(["-v", "https://localhost:\(capped)/v"])
        #expect(v.output.contains("SSL connection using TLSv1.2"), "\(v.output)")
    }

    @Test func silentAndHalfHelloClientsAreLetGoByTheIdleTimeout() throws {
        let (port, _) = try startTern(idleTimeout: "1s")
        let silent = try RawClient(port: port)
        let half = try RawClient(port: port)
        // The first 40 bytes of a ClientHello record that announces 512.
        half.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + [UInt8](repeating: 7, count: 29))
        for c in [silent, half] {
            let r = c.readUntilClosed(timeout: 6)
            #expect(r.closed && r.elapsed < 4, "closed=\(r.closed) after \(r.elapsed) s")
        }
        // The listener goes on serving others.
        #expect(try curl(["https://localhost:\(port)/after"]).output == "hello from upstream /after")
    }

    /// A client that sends its ClientHello a byte at a time is let go at the handshake deadline
    /// (10 s, under this listener's 30 s idle timeout), not kept for the idle timeout.
    @Test func aTricklingHandshakeIsLetGoAtTheHandshakeDeadline() throws {
        let (port, tern) = try startTern(idleTimeout: "30s")
        let trickle = try RawClient(port: port)
        trickle.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03])
        let start = Date()
        var closed = false
        while !closed && Date().timeIntervalSince(start) < 15 {
            trickle.send([7])
            closed = trickle.readUntilClosed(timeout: 0.25).closed
        }
        let elapsed = Date().timeIntervalSince(start)
        #expect(closed && elapsed >= 9 && elapsed < 12, "closed=\(closed) after \(elapsed) s")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("not finished within 10000 ms; connection closed") }, "\(tern.child.output)")
        #expect(try curl(["https://localhost:\(port)/after"]).output == "hello from upstream /after")
    }

    /// Bolt over TLS without anthunder: Python's ssl module sends two heartbeats and a call no
    /// route takes; Tern answers all three itself (heartbeat acks, NO_PROCESSOR) through the codec.
    @Test func boltSpeaksOverTLS() throws {
        let port = freePort()
        let context = "\"tls_context\": {\"status\": true, \"cert_chain\": \"\(certs.serverCert)\", \"private_key\": \"\(certs.serverKey)\"},"
        let config = boltConfig(listen: port, upstream: freePort()).replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(context)")
        terns.append(try TernProcess(config: config, waitFor: [port]))
        let frames = BoltTestFrame.heartbeat(id: 7) + BoltTestFrame.heartbeat(id: 8)
            + BoltTestFrame.request(id: 9, service: "com.other.Unrouted:1.0", method: "m", body: [1, 2, 3])
        let input = NSTemporaryDirectory() + "tern-tls-bolt-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: input, contents: Data(frames))
        defer { try? FileManager.default.removeItem(atPath: input) }
        let script = """
        import socket, ssl, sys
        ctx = ssl.create_default_context(cafile=sys.argv[2])
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10), server_hostname="localhost")
        s.sendall(sys.stdin.buffer.read())
        got = b""
        while got.count(b"\\x01\\x00") < 3 or len(got) < 60:
            chunk = s.recv(65536)
            if not chunk: break
            got += chunk
        print(s.version(), got.hex())
        """
        let (status, out) = try run("/usr/bin/python3", ["-c", script, String(port), certs.caCert], timeout: 20, standardInput: input, includeStderr: true)
        #expect(status == 0, "\(out)")
        let parts = out.split(separator: " ")
        try #require(parts.count == 2, "\(out)")
        #expect(parts[0].hasPrefix("TLSv1.3"))
        let hex = String(parts[1]).trimmingCharacters(in: .whitespacesAndNewlines)
        var bytes: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex, let next = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex) { bytes.append(UInt8(hex[i..<next], radix: 16) ?? 0); i = next }
        // Three bolt v1 responses (20-byte header, then class, header and content lengths).
        var ids: [(id: Int, status: Int)] = []
        var at = 0
        while at + 20 <= bytes.count && bytes[at] == 1 && bytes[at + 1] == 0 {
            let id = Int(bytes[at + 5]) << 24 | Int(bytes[at + 6]) << 16 | Int(bytes[at + 7]) << 8 | Int(bytes[at + 8])
            let status = Int(bytes[at + 10]) << 8 | Int(bytes[at + 11])
            let rest = (Int(bytes[at + 12]) << 8 | Int(bytes[at + 13])) + (Int(bytes[at + 14]) << 8 | Int(bytes[at + 15]))
                + (Int(bytes[at + 16]) << 24 | Int(bytes[at + 17]) << 16 | Int(bytes[at + 18]) << 8 | Int(bytes[at + 19]))
            ids.append((id, status))
            at += 20 + rest
        }
        #expect(ids.map(\.id) == [7, 8, 9], "\(out)")
        #expect(ids.first?.status == 0 && ids.last?.status != 0, "\(ids)")
    }

    @Test func sessionsAreResumed() throws {
        let (port, _) = try startTern()
        let session = NSTemporaryDirectory() + "tern-tls-session-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: session) }
        let request = NSTemporaryDirectory() + "tern-tls-request-\(UUID().uuidString)"
        try "GET /r HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".write(toFile: request, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: request) }
        for version in ["-tls1_2", "-tls1_3"] {
            let base = ["s_client", version, "-connect", "127.0.0.1:\(port)", "-servername", "localhost", "-CAfile", certs.caCert, "-ign_eof"]
            let first = try run("/usr/bin/openssl", base + ["-sess_out", session], timeout: 20, standardInput: request, includeStderr: true).1
            #expect(first.contains("hello from upstream /r") && first.contains("New, TLSv1."), "\(version): \(first)")
            let second = try run("/usr/bin/openssl", base + ["-sess_in", session], timeout: 20, standardInput: request, includeStderr: true).1
            #expect(second.contains("hello from upstream /r") && second.contains("Reused, TLSv1."), "\(version): \(second)")
        }
    }
}
