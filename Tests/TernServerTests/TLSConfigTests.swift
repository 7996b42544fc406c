import Foundation
import Testing
@testable import TernServer
import TernTestSupport

/// A config whose listener carries `tls` as its `tls_context` (keys and values, JSON).
private func tlsConfig(_ tls: String, place: String = "listener") -> String {
    let context = "\"tls_context\": {\"status\": true, \(tls)}"
    var json = config()
    if place == "listener" {
        json = json.replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(context),")
    } else {
        json = json.replacingOccurrences(of: "\"filter_chains\": [{ ", with: "\"filter_chains\": [{ \(context), ")
    }
    return json
}

/// A JSON string literal (quotes and escapes) for `text`.
private func quoted(_ text: String) -> String {
    String(data: try! JSONSerialization.data(withJSONObject: [text]), encoding: .utf8)!.dropFirst().dropLast().description
}

private let contextPath = "$.servers[0].listeners[0].tls_context"

struct TLSConfigTests {
    let certs: TestCertificates
    let serverFiles: String

    init() throws {
        certs = try TestCertificates.get()
        serverFiles = "\"cert_chain\": \(quoted(certs.serverCert)), \"private_key\": \(quoted(certs.serverKey))"
    }

    @Test func certificateAndKeyFromFilesOrInlineBuildAContext() throws {
        for place in ["listener", "chain"] {
            let r = load(tlsConfig(serverFiles, place: place))
            #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
            #expect(try #require(r.plan).listeners[0].tls != nil)
        }
        let inline = "\"cert_chain\": \(quoted(certs.read(certs.serverCert))), \"private_key\": \(quoted(certs.read(certs.serverKey)))"
        let r = load(tlsConfig(inline + ", \"ca_cert\": \(quoted(certs.read(certs.caCert))), \"verify_client\": true, \"min_version\": \"TLSv1_2\", "
                               + "\"max_version\": \"TLSv1_3\", \"cipher_suites\": \"ECDHE-ECDSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256\", "
                               + "\"ecdh_curves\": \"X25519,P256\", \"alpn\": [\"http/1.1\"]"))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        #expect(r.plan?.listeners[0].tls != nil)
    }

    @Test func plainListenersHaveNoContext() throws {
        let r = load(config())
        #expect(try #require(r.plan).listeners[0].tls == nil)
        let off = load(config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"tls_context\": {\"status\": false},"))
        #expect(try #require(off.plan).listeners[0].tls == nil)
        #expect(off.diagnostics.warnings.contains { $0.hasPrefix("\(contextPath): status is not true") }, "\(off.diagnostics.warnings)")
    }

    @Test func errorsNameTheKeyTheyComeFrom() throws {
        let cases: [(String, String, String)] = [
            ("\"private_key\": \(quoted(certs.serverKey))", "cert_chain", "required"),
            ("\"cert_chain\": \(quoted(certs.serverCert))", "private_key", "required"),
            ("\"cert_chain\": \"/nonexistent/tern.crt\", \"private_key\": \(quoted(certs.serverKey))", "cert_chain", "cannot read /nonexistent/tern.crt"),
            ("\"cert_chain\": \(quoted(certs.serverKey)), \"private_key\": \(quoted(certs.serverKey))", "cert_chain", "no PEM certificate"),
            ("\"cert_chain\": \(quoted(certs.serverCert)), \"private_key\": \(quoted(certs.strayKey))", "private_key", "does not match"),
            (serverFiles + ", \"min_version\": \"TLSv1_4\"", "min_version", "unknown TLS version"),
            (serverFiles + ", \"max_version\": \"TLSv1_1\"", "max_version", "RFC 8996"),
            (serverFiles + ", \"min_version\": \"TLSv1_3\", \"max_version\": \"TLSv1_2\"", "max_version", "below min_version"),
            (serverFiles + ", \"verify_client\": true", "ca_cert", "required with verify_client"),
            (serverFiles + ", \"require_client_cert\": true", "ca_cert", "required with require_client_cert"),
            (serverFiles + ", \"verify_client\": true, \"ca_cert\": \(quoted(certs.serverKey))", "ca_cert", "no PEM certificate"),
            (serverFiles + ", \"cipher_suites\": \"ECDHE-RSA-AES128-GCM-SHA256:NO-SUCH-CIPHER\"", "cipher_suites", "NO-SUCH-CIPHER"),
            (serverFiles + ", \"cipher_suites\": \"TLS_NO_SUCH_SUITE\"", "cipher_suites", "TLS_NO_SUCH_SUITE"),
            (serverFiles + ", \"ecdh_curves\": \"P256:P999\"", "ecdh_curves", "P999"),
            (serverFiles + ", \"fall_back\": true", "fall_back", "not supported by Tern yet"),
            (serverFiles + ", \"type\": \"sm\"", "type", "not supported by Tern yet"),
            (serverFiles + ", \"sds_source\": {\"CertificateConfig\": {}}", "sds_source", "not supported by Tern yet"),
        ]
        // A chain cut short in its second certificate (a file read mid-write): refused, not loaded without it.
        let ca = certs.read(certs.caCert)
        let truncated = certs.read(certs.serverCert) + ca.prefix(ca.count / 2)
        let more = [("\"cert_chain\": \(quoted(truncated)), \"private_key\": \(quoted(certs.serverKey))", "cert_chain", "after certificate 1 is malformed"),
                    (serverFiles + ", \"verify_client\": true, \"ca_cert\": \(quoted(ca + ca.prefix(ca.count - 30)))", "ca_cert", "after certificate 1 is malformed")]
        for (keys, key, words) in cases + more {
            let r = load(tlsConfig(keys))
            #expect(r.plan == nil, "\(key)")
            #expect(hasError(r, at: "\(contextPath).\(key)", saying: words), "\(key): \(r.diagnostics.errors)")
        }
    }

    @Test func whatIsNotBuiltYetStaysRefused() {
        let both = load(tlsConfig(serverFiles).replacingOccurrences(of: "\"filter_chains\": [{ ", with: "\"filter_chains\": [{ \"tls_context\": {\"status\": true, \(serverFiles)}, "))
        #expect(hasError(both, at: "$.servers[0].listeners[0].filter_chains[0].tls_context", saying: "both"))
    }

    @Test func aTLSContextSetBuildsOneContextPerEntryWithTheFirstAsDefault() throws {
        let setPath = "$.servers[0].listeners[0].tls_context_set"
        func withSet(_ entries: [String], place: String = "listener") -> ConfigResult {
            let set = "\"tls_context_set\": [\(entries.map { "{\"status\": true, \($0)}" }.joined(separator: ", "))]"
            return load(place == "listener" ? config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(set),")
                                            : config().replacingOccurrences(of: "\"filter_chains\": [{ ", with: "\"filter_chains\": [{ \(set), "))
        }
        for place in ["listener", "chain"] {
            let r = withSet([serverFiles, serverFiles], place: place)
            #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
            let set = try #require(r.plan?.listeners[0].tls)
            #expect(set.contexts.count == 2)
            #expect(set.names(of: 1) == ["localhost"])
            #expect(set.index(forServerName: "LOCALHOST") == 0 && set.index(forServerName: "other") == 0)
        }
        // A context with errors names its index; ciphers and curves are per listener.
        let bad = withSet([serverFiles, "\"cert_chain\": \(quoted(certs.serverCert))"])
        #expect(hasError(bad, at: "\(setPath)[1].private_key", saying: "required"))
        let ciphers = withSet([serverFiles, serverFiles + ", \"cipher_suites\": \"ECDHE-ECDSA-AES128-GCM-SHA256\""])
        #expect(hasError(ciphers, at: "\(setPath)[1].cipher_suites", saying: "same in every context"))
        let curves = withSet([serverFiles + ", \"ecdh_curves\": \"P256\"", serverFiles + ", \"ecdh_curves\": \"P256\""])
        #expect(curves.diagnostics.errors.isEmpty, "\(curves.diagnostics.errors)")
        // TLS set in two places is refused, as for two tls_context.
        let twice = load(tlsConfig(serverFiles).replacingOccurrences(of: "\"filter_chains\": [{ ", with: "\"filter_chains\": [{ \"tls_context_set\": [{\"status\": true, \(serverFiles)}], "))
        #expect(hasError(twice, at: "$.servers[0].listeners[0].filter_chains[0].tls_context_set", saying: "both"))
        // Entries with status false are left out, with a warning; none left: plain text.
        let off = load(config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"tls_context_set\": [{\"status\": false}],"))
        #expect(try #require(off.plan).listeners[0].tls == nil)
        #expect(off.diagnostics.warnings.contains { $0.hasPrefix("\(setPath)[0]:") }, "\(off.diagnostics.warnings)")
    }

    @Test func clientSideKeysOnAListenerAreWarnings() throws {
        let r = load(tlsConfig(serverFiles + ", \"server_name\": \"example.com\", \"insecure_skip\": true"))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        // The context itself is read, not reported as ignored.
        #expect(!r.diagnostics.warnings.contains { $0.hasPrefix("\(contextPath):") }, "\(r.diagnostics.warnings)")
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("\(contextPath).server_name:") })
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("\(contextPath).insecure_skip:") })
    }
}
