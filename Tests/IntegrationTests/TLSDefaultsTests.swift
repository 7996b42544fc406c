import Foundation
import Testing
import TernTestSupport

/// Listener TLS defaults that are Tern's choice rather than OpenSSL's: one TLS 1.3 ticket per full
/// handshake and AES-128-GCM first (Go's server, so MOSN, does both), `cipher_suites` overriding.
extension TLSTests {
    /// `openssl s_client -msg` output for one request over TLS 1.3.
    func tls13Exchange(port: UInt16) throws -> String {
        let request = NSTemporaryDirectory() + "tern-defaults-request-\(UUID().uuidString)"
        try "GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".write(toFile: request, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: request) }
        return try run("/usr/bin/openssl", ["s_client", "-tls1_3", "-msg", "-ign_eof", "-connect", "127.0.0.1:\(port)",
                                            "-CAfile", certs.caCert],
                       timeout: 20, standardInput: request, includeStderr: true).1
    }

    @Test func aFullTLS13HandshakeSendsOneTicketAndPrefersAES128() throws {
        let (port, _) = try startTern(listenerKeys: "\"tls_context\": \(context(certs.serverCert, certs.serverKey))")
        let out = try tls13Exchange(port: port)
        #expect(out.contains("hello from upstream /d"), "\(out)")
        let tickets = out.components(separatedBy: "NewSessionTicket").count - 1
        #expect(tickets == 1, "NewSessionTicket messages: \(tickets)")
        #expect(out.contains("Cipher is TLS_AES_128_GCM_SHA256"), "\(out)")
    }

    @Test func cipherSuitesInTheConfigReplaceTheTLS13Order() throws {
        let keys = ", \"cipher_suites\": \"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\""
        let (port, _) = try startTern(listenerKeys: "\"tls_context\": \(context(certs.serverCert, certs.serverKey, keys))")
        let out = try tls13Exchange(port: port)
        #expect(out.contains("hello from upstream /d"), "\(out)")
        #expect(out.contains("Cipher is TLS_AES_256_GCM_SHA384"), "\(out)")
    }

    /// A TLS 1.2 client whose ciphers are all outside the listener's `cipher_suites` is refused
    /// (no shared cipher), with a log line; one offering a listed cipher is served.
    @Test func aClientWithoutAListedCipherIsRefused() throws {
        let listed = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
        let keys = ", \"cipher_suites\": \"\(listed)\", \"max_version\": \"TLSv1_2\""
        let (port, tern) = try startTern(listenerKeys: "\"tls_context\": \(context(certs.serverCert, certs.serverKey, keys))")
        let url = "https://localhost:\(port)/c"
        let other = try curl(["--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256", url])
        #expect(other.status != 0 && !other.output.contains("hello from upstream"), "\(other.output)")
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("no shared cipher") }, "\(tern.child.output)")
        #expect(try curl(["--tls-max", "1.2", "--ciphers", listed, url]).output == "hello from upstream /c")
    }
}
