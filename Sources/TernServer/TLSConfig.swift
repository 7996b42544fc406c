import Glibc
import TernTLS

/// Downstream TLS: a listener's (or its first filter chain's) `tls_context` with `status: true`,
/// or its `tls_context_set` (several certificates picked by SNI), read with MOSN's keys
/// (pkg/config/v2/tls.go) into one `TLSServerContextSet` per listener.
extension ConfigCompiler {
    /// nil when the listener serves plain text, or when a context has errors (recorded).
    func downstreamTLS(listener l: JSONObject, chain: JSONObject?, name: String) -> (contexts: TLSServerContextSet, files: [TLSContextFiles])? {
        let owners = [l, chain].compactMap { $0 }
        for o in owners where o.has("tls_context") && !o.enablesTLS("tls_context") {
            diagnostics.warn(o.sub("tls_context"), "status is not true: this listener serves plain text")
        }
        // Each place that turns TLS on, as the contexts it lists (`tls_context`: one).
        var sources: [(path: String, contexts: [JSONObject])] = []
        for o in owners {
            if o.enablesTLS("tls_context"), let t = o.object("tls_context") { sources.append((t.path, [t])) }
            if o.has("tls_context_set") {
                let all = o.objects("tls_context_set")
                for t in all where !(t.bool("status") == true) {
                    diagnostics.warn(t.path, "status is not true: this context is left out of the set")
                }
                let on = all.filter { $0.bool("status") == true }
                if on.isEmpty { diagnostics.warn(o.sub("tls_context_set"), "no context with status true: this listener serves plain text") }
                else { sources.append((o.sub("tls_context_set"), on)) }
            }
        }
        guard let source = sources.first else { return nil }
        if sources.count > 1 {
            diagnostics.error(sources[1].path, "TLS is set on both \(sources[0].path) and here; keep one tls_context or tls_context_set")
            return nil
        }
        guard let set = compileServerTLSSet(source.contexts, listenerName: name) else { return nil }
        return (set, source.contexts.map(tlsFiles))
    }

    /// The contexts of one listener, the first being the default for clients whose SNI no
    /// certificate names. Cipher suites and curves apply before the SNI is read, so they must be
    /// the same in every context.
    func compileServerTLSSet(_ list: [JSONObject], listenerName: String) -> TLSServerContextSet? {
        var contexts: [TLSServerContext] = []
        for (i, t) in list.enumerated() {
            if i > 0 {
                for key in ["cipher_suites", "ecdh_curves"] where tlsList(t, key) != tlsList(list[0], key) {
                    diagnostics.error(t.sub(key), "must be the same in every context of a tls_context_set (Tern applies it before the SNI picks a context): \(list[0].sub(key))")
                }
            }
            // Each context resumes only its own sessions: its own session id context.
            if let c = compileServerTLS(t, listenerName: i == 0 ? listenerName : "\(listenerName)#\(i)") { contexts.append(c) }
        }
        guard contexts.count == list.count else { return nil }
        let set = TLSServerContextSet(contexts)
        if list.count > 1 {
            for (i, t) in list.enumerated() where i > 0 && set.names(of: i).isEmpty {
                diagnostics.warn(t.sub("cert_chain"), "the certificate has no DNS name in subjectAltName, so no SNI picks this context")
            }
        }
        return set
    }

    func compileServerTLS(_ t: JSONObject, listenerName: String) -> TLSServerContext? {
        let errorsBefore = diagnostics.errors.count
        checkTLSContextKeys(t)
        if t.isNonEmpty("server_name") { diagnostics.warn(t.sub("server_name"), "verifies an upstream's name; MOSN and Tern do not use it on a listener") }
        if t.bool("insecure_skip") == true { diagnostics.warn(t.sub("insecure_skip"), "applies to upstream TLS; ignored on a listener, as in MOSN") }
        if t.isNonEmpty("ticket") { diagnostics.warn(t.sub("ticket"), "a shared session ticket key is not supported yet; tickets use a key of this process") }

        let chainPEM = pem(t, "cert_chain", required: true)
        let keyPEM = pem(t, "private_key", required: true)
        let caPEM = pem(t, "ca_cert", required: false)
        let verifyClient = t.bool("verify_client") ?? false
        let requireClientCert = t.bool("require_client_cert") ?? false
        if verifyClient || requireClientCert {
            // Tern never takes a client certificate it has not verified.
            if caPEM == nil && (t.string("ca_cert") ?? "").isEmpty {
                diagnostics.error(t.sub("ca_cert"), "required with \(verifyClient ? "verify_client" : "require_client_cert"): client certificates are verified against it")
            }
        } else if caPEM != nil {
            diagnostics.warn(t.sub("ca_cert"), "without verify_client, clients are not asked for a certificate (as in MOSN)")
        }
        let (minVersion, maxVersion) = tlsVersionRange(t)
        let ciphers = tlsList(t, "cipher_suites")
        let curves = tlsList(t, "ecdh_curves").compactMap { curve(t, $0) }
        let alpn = alpnList(t)

        guard diagnostics.errors.count == errorsBefore, let chainPEM, let keyPEM else { return nil }
        var settings = TLSServerSettings(certificateChainPEM: chainPEM, privateKeyPEM: keyPEM, listenerName: listenerName)
        settings.clientCAPEM = caPEM
        settings.requireClientCertificate = verifyClient || requireClientCert
        settings.minVersion = minVersion
        settings.maxVersion = maxVersion
        settings.cipherSuites = ciphers
        settings.curves = curves
        settings.alpn = alpn
        do {
            return try TLSServerContext(settings)
        } catch {
            diagnostics.error(t.sub(error.key), error.message)
            return nil
        }
    }

    /// MOSN's `tls_context` keys (one struct for listeners and clusters), and the ones Tern refuses
    /// on either side.
    func checkTLSContextKeys(_ t: JSONObject) {
        t.checkKeys(known: ["status", "type", "server_name", "ca_cert", "cert_chain", "private_key", "verify_client",
                            "require_client_cert", "insecure_skip", "cipher_suites", "ecdh_curves", "min_version",
                            "max_version", "alpn", "ticket", "fall_back", "extend_verify", "sds_source"])
        if let type = t.string("type"), !type.isEmpty { t.refuse("type", what: "TLS context extension types") }
        if t.bool("fall_back") == true { t.refuse("fall_back", what: "plain text when the TLS context cannot be built") }
        if t.isNonEmpty("extend_verify") { t.refuse("extend_verify", what: "extended certificate verification") }
        if t.isNonEmpty("sds_source") { t.refuse("sds_source", what: "certificates from SDS") }
    }

    /// A PEM value as MOSN reads it: inline when it holds a PEM header, else a file path.
    func pem(_ t: JSONObject, _ key: String, required: Bool) -> [UInt8]? {
        guard let value = required ? t.requiredString(key) : t.string(key) else { return nil }
        if value.isEmpty {
            if required { diagnostics.error(t.sub(key), "required") }
            return nil
        }
        if value.contains("-----BEGIN") { return Array(value.utf8) }
        guard let text = readFile(value) else {
            diagnostics.error(t.sub(key), "cannot read \(value): \(String(cString: strerror(errno)))")
            return nil
        }
        return Array(text.utf8)
    }

    /// `min_version` and `max_version`, TLS 1.2 to 1.3 by default.
    func tlsVersionRange(_ t: JSONObject) -> (min: TLSVersion, max: TLSVersion) {
        let minVersion = tlsVersion(t, "min_version") ?? .tls1_2
        let maxVersion = tlsVersion(t, "max_version") ?? .tls1_3
        if minVersion == .tls1_3 && maxVersion == .tls1_2 {
            diagnostics.error(t.sub("max_version"), "TLSv1_2 is below min_version TLSv1_3")
        }
        return (minVersion, maxVersion)
    }

    /// MOSN's version names. TLS 1.0 and 1.1 are refused (RFC 8996 deprecates them).
    func tlsVersion(_ t: JSONObject, _ key: String) -> TLSVersion? {
        guard let text = t.string(key) else { return nil }
        switch text {
        case "", "TLS_AUTO": return nil
        case "TLSv1_2": return .tls1_2
        case "TLSv1_3": return .tls1_3
        case "TLSv1_0", "TLSv1_1":
            diagnostics.error(t.sub(key), "\(text) is not offered by Tern (TLS 1.0 and 1.1 are deprecated, RFC 8996); use TLSv1_2 or TLSv1_3")
            return nil
        default:
            diagnostics.error(t.sub(key), "unknown TLS version \"\(text)\" (TLS_AUTO, TLSv1_2, TLSv1_3)")
            return nil
        }
    }

    /// MOSN writes cipher suites and curves as one string separated by `:` (commas read too).
    func tlsList(_ t: JSONObject, _ key: String) -> [String] {
        guard let text = t.string(key) else { return [] }
        return text.split(whereSeparator: { $0 == ":" || $0 == "," }).map { String($0.trimmingSpaces) }.filter { !$0.isEmpty }
    }

    /// MOSN's curve names (Go's: P256, X25519...) and OpenSSL's, to OpenSSL's group names.
    func curve(_ t: JSONObject, _ name: String) -> String? {
        switch name.uppercased().replacingDashes {
        case "X25519": return "X25519"
        case "X448": return "X448"
        case "P256", "CURVEP256", "PRIME256V1", "SECP256R1": return "P-256"
        case "P384", "CURVEP384", "SECP384R1": return "P-384"
        case "P521", "CURVEP521", "SECP521R1": return "P-521"
        default:
            diagnostics.error(t.sub("ecdh_curves"), "unknown curve \"\(name)\" (X25519, P256, P384, P521, X448)")
            return nil
        }
    }

    /// `alpn`: MOSN's comma-separated string, or a list of protocol names.
    func alpnList(_ t: JSONObject) -> [String] {
        let names: [String]
        switch t.present("alpn") {
        case nil: return []
        case .string(let s)?: names = s.split(separator: ",").map { String($0.trimmingSpaces) }.filter { !$0.isEmpty }
        default: names = t.strings("alpn") ?? []
        }
        for n in names where n.utf8.count > 255 || n.isEmpty {
            diagnostics.error(t.sub("alpn"), "protocol name \"\(n)\" must be 1 to 255 bytes")
        }
        return names
    }
}

private extension String {
    var replacingDashes: String { String(filter { $0 != "-" && $0 != "_" }) }
}
