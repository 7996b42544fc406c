import TernCore
import TernTLS

/// A client-side `tls_context` compiled: the OpenSSL context (reloadable) and the name it
/// verifies, when set.
struct ClientTLS {
    let slot: TLSClientContextSlot
    let serverName: String?
}

/// Upstream TLS: a cluster's `tls_context` (or, with `cluster_manager_tls: true`, the cluster
/// manager's) read with MOSN's keys into one `TLSClientContext`, hung on the `ClusterConfig`.
extension ConfigCompiler {
    /// nil when the context has errors (recorded). `owner` names it in reload logs.
    func compileClientTLS(_ t: JSONObject, owner: String) -> ClientTLS? {
        let errorsBefore = diagnostics.errors.count
        checkTLSContextKeys(t)
        for key in ["verify_client", "require_client_cert"] where t.bool(key) == true {
            diagnostics.warn(t.sub(key), "applies to a listener; ignored on the client side, as in MOSN")
        }
        if t.isNonEmpty("ticket") { diagnostics.warn(t.sub("ticket"), "a listener key; ignored on the client side") }
        let insecure = t.bool("insecure_skip") ?? false
        let caPEM = pem(t, "ca_cert", required: false)
        if insecure {
            diagnostics.warn(t.sub("insecure_skip"), "the servers' certificates are NOT verified: anyone on the path can read and change this traffic")
        } else if caPEM == nil && (t.string("ca_cert") ?? "").isEmpty {
            // Never silently unverified, and never the system's whole trust store by surprise.
            diagnostics.error(t.sub("ca_cert"), "required to verify the servers' certificates (or insecure_skip: true to not verify them)")
        }
        let chainPEM = pem(t, "cert_chain", required: false)
        let keyPEM = pem(t, "private_key", required: false)
        if t.isNonEmpty("cert_chain") != t.isNonEmpty("private_key") {
            diagnostics.error(t.sub(t.isNonEmpty("cert_chain") ? "private_key" : "cert_chain"), "a client certificate needs both cert_chain and private_key")
        }
        let serverName = t.string("server_name").flatMap { $0.isEmpty ? nil : $0 }
        let (minVersion, maxVersion) = tlsVersionRange(t)
        let ciphers = tlsList(t, "cipher_suites")
        let curves = tlsList(t, "ecdh_curves").compactMap { curve(t, $0) }
        let alpn = alpnList(t)
        guard diagnostics.errors.count == errorsBefore else { return nil }

        var settings = TLSClientSettings()
        settings.trustedCAPEM = caPEM
        settings.certificateChainPEM = chainPEM
        settings.privateKeyPEM = keyPEM
        settings.insecureSkipVerify = insecure
        settings.minVersion = minVersion
        settings.maxVersion = maxVersion
        settings.cipherSuites = ciphers
        settings.curves = curves
        settings.alpn = alpn
        do {
            let context = try TLSClientContext(settings)
            return ClientTLS(slot: TLSClientContextSlot(context, owner: owner, files: tlsFiles(t)), serverName: serverName)
        } catch {
            diagnostics.error(t.sub(error.key), error.message)
            return nil
        }
    }

    /// The cluster's upstream TLS, or nil (plain text, or errors recorded). `manager` is the
    /// cluster manager's compiled `tls_context`; `managerEnabled` says whether it had `status: true`.
    func upstreamTLS(cluster c: JSONObject, name: String, hosts: [(object: JSONObject, config: HostConfig)],
                     manager: ClientTLS?, managerEnabled: Bool) -> UpstreamTLS? {
        let own = c.enablesTLS("tls_context")
        if c.has("tls_context") && !own { diagnostics.warn(c.sub("tls_context"), "status is not true: this cluster's connections are plain text") }
        let tls: ClientTLS?
        if c.bool("cluster_manager_tls") == true {
            if own {
                diagnostics.error(c.sub("cluster_manager_tls"), "this cluster has its own tls_context with status: true too; keep one")
                return nil
            }
            if !managerEnabled {
                diagnostics.error(c.sub("cluster_manager_tls"), "cluster_manager.tls_context has no status: true, so there is no TLS to use")
                return nil
            }
            tls = manager
        } else if own, let t = c.object("tls_context") {
            tls = compileClientTLS(t, owner: "cluster \(name)")
        } else {
            for (h, _) in hosts where h.bool("tls_disable") == true {
                diagnostics.warn(h.sub("tls_disable"), "the cluster has no TLS; this host is plain text anyway")
            }
            return nil
        }
        guard let tls else { return nil }
        var names: [String?] = []
        for (h, host) in hosts {
            if h.bool("tls_disable") == true { names.append(nil); continue }
            // The name verified (and sent as SNI): server_name, else the host's hostname, else its IP.
            let name = tls.serverName ?? (host.hostname.isEmpty ? ipText(of: host.address) : host.hostname)
            if name.isEmpty && tls.slot.context.verifiesServer {
                diagnostics.error(h.sub("address"), "a unix socket host needs server_name or a hostname to verify the server's certificate against")
            }
            names.append(name)
        }
        return UpstreamTLS(slot: tls.slot, clusterName: name, hostNames: names)
    }

    /// "10.0.0.1" of "10.0.0.1:80", "::1" of "[::1]:80"; "" for a unix socket.
    private func ipText(of address: SocketAddress) -> String {
        if address.isUnix { return "" }
        var text = Substring(address.description)
        if let colon = text.lastIndex(of: ":") { text = text[..<colon] }
        if text.hasPrefix("[") && text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        return String(text)
    }
}
