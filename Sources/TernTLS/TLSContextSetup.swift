import COpenSSL

/// What building any SSL_CTX from a `tls_context` needs, shared by the listener side
/// (`TLSServerContext`) and the upstream side (`TLSClientContext`).
protocol TLSContextOwner {
    var ctx: OpaquePointer { get }
}

extension TLSServerContext: TLSContextOwner {}

extension TLSContextOwner {
    func loadCertificateChain(_ pem: [UInt8]) throws(TLSSetupError) {
        let certificates = try readCertificates(pem, key: "cert_chain")
        guard let leaf = certificates.first else {
            throw TLSSetupError(key: "cert_chain", message: "no PEM certificate in it (\(TLSLibrary.takeErrors() ?? "empty"))")
        }
        defer { X509_free(leaf) }
        if SSL_CTX_use_certificate(ctx, leaf) != 1 {
            for c in certificates.dropFirst() { X509_free(c) }
            throw TLSSetupError(key: "cert_chain", message: "OpenSSL refused the certificate: \(TLSLibrary.takeErrors() ?? "")")
        }
        for intermediate in certificates.dropFirst() where tern_ssl_ctx_add0_chain_cert(ctx, intermediate) != 1 {
            X509_free(intermediate)
            throw TLSSetupError(key: "cert_chain", message: "OpenSSL refused an intermediate certificate: \(TLSLibrary.takeErrors() ?? "")")
        }
    }

    func loadPrivateKey(_ pem: [UInt8]) throws(TLSSetupError) {
        // A passphrase callback that gives none: OpenSSL would otherwise prompt on the terminal.
        let key = withMemoryBIO(pem) { PEM_read_bio_PrivateKey($0, nil, { _, _, _, _ in 0 }, nil) }
        guard let key else {
            throw TLSSetupError(key: "private_key", message: "no usable PEM private key (an encrypted key is not supported): \(TLSLibrary.takeErrors() ?? "")")
        }
        defer { EVP_PKEY_free(key) }
        // OpenSSL checks the key against the certificate here already.
        if SSL_CTX_use_PrivateKey(ctx, key) != 1 {
            throw TLSSetupError(key: "private_key", message: "does not match the certificate in cert_chain, or OpenSSL refused it: \(TLSLibrary.takeErrors() ?? "")")
        }
    }

    /// TLS 1.2 suites and TLS 1.3 suites are set apart in OpenSSL. Each name is checked alone
    /// first: OpenSSL skips unknown names in a list silently and reads keywords (`HIGH`, `ALL`,
    /// `!aNULL`) as sets, while a name here must be exactly one suite.
    func setCipherSuites(_ names: [String]) throws(TLSSetupError) {
        if names.isEmpty { return }
        let tls13 = names.filter { $0.hasPrefix("TLS_") }
        let tls12 = names.filter { !$0.hasPrefix("TLS_") }
        guard let probe = SSL_CTX_new(TLS_method()) else { return }
        defer { SSL_CTX_free(probe) }
        for name in tls13 where SSL_CTX_set_ciphersuites(probe, name) != 1 {
            _ = TLSLibrary.takeErrors()
            throw TLSSetupError(key: "cipher_suites", message: "unknown TLS 1.3 cipher suite \"\(name)\" (OpenSSL names: TLS_AES_128_GCM_SHA256, ...)")
        }
        _ = SSL_CTX_set_ciphersuites(probe, "")
        for name in tls12 where !isOneCipher(name, probe) {
            _ = TLSLibrary.takeErrors()
            throw TLSSetupError(key: "cipher_suites", message: "unknown cipher suite \"\(name)\" (OpenSSL names: ECDHE-RSA-AES128-GCM-SHA256, ...)")
        }
        if !tls13.isEmpty { _ = SSL_CTX_set_ciphersuites(ctx, tls13.joined(separator: ":")) }
        if !tls12.isEmpty { _ = SSL_CTX_set_cipher_list(ctx, tls12.joined(separator: ":")) }
    }

    /// `ecdh_curves`, already OpenSSL group names: on a listener the groups accepted, on a
    /// cluster the only groups offered (Go's CurvePreferences, which MOSN sets on both sides).
    func setGroups(_ groups: [String]) throws(TLSSetupError) {
        if !groups.isEmpty && tern_ssl_ctx_set1_groups_list(ctx, groups.joined(separator: ":")) != 1 {
            throw TLSSetupError(key: "ecdh_curves", message: "OpenSSL refused \(groups.joined(separator: ":")): \(TLSLibrary.takeErrors() ?? "unknown group")")
        }
    }

    func isOneCipher(_ name: String, _ probe: OpaquePointer) -> Bool {
        guard SSL_CTX_set_cipher_list(probe, name) == 1, let text = tern_ssl_ctx_single_cipher_name(probe) else { return false }
        return String(cString: text) == name
    }

    /// Adds the CA certificates in `ca_cert` to the context's trust store (and, on a listener,
    /// to the CA names sent with the CertificateRequest).
    func trust(_ pem: [UInt8], namingThemToClients: Bool) throws(TLSSetupError) {
        let certificates = try readCertificates(pem, key: "ca_cert")
        if certificates.isEmpty {
            throw TLSSetupError(key: "ca_cert", message: "no PEM certificate in it (\(TLSLibrary.takeErrors() ?? "empty"))")
        }
        let store = SSL_CTX_get_cert_store(ctx)
        for c in certificates {
            defer { X509_free(c) }
            if X509_STORE_add_cert(store, c) != 1 || (namingThemToClients && SSL_CTX_add_client_CA(ctx, c) != 1) {
                throw TLSSetupError(key: "ca_cert", message: "OpenSSL refused a CA certificate: \(TLSLibrary.takeErrors() ?? "")")
            }
        }
    }

    /// Every certificate in `pem`, in order (empty: none, the reason left in the error queue). A
    /// block that does not parse after good ones (a file cut short mid-write) is an error, not the
    /// end of the list: the chain or CA list would otherwise load silently without it.
    func readCertificates(_ pem: [UInt8], key: String) throws(TLSSetupError) -> [OpaquePointer] {
        let certificates: [OpaquePointer] = withMemoryBIO(pem) { bio in
            var list: [OpaquePointer] = []
            while let c = PEM_read_bio_X509(bio, nil, nil, nil) { list.append(c) }
            return list
        }
        if certificates.isEmpty { return [] }
        // A clean end: the read after the last block found no "-----BEGIN".
        if tern_err_last_is_pem_end() == 1 {
            _ = TLSLibrary.takeErrors()
            return certificates
        }
        for c in certificates { X509_free(c) }
        throw TLSSetupError(key: key, message: "the PEM block after certificate \(certificates.count) is malformed (cut short?): \(TLSLibrary.takeErrors() ?? "unreadable")")
    }

    func withMemoryBIO<R>(_ bytes: [UInt8], _ body: (OpaquePointer) -> R) -> R {
        bytes.withUnsafeBytes { raw in
            let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count))!
            defer { BIO_free(bio) }
            return body(bio)
        }
    }
}
