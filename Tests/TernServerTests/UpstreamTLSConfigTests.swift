import Foundation
import Testing
@testable import TernServer
import TernTLS
import TernTestSupport

private let clusterPath = "$.cluster_manager.clusters[0]"

/// A config whose cluster `c` has `tls` as its `tls_context` keys and `hosts` as its hosts.
private func upstreamConfig(_ tls: String, hosts: String = "[{\"address\": \"127.0.0.1:8080\"}]") -> String {
    config(cluster: "\"name\": \"c\", \"hosts\": \(hosts), \"tls_context\": {\"status\": true\(tls.isEmpty ? "" : ", " + tls)}")
}

private func upstreamTLS(_ r: ConfigResult) throws -> UpstreamTLS {
    let plan = try #require(r.plan, "\(r.diagnostics.errors)")
    return try #require(plan.clusters[0].upstreamTransport as? UpstreamTLS)
}

struct UpstreamTLSConfigTests {
    let certs: TestCertificates
    let ca: String
    let client: String

    init() throws {
        certs = try TestCertificates.get()
        ca = "\"ca_cert\": \"\(certs.caCert)\""
        client = "\"cert_chain\": \"\(certs.clientCert)\", \"private_key\": \"\(certs.clientKey)\""
    }

    @Test func aClusterContextVerifiesByCANamesEachHostAndHonoursTLSDisable() throws {
        let hosts = """
        [{"address": "127.0.0.1:8080"}, {"address": "127.0.0.1:8081", "hostname": "app.internal"},
         {"address": "[::1]:8082"}, {"address": "127.0.0.1:8083", "tls_disable": true}]
        """
        let r = load(upstreamConfig("\(ca), \(client), \"alpn\": [\"http/1.1\"], \"min_version\": \"TLSv1_3\"", hosts: hosts))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let tls = try upstreamTLS(r)
        #expect(tls.slot.context.verifiesServer)
        #expect(tls.hostNames == ["127.0.0.1", "app.internal", "::1", nil])
        // server_name overrides every host's name.
        let named = try upstreamTLS(load(upstreamConfig("\(ca), \"server_name\": \"localhost\"", hosts: hosts)))
        #expect(named.hostNames == ["localhost", "localhost", "localhost", nil])
    }

    @Test func withoutCACertTheContextIsRefusedUnlessInsecureSkipIsWritten() throws {
        let none = load(upstreamConfig(""))
        #expect(hasError(none, at: "\(clusterPath).tls_context.ca_cert", saying: "required", "insecure_skip"))
        let insecure = load(upstreamConfig("\"insecure_skip\": true"))
        #expect(insecure.diagnostics.errors.isEmpty, "\(insecure.diagnostics.errors)")
        #expect(try upstreamTLS(insecure).slot.context.verifiesServer == false)
        #expect(insecure.diagnostics.warnings.contains { $0.hasPrefix("\(clusterPath).tls_context.insecure_skip:") && $0.contains("NOT verified") })
    }

    @Test func errorsNameTheirPath() throws {
        let unreadable = load(upstreamConfig("\"ca_cert\": \"/nonexistent/ca.pem\""))
        #expect(hasError(unreadable, at: "\(clusterPath).tls_context.ca_cert", saying: "cannot read /nonexistent/ca.pem"))
        let version = load(upstreamConfig("\(ca), \"max_version\": \"TLSv1_1\""))
        #expect(hasError(version, at: "\(clusterPath).tls_context.max_version", saying: "RFC 8996"))
        let unknown = load(upstreamConfig("\(ca), \"min_version\": \"TLSv9\""))
        #expect(hasError(unknown, at: "\(clusterPath).tls_context.min_version", saying: "unknown TLS version"))
        let halfClient = load(upstreamConfig("\(ca), \"cert_chain\": \"\(certs.clientCert)\""))
        #expect(hasError(halfClient, at: "\(clusterPath).tls_context.private_key", saying: "both"))
        let mismatch = load(upstreamConfig("\(ca), \"cert_chain\": \"\(certs.clientCert)\", \"private_key\": \"\(certs.strayKey)\""))
        #expect(hasError(mismatch, at: "\(clusterPath).tls_context.private_key"), "\(mismatch.diagnostics.errors)")
        let cipher = load(upstreamConfig("\(ca), \"cipher_suites\": \"HIGH\""))
        #expect(hasError(cipher, at: "\(clusterPath).tls_context.cipher_suites", saying: "HIGH"))
        let notCA = load(upstreamConfig("\"ca_cert\": \"\(certs.clientKey)\""))
        #expect(hasError(notCA, at: "\(clusterPath).tls_context.ca_cert", saying: "no PEM certificate"))
        let refused = load(upstreamConfig("\(ca), \"fall_back\": true"))
        #expect(hasError(refused, at: "\(clusterPath).tls_context.fall_back", saying: "not supported by Tern yet"))
    }

    @Test func clusterManagerTLSIsSharedByTheClustersThatAskForIt() throws {
        let manager = "\"tls_context\": {\"status\": true, \(ca), \"server_name\": \"localhost\"}"
        func withManager(_ managerContext: String, cluster: String) -> String {
            config(cluster: cluster).replacingOccurrences(of: "\"cluster_manager\": { ", with: "\"cluster_manager\": { \(managerContext), ")
        }
        let json = withManager(manager, cluster: "\"name\": \"c\", \"cluster_manager_tls\": true, \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]")
        #expect(json.contains("cluster_manager_tls"))
        let r = load(json)
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        #expect(try upstreamTLS(r).hostNames == ["localhost"])
        // Asking for the cluster manager's TLS when it has none is an error, not plain text.
        let missing = load(withManager("\"tls_context\": {\"status\": false}", cluster: "\"name\": \"c\", \"cluster_manager_tls\": true, \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]"))
        #expect(hasError(missing, at: "\(clusterPath).cluster_manager_tls", saying: "no status: true"))
        // A manager context is checked even when no cluster uses it.
        let bad = load(withManager("\"tls_context\": {\"status\": true}", cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]"))
        #expect(hasError(bad, at: "$.cluster_manager.tls_context.ca_cert", saying: "required"))
    }

    /// What a certificate reload looks at: each context with files once (the cluster manager's
    /// shared one included), never an inline one; a rebuild reads the files again or refuses.
    @Test func reloadableContextsAreTheOnesWithFiles() throws {
        let hosts = "\"hosts\": [{\"address\": \"127.0.0.1:8080\"}]"
        let manager = "\"tls_context\": {\"status\": true, \(ca), \(client), \"server_name\": \"localhost\"}"
        let clusters = "\"name\": \"c\", \"cluster_manager_tls\": true, \(hosts) }, { \"name\": \"b\", \"cluster_manager_tls\": true, \(hosts) }, "
            + "{ \"name\": \"own\", \(hosts), \"tls_context\": {\"status\": true, \(ca)} }, "
            + "{ \"name\": \"inline\", \(hosts), \"tls_context\": {\"status\": true, \"ca_cert\": \(String(reflecting: certs.read(certs.caCert)))}"
        let r = load(config(cluster: clusters).replacingOccurrences(of: "\"cluster_manager\": { ", with: "\"cluster_manager\": { \(manager), "))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let slots = Server.reloadableClientContexts(plan)
        #expect(slots.map(\.owner) == ["cluster_manager", "cluster own"])
        #expect(slots.first?.files == TLSContextFiles(certificateChain: certs.clientCert, privateKey: certs.clientKey, ca: certs.caCert))
        #expect(slots.last?.files == TLSContextFiles(certificateChain: nil, privateKey: nil, ca: certs.caCert))

        let shared = try #require(slots.first)
        let rebuilt = try Server.rebuild(shared.context, files: shared.files)
        #expect(rebuilt !== shared.context && rebuilt.settings.certificateChainPEM == Array(certs.read(certs.clientCert).utf8))
        var mismatched = shared.files
        mismatched.privateKey = certs.strayKey
        #expect(throws: Server.ReloadError.self) { try Server.rebuild(shared.context, files: mismatched) }
    }

    @Test func aPlainClusterStaysPlain() throws {
        let r = load(config())
        #expect(try #require(r.plan).clusters[0].upstreamTransport == nil)
        let off = load(config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}], \"tls_context\": {\"status\": false}"))
        #expect(try #require(off.plan).clusters[0].upstreamTransport == nil)
        #expect(off.diagnostics.warnings.contains { $0.hasPrefix("\(clusterPath).tls_context:") })
    }
}
