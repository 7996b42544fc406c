import COpenSSL
import Glibc

public enum TLSVersion: Sendable, Equatable {
    case tls1_2, tls1_3
    var openSSL: Int32 { self == .tls1_2 ? TLS1_2_VERSION : TLS1_3_VERSION }
}

/// What a listener's `tls_context` asks for, already read from the config (PEM bytes, not paths).
public struct TLSServerSettings: Sendable {
    public var certificateChainPEM: [UInt8]
    public var privateKeyPEM: [UInt8]
    /// Trusted roots for client certificates; required when `requireClientCertificate`.
    public var clientCAPEM: [UInt8]?
    /// Mutual TLS: a client without a certificate that verifies against `clientCAPEM` fails the handshake.
    public var requireClientCertificate = false
    public var minVersion: TLSVersion = .tls1_2
    public var maxVersion: TLSVersion = .tls1_3
    /// OpenSSL names: TLS 1.2 suites (`ECDHE-RSA-AES128-GCM-SHA256`) and TLS 1.3 ones (`TLS_AES_128_GCM_SHA256`).
    public var cipherSuites: [String] = []
    /// OpenSSL group names (`X25519`, `P-256`, ...).
    public var curves: [String] = []
    /// Application protocols in server preference order (`http/1.1`).
    public var alpn: [String] = []
    /// Names the listener in logs and keys its session cache (resumption across listeners is refused).
    public var listenerName: String

    public init(certificateChainPEM: [UInt8], privateKeyPEM: [UInt8], listenerName: String) {
        self.certificateChainPEM = certificateChainPEM
        self.privateKeyPEM = privateKeyPEM
        self.listenerName = listenerName
    }
}

/// A setting OpenSSL refused; `key` is the MOSN `tls_context` key it came from, so the config
/// reader can name the JSON path.
public struct TLSSetupError: Error, Sendable, Equatable {
    public let key: String
    public let message: String
}

/// One listener's SSL_CTX, built once at config load and shared read-only by every worker
/// (OpenSSL locks the parts it mutates, such as the session cache). Each accepted connection gets
/// its own SSL from it (`TLSTransport`).
public final class TLSServerContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let listenerName: String
    /// What it was built from: a certificate reload rebuilds it with the files read again.
    public let settings: TLSServerSettings
    /// ALPN protocols in wire format (length-prefixed), read by the selection callback.
    private let alpnWire: UnsafeMutableBufferPointer<UInt8>?

    public init(_ s: TLSServerSettings) throws(TLSSetupError) {
        _ = TLSLibrary.takeErrors()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSSetupError(key: "status", message: "OpenSSL cannot create a context: \(TLSLibrary.takeErrors() ?? "unknown error")")
        }
        self.ctx = ctx
        listenerName = s.listenerName
        settings = s
        if s.alpn.isEmpty {
            alpnWire = nil
        } else {
            // Length-prefixed entries, then a 0 length that ends the list for the callback.
            var wire: [UInt8] = []
            for name in s.alpn { wire.append(UInt8(name.utf8.count)); wire += Array(name.utf8) }
            wire.append(0)
            let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: wire.count)
            _ = buffer.initialize(from: wire)
            alpnWire = buffer
        }
        // From here a throw runs deinit, which frees the context.
        tern_ssl_ctx_set_server_defaults(ctx)
        try configure(s)
    }

    deinit {
        SSL_CTX_free(ctx)
        alpnWire?.deallocate()
    }

    private func configure(_ s: TLSServerSettings) throws(TLSSetupError) {
        try loadCertificateChain(s.certificateChainPEM)
        try loadPrivateKey(s.privateKeyPEM)
        if SSL_CTX_check_private_key(ctx) != 1 {
            throw TLSSetupError(key: "private_key", message: "does not match the certificate in cert_chain (\(TLSLibrary.takeErrors() ?? "key mismatch"))")
        }
        if let ca = s.clientCAPEM { try loadClientCAs(ca) }
        if s.requireClientCertificate {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        if tern_ssl_ctx_set_min_proto_version(ctx, s.minVersion.openSSL) != 1 || tern_ssl_ctx_set_max_proto_version(ctx, s.maxVersion.openSSL) != 1 {
            throw TLSSetupError(key: "min_version", message: "OpenSSL refused the version range: \(TLSLibrary.takeErrors() ?? "")")
        }
        try setCipherSuites(s.cipherSuites)
        try setGroups(s.curves)
        // Sessions resume only on the listener that issued them (and a client certificate
        // verified once is not replayed into another listener's trust).
        let idContext = Array(("tern:" + s.listenerName).utf8.prefix(Int(SSL_MAX_SID_CTX_LENGTH)))
        _ = SSL_CTX_set_session_id_context(ctx, idContext, UInt32(idContext.count))
        if let wire = alpnWire {
            SSL_CTX_set_alpn_select_cb(ctx, selectApplicationProtocol, UnsafeMutableRawPointer(wire.baseAddress!))
        }
        _ = TLSLibrary.takeErrors()
    }

    private func loadClientCAs(_ pem: [UInt8]) throws(TLSSetupError) {
        // The CA names go into the CertificateRequest, so a client with several certificates picks the right one.
        try trust(pem, namingThemToClients: true)
    }
}

/// ALPN: the first protocol in the server's list that the client offers. None in common: the
/// handshake fails with no_application_protocol (RFC 7301), as Go's server (MOSN) does.
private func selectApplicationProtocol(_ ssl: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?,
                                       _ outLength: UnsafeMutablePointer<UInt8>?, _ offered: UnsafePointer<UInt8>?,
                                       _ offeredLength: UInt32, _ argument: UnsafeMutableRawPointer?) -> Int32 {
    guard let out, let outLength, let offered, let argument else { return SSL_TLSEXT_ERR_NOACK }
    let server = argument.assumingMemoryBound(to: UInt8.self)
    var s = 0
    // The server list: non-empty length-prefixed names, ended by a 0 length.
    while server[s] != 0 {
        let length = Int(server[s])
        var c = 0
        while c < Int(offeredLength) {
            let clientLength = Int(offered[c])
            if clientLength == length && c + 1 + clientLength <= Int(offeredLength) && memcmp(offered + c + 1, server + s + 1, length) == 0 {
                out.pointee = offered + c + 1
                outLength.pointee = UInt8(length)
                return SSL_TLSEXT_ERR_OK
            }
            c += 1 + clientLength
        }
        s += 1 + length
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL
}
