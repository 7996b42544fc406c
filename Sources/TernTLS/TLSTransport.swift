import COpenSSL
import Glibc
import TernCore

/// Server-side TLS on one accepted connection: OpenSSL works on the socket itself (SSL_set_fd),
/// non-blocking, driven by the connection's epoll edges. The handshake happens inside the first
/// reads (a server speaks only after the client's first flight); OpenSSL's WANT_READ and
/// WANT_WRITE both surface as EAGAIN, and the connection retries reads and writes on either
/// readiness edge, so a handshake flight that waits for writability during a read cannot stall.
public final class TLSTransport: Transport, TimerTarget {
    private var ssl: OpaquePointer?
    /// Retained for the handshake: the first context's ClientHello callback points at the set.
    private let context: TLSServerContextSet
    private let logger: Logger
    /// After a fatal error OpenSSL forbids SSL_shutdown.
    private var failed = false
    private var closeNotifySent = false
    /// Armed from accept until the first byte of application data moves: a client that has not
    /// finished its handshake by then is let go, however slowly it keeps sending.
    private var handshakeTimer: LoopTimer?
    private var handshakeTimers: TimerHeap?
    private var handshakeTimeoutMS: Int64 = 0
    private weak var connection: Connection?

    public init?(context: TLSServerContextSet, fd: Int32, logger: Logger) {
        guard let ssl = SSL_new(context.primary) else { _ = TLSLibrary.takeErrors(); return nil }
        guard SSL_set_fd(ssl, fd) == 1 else { SSL_free(ssl); _ = TLSLibrary.takeErrors(); return nil }
        SSL_set_accept_state(ssl)
        self.ssl = ssl
        self.context = context
        self.logger = logger
    }

    deinit {
        cancelHandshakeDeadline()
        if let ssl { SSL_free(ssl) }
    }

    /// Starts the handshake deadline for `connection` (on its loop's timers).
    func armHandshakeDeadline(for connection: Connection, timeoutMS: Int64) {
        guard timeoutMS > 0 else { return }
        let timer = LoopTimer(target: self)
        self.connection = connection
        handshakeTimer = timer
        handshakeTimers = connection.loop.timers
        handshakeTimeoutMS = timeoutMS
        connection.loop.timers.arm(timer, at: connection.loop.nowMS + timeoutMS)
    }

    private func cancelHandshakeDeadline() {
        if let timer = handshakeTimer { handshakeTimers?.cancel(timer) }
        handshakeTimer = nil
        handshakeTimers = nil
    }

    public func timerFired(_ timer: LoopTimer) {
        handshakeTimer = nil
        handshakeTimers = nil
        guard let connection, let ssl, SSL_is_init_finished(ssl) != 1 else { return }
        logger.info("tls", "listener \(context.listenerName): TLS handshake with \(peer(connection.fd)) not finished within \(handshakeTimeoutMS) ms; connection closed")
        connection.close()
    }

    public func read(fd: Int32, into buffer: UnsafeMutablePointer<UInt8>, count: Int) -> Int {
        guard let ssl else { errno = EBADF; return -1 }
        let n = SSL_read(ssl, buffer, Int32(clamping: count))
        if n > 0 {
            if handshakeTimer != nil { cancelHandshakeDeadline() }
            return Int(n)
        }
        return failure(ssl, n, fd: fd)
    }

    public func write(fd: Int32, from buffer: UnsafePointer<UInt8>, count: Int) -> Int {
        guard let ssl else { errno = EBADF; return -1 }
        let n = SSL_write(ssl, buffer, Int32(clamping: count))
        if n > 0 {
            if handshakeTimer != nil { cancelHandshakeDeadline() }
            return Int(n)
        }
        let r = failure(ssl, n, fd: fd)
        if r == 0 { errno = EPIPE; return -1 }   // the peer's close_notify: nothing more can be sent
        return r
    }

    /// The syscall contract for a call that moved no bytes: -1 with EAGAIN (wait for an edge),
    /// 0 (the peer ended the stream), or -1 with the error that ends the connection.
    private func failure(_ ssl: OpaquePointer, _ rc: Int32, fd: Int32) -> Int {
        let savedErrno = errno
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            errno = EAGAIN
            return -1
        case SSL_ERROR_ZERO_RETURN:
            return 0
        case SSL_ERROR_SYSCALL:
            failed = true
            let reasons = TLSLibrary.takeErrors()
            if savedErrno == 0 && reasons == nil { return 0 }   // EOF without close_notify
            if SSL_is_init_finished(ssl) != 1 { logHandshakeFailure(ssl, fd: fd, reason: reasons ?? String(cString: strerror(savedErrno))) }
            errno = savedErrno != 0 ? savedErrno : ECONNRESET
            return -1
        default:
            failed = true
            let reasons = TLSLibrary.takeErrors() ?? "protocol error"
            if SSL_is_init_finished(ssl) != 1 { logHandshakeFailure(ssl, fd: fd, reason: reasons) }
            else { logger.debug("tls", "listener \(context.listenerName): TLS error from \(peer(fd)): \(reasons)") }
            errno = EPROTO
            return -1
        }
    }

    private func logHandshakeFailure(_ ssl: OpaquePointer, fd: Int32, reason: String) {
        var detail = reason
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
            detail += " (client certificate: \(String(cString: text)))"
        }
        logger.warn("tls", "listener \(context.listenerName): TLS handshake with \(peer(fd)) failed: \(detail)")
    }

    private func peer(_ fd: Int32) -> String { SocketAddress.peer(of: fd)?.description ?? "unknown peer" }

    /// close_notify once, best effort (a full socket buffer just drops it); on close the TLS
    /// state is freed at once rather than with the connection object.
    public func shutdown(fd: Int32, closing: Bool) {
        cancelHandshakeDeadline()
        TLSLibrary.shutdown(&ssl, failed: failed, closeNotifySent: &closeNotifySent, closing: closing)
    }

    /// The negotiated protocol version ("TLSv1.3"), for logs and tests.
    public var protocolVersion: String? { ssl.flatMap { SSL_get_version($0) }.map { String(cString: $0) } }
}

/// Puts a `TLSTransport` on every connection a listener accepts, before the filter chain (and
/// with it any protocol) sees a byte.
public final class TLSAcceptHandler: AcceptHandler {
    /// Replaced by a certificate reload (on this worker's thread); connections keep the set they started with.
    public var context: TLSServerContextSet
    let next: AcceptHandler
    let logger: Logger
    /// 0: no deadline of its own (the session's idle timer still applies).
    let handshakeTimeoutMS: Int64

    public init(context: TLSServerContextSet, next: AcceptHandler, logger: Logger, handshakeTimeoutMS: Int64 = 0) {
        self.context = context
        self.next = next
        self.logger = logger
        self.handshakeTimeoutMS = handshakeTimeoutMS
    }

    public func accepted(_ connection: Connection, listener: Listener) {
        guard let transport = TLSTransport(context: context, fd: connection.fd, logger: logger) else {
            logger.error("tls", "listener \(context.listenerName): OpenSSL could not start a TLS session; connection closed")
            connection.close()
            return
        }
        connection.transport = transport
        transport.armHandshakeDeadline(for: connection, timeoutMS: handshakeTimeoutMS)
        next.accepted(connection, listener: listener)
    }
}
