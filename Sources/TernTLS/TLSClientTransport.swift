import COpenSSL
import Glibc
import TernCore

/// Client-side TLS on one upstream connection (SSL_set_connect_state), on the socket itself like
/// the listener side's `TLSTransport`: the handshake runs inside the first write (or read) after
/// the TCP connect, WANT_READ/WANT_WRITE surface as EAGAIN. Until the server's first application
/// byte any fatal error is the handshake's: a TLS 1.3 server refuses a client certificate only
/// after the client's last flight, when the client already counts the handshake done. Such a
/// failure is logged with OpenSSL's reason and surfaces through `handshakeFailure`, so the
/// connection closes with `.handshakeFailed` and the request is answered with a TLS error.
final class TLSClientTransport: Transport {
    private var ssl: OpaquePointer?
    let connector: TLSUpstreamConnector
    let host: Int
    /// After a fatal error OpenSSL forbids SSL_shutdown.
    private var failed = false
    private var closeNotifySent = false
    private var handshakeLogged = false
    /// The server sent application data: errors from here on are the stream's, not the handshake's.
    private var established = false
    private(set) var handshakeFailure: String?

    init?(connector: TLSUpstreamConnector, host: Int, name: String, fd: Int32, session: OpaquePointer?) {
        guard let ssl = SSL_new(connector.context.ctx) else { _ = TLSLibrary.takeErrors(); return nil }
        self.connector = connector
        self.host = host
        guard SSL_set_fd(ssl, fd) == 1, TLSClientTransport.expect(name, on: ssl) else {
            SSL_free(ssl)
            _ = TLSLibrary.takeErrors()
            return nil
        }
        SSL_set_connect_state(ssl)
        if let session { _ = SSL_set_session(ssl, session) }
        self.ssl = ssl
        _ = SSL_set_ex_data(ssl, 0, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit { if let ssl { SSL_free(ssl) } }

    /// The name verified in the server's certificate: a DNS name also goes out as SNI; an IP
    /// address is matched against the certificate's IP entries and never sent (RFC 6066).
    private static func expect(_ name: String, on ssl: OpaquePointer) -> Bool {
        if name.isEmpty { return true }   // insecure_skip to a unix socket: nothing to name
        if isIPAddress(name) { return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 }
        return tern_ssl_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1
    }

    static func isIPAddress(_ name: String) -> Bool {
        var scratch = in6_addr()
        return inet_pton(AF_INET, name, &scratch) == 1 || inet_pton(AF_INET6, name, &scratch) == 1
    }

    func read(fd: Int32, into buffer: UnsafeMutablePointer<UInt8>, count: Int) -> Int {
        guard let ssl else { errno = EBADF; return -1 }
        let n = SSL_read(ssl, buffer, Int32(clamping: count))
        if n > 0 {
            if !established { established = true; if !handshakeLogged { logHandshake(ssl, fd: fd) } }
            return Int(n)
        }
        return failure(ssl, n, fd: fd)
    }

    func write(fd: Int32, from buffer: UnsafePointer<UInt8>, count: Int) -> Int {
        guard let ssl else { errno = EBADF; return -1 }
        let n = SSL_write(ssl, buffer, Int32(clamping: count))
        if n > 0 {
            if !handshakeLogged { logHandshake(ssl, fd: fd) }
            return Int(n)
        }
        let r = failure(ssl, n, fd: fd)
        if r == 0 { errno = EPIPE; return -1 }   // the server's close_notify: nothing more can be sent
        return r
    }

    /// The syscall contract for a call that moved no bytes (see `TLSTransport`).
    private func failure(_ ssl: OpaquePointer, _ rc: Int32, fd: Int32) -> Int {
        let savedErrno = errno
        let code = SSL_get_error(ssl, rc)
        if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { errno = EAGAIN; return -1 }
        failed = code != SSL_ERROR_ZERO_RETURN
        let reasons = TLSLibrary.takeErrors()
        let handshakeDone = SSL_is_init_finished(ssl) == 1
        // A clean end (close_notify, or TCP's FIN with nothing pending) after the handshake.
        if handshakeDone && (code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && savedErrno == 0 && reasons == nil)) {
            return 0
        }
        if !established && (!handshakeDone || code == SSL_ERROR_SSL) {
            var detail = reasons ?? (savedErrno != 0 ? String(cString: strerror(savedErrno)) : "the server closed the connection")
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
                detail += " (server certificate: \(String(cString: text)))"
            }
            handshakeFailure = detail
            connector.forget(host: host)
            connector.logger.warn("tls", "cluster \(connector.tls.clusterName): TLS handshake with \(peer(fd)) failed: \(detail)")
            errno = EPROTO
            return -1
        }
        connector.logger.debug("tls", "cluster \(connector.tls.clusterName): TLS error from \(peer(fd)): \(reasons ?? String(cString: strerror(savedErrno)))")
        errno = savedErrno != 0 && code == SSL_ERROR_SYSCALL ? savedErrno : EPROTO
        return -1
    }

    /// One DEBUG line per connection: the version and whether the host's last session was resumed.
    private func logHandshake(_ ssl: OpaquePointer, fd: Int32) {
        handshakeLogged = true
        guard connector.logger.enabled(.debug) else { return }
        let version = SSL_get_version(ssl).map { String(cString: $0) } ?? "?"
        let resumed = SSL_session_reused(ssl) == 1
        connector.logger.debug("tls", "cluster \(connector.tls.clusterName): TLS with \(peer(fd)) established (\(version), \(resumed ? "session resumed" : "full handshake"))")
    }

    private func peer(_ fd: Int32) -> String { SocketAddress.peer(of: fd)?.description ?? "unknown peer" }

    func shutdown(fd: Int32, closing: Bool) {
        TLSLibrary.shutdown(&ssl, failed: failed, closeNotifySent: &closeNotifySent, closing: closing)
    }
}
