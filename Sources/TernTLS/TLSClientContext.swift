import COpenSSL
import Glibc
import Synchronization
import TernCore

/// What a cluster's `tls_context` asks for on the client side, already read from the config
/// (PEM bytes, not paths).
public struct TLSClientSettings: Sendable {
    /// Roots the servers' certificates are verified against; nil only with `insecureSkipVerify`.
    public var trustedCAPEM: [UInt8]?
    /// A client certificate (leaf then intermediates) and its key, for servers that ask (mTLS).
    public var certificateChainPEM: [UInt8]?
    public var privateKeyPEM: [UInt8]?
    /// No verification of the server at all: only when the config says `insecure_skip: true`.
    public var insecureSkipVerify = false
    public var minVersion: TLSVersion = .tls1_2
    public var maxVersion: TLSVersion = .tls1_3
    public var cipherSuites: [String] = []
    /// OpenSSL group names (`ecdh_curves`): the only key-exchange groups offered; empty: OpenSSL's default.
    public var curves: [String] = []
    /// Application protocols offered, in preference order.
    public var alpn: [String] = []

    public init() {}
}

/// One client SSL_CTX (TLS_client_method), built once at config load from a cluster's (or the
/// cluster manager's) `tls_context` and shared read-only by every worker.
public final class TLSClientContext: @unchecked Sendable, TLSContextOwner {
    let ctx: OpaquePointer
    public let verifiesServer: Bool
    /// What it was built from: a certificate reload rebuilds it with the files read again.
    public let settings: TLSClientSettings

    public init(_ s: TLSClientSettings) throws(TLSSetupError) {
        _ = TLSLibrary.takeErrors()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw TLSSetupError(key: "status", message: "OpenSSL cannot create a context: \(TLSLibrary.takeErrors() ?? "unknown error")")
        }
        self.ctx = ctx
        verifiesServer = !s.insecureSkipVerify
        settings = s
        // From here a throw runs deinit, which frees the context.
        tern_ssl_ctx_set_client_defaults(ctx)
        try configure(s)
    }

    deinit { SSL_CTX_free(ctx) }

    private func configure(_ s: TLSClientSettings) throws(TLSSetupError) {
        if let ca = s.trustedCAPEM { try trust(ca, namingThemToClients: false) }
        SSL_CTX_set_verify(ctx, s.insecureSkipVerify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nil)
        if let chain = s.certificateChainPEM, let key = s.privateKeyPEM {
            try loadCertificateChain(chain)
            try loadPrivateKey(key)
            if SSL_CTX_check_private_key(ctx) != 1 {
                throw TLSSetupError(key: "private_key", message: "does not match the certificate in cert_chain (\(TLSLibrary.takeErrors() ?? "key mismatch"))")
            }
        }
        if tern_ssl_ctx_set_min_proto_version(ctx, s.minVersion.openSSL) != 1 || tern_ssl_ctx_set_max_proto_version(ctx, s.maxVersion.openSSL) != 1 {
            throw TLSSetupError(key: "min_version", message: "OpenSSL refused the version range: \(TLSLibrary.takeErrors() ?? "")")
        }
        try setCipherSuites(s.cipherSuites)
        try setGroups(s.curves)
        if !s.alpn.isEmpty {
            var wire: [UInt8] = []
            for name in s.alpn { wire.append(UInt8(name.utf8.count)); wire += Array(name.utf8) }
            // 0 is success here, unlike the rest of OpenSSL.
            if SSL_CTX_set_alpn_protos(ctx, wire, UInt32(wire.count)) != 0 {
                throw TLSSetupError(key: "alpn", message: "OpenSSL refused the protocol list: \(TLSLibrary.takeErrors() ?? "")")
            }
        }
        SSL_CTX_sess_set_new_cb(ctx, rememberSession)
        _ = TLSLibrary.takeErrors()
    }
}

/// The client context in use for one `tls_context` (a cluster's, or the cluster manager's shared
/// by several clusters), replaced as a whole by a certificate reload. Each worker's connector
/// keeps the context it last took and looks at the generation (one atomic load) before each new
/// connection; a connection keeps the SSL_CTX it started with (OpenSSL counts the reference).
public final class TLSClientContextSlot: Sendable {
    /// Names the context in logs: "cluster up", "cluster_manager".
    public let owner: String
    /// The files it was read from, read again on reload (all nil: inline PEM only).
    public let files: TLSContextFiles
    private let current: Mutex<(generation: Int, context: TLSClientContext)>
    private let generation = Atomic<Int>(0)

    public init(_ context: TLSClientContext, owner: String, files: TLSContextFiles) {
        self.owner = owner
        self.files = files
        current = Mutex((0, context))
    }

    public var context: TLSClientContext { current.withLock { $0.context } }

    /// New connections from now on use `context`.
    public func replace(with context: TLSClientContext) {
        let next = current.withLock { state in
            state = (state.generation + 1, context)
            return state.generation
        }
        generation.store(next, ordering: .releasing)
    }

    /// The context and its generation, when newer than `seen`.
    func newer(than seen: Int) -> (generation: Int, context: TLSClientContext)? {
        guard generation.load(ordering: .acquiring) != seen else { return nil }
        return current.withLock { $0 }
    }

    func snapshot() -> (generation: Int, context: TLSClientContext) { current.withLock { $0 } }
}

/// Where one `tls_context`'s PEM came from on disk; nil where the config holds it inline (inline
/// PEM has nothing to reload). `ca` is `ca_cert`: client CAs on a listener, server CAs upstream.
public struct TLSContextFiles: Sendable, Equatable {
    public var certificateChain: String?
    public var privateKey: String?
    public var ca: String?
    public init(certificateChain: String?, privateKey: String?, ca: String?) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.ca = ca
    }
    public var isEmpty: Bool { certificateChain == nil && privateKey == nil && ca == nil }
    public var paths: [String] { [certificateChain, privateKey, ca].compactMap { $0 } }
}

/// A cluster's upstream TLS: the (possibly shared, reloadable) client context plus, per host, the
/// name sent as SNI and verified, and whether the host is plain text (`tls_disable`).
public struct UpstreamTLS: UpstreamTransportSource {
    public let slot: TLSClientContextSlot
    public let clusterName: String
    /// Per host: the name to verify (and send as SNI unless it is an IP address); nil: plain text.
    public let hostNames: [String?]

    public init(slot: TLSClientContextSlot, clusterName: String, hostNames: [String?]) {
        self.slot = slot
        self.clusterName = clusterName
        self.hostNames = hostNames
    }

    public func makeFactory(logger: Logger) -> UpstreamTransportFactory {
        TLSUpstreamConnector(tls: self, logger: logger)
    }
}

/// One worker's side of a cluster's upstream TLS: makes each connection's `TLSClientTransport`
/// and keeps the last session each host gave, to resume it on the next connect. Confined to the
/// worker's thread (OpenSSL's new-session callback runs inside that worker's SSL_read).
final class TLSUpstreamConnector: UpstreamTransportFactory {
    let tls: UpstreamTLS
    let logger: Logger
    private var sessions: [OpaquePointer?]
    /// The context new connections start from, and the slot's generation it came with.
    private(set) var context: TLSClientContext
    private var generation: Int

    init(tls: UpstreamTLS, logger: Logger) {
        self.tls = tls
        self.logger = logger
        sessions = Array(repeating: nil, count: tls.hostNames.count)
        (generation, context) = tls.slot.snapshot()
    }

    deinit { for s in sessions { if let s { SSL_SESSION_free(s) } } }

    func makeTransport(hostIndex: Int, fd: Int32) throws(TransportSetupError) -> Transport? {
        guard let name = tls.hostNames[hostIndex] else { return nil }
        if let reloaded = tls.slot.newer(than: generation) {
            (generation, context) = reloaded
            // A session resumed from the old context would carry the old client certificate's identity.
            for host in sessions.indices { forget(host: host) }
        }
        guard let t = TLSClientTransport(connector: self, host: hostIndex, name: name, fd: fd, session: sessions[hostIndex]) else {
            logger.error("tls", "cluster \(tls.clusterName): OpenSSL could not start a TLS session; connect failed")
            throw TransportSetupError("OpenSSL could not start a TLS session")
        }
        return t
    }

    /// Takes over the reference OpenSSL handed to the new-session callback.
    func remember(_ session: OpaquePointer, host: Int) {
        if let old = sessions[host] { SSL_SESSION_free(old) }
        sessions[host] = session
    }

    /// After a failed handshake the host may have changed; start afresh.
    func forget(host: Int) {
        if let old = sessions[host] { SSL_SESSION_free(old) }
        sessions[host] = nil
    }
}

/// OpenSSL's new-session callback: the SSL's app data is its transport (alive while its SSL is).
private func rememberSession(_ ssl: OpaquePointer?, _ session: OpaquePointer?) -> Int32 {
    guard let ssl, let session, let owner = SSL_get_ex_data(ssl, 0) else { return 0 }
    let transport = Unmanaged<TLSClientTransport>.fromOpaque(owner).takeUnretainedValue()
    transport.connector.remember(session, host: transport.host)
    return 1
}
