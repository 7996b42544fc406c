import Glibc

/// MOSN's listener `inspector: true`: TLS and plain text on one port. Each accepted connection
/// waits, unread, until its first byte arrives; 0x16 (a TLS handshake record) sends it to `tls`
/// (the listener's TLS, then its filters), anything else to `plain` (its filters as plain text).
/// The byte is only peeked, so OpenSSL, or the protocol, reads the stream from its start. A client
/// that sends nothing is let go after the listener's idle timeout, as the `Auto` sniffer does.
public final class TLSInspector: AcceptHandler {
    static let handshakeRecord: UInt8 = 0x16
    let tls: AcceptHandler
    let plain: AcceptHandler
    let worker: Worker
    let idleTimeoutMS: Int64
    let listenerName: String

    /// `idleTimeoutMS` 0: no bound on the wait (as `connection_idle_timeout: 0` elsewhere).
    public init(tls: AcceptHandler, plain: AcceptHandler, worker: Worker, idleTimeoutMS: Int64, listenerName: String) {
        self.tls = tls
        self.plain = plain
        self.worker = worker
        self.idleTimeoutMS = idleTimeoutMS
        self.listenerName = listenerName
    }

    public func accepted(_ connection: Connection, listener: Listener) {
        let waiting = FirstByteWait(inspector: self, connection: connection, listener: listener)
        // Readiness only: nothing is read until a side is chosen.
        connection.ownerMovesBytes = true
        connection.delegate = waiting
        worker.add(waiting, fd: connection.fd)
        waiting.start()
    }
}

/// One connection waiting for its first byte; a drain closes it (it has no request in flight).
final class FirstByteWait: ConnectionDelegate, DownstreamSession, TimerTarget {
    let inspector: TLSInspector
    let connection: Connection
    unowned let listener: Listener
    private var timer: LoopTimer?

    init(inspector: TLSInspector, connection: Connection, listener: Listener) {
        self.inspector = inspector
        self.connection = connection
        self.listener = listener
    }

    func start() {
        guard inspector.idleTimeoutMS > 0 else { return }
        let t = LoopTimer(target: self)
        timer = t
        inspector.worker.loop.timers.arm(t, at: inspector.worker.loop.nowMS + inspector.idleTimeoutMS)
    }

    func connectionSocketReady(_ connection: Connection, readable: Bool, writable: Bool) {
        guard readable else { return }
        var first: UInt8 = 0
        while true {
            let n = recv(connection.fd, &first, 1, Int32(MSG_PEEK))
            if n == 1 { break }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
            // The end of the stream (or an error) before any byte: nothing to serve.
            let reason: CloseReason = n == 0 ? .peerClosed : .readError(errno)
            withExtendedLifetime(self) {
                detach()
                connection.close(reason: reason)
            }
            return
        }
        detach()
        connection.ownerMovesBytes = false
        connection.delegate = nil
        let next = first == TLSInspector.handshakeRecord ? inspector.tls : inspector.plain
        next.accepted(connection, listener: listener)
        // The readable edge went to the wait: replay it for whoever took the connection.
        if connection.state == .open { connection.handleEvents(Readiness.readable) }
    }

    func timerFired(_ timer: LoopTimer) {
        self.timer = nil
        guard connection.state == .open, connection.delegate === self else { return }
        inspector.worker.logger.debug("listener", "listener \(inspector.listenerName): no byte within the idle timeout; closing")
        // detach() drops the worker's reference, the only strong one (timers hold their target
        // unowned): keep self alive until the close is done.
        withExtendedLifetime(self) {
            detach()
            connection.close()
        }
    }

    private func detach() {
        if let t = timer { inspector.worker.loop.timers.cancel(t); timer = nil }
        inspector.worker.remove(fd: connection.fd)
    }

    func connectionReadable(_ connection: Connection, eof: Bool) {}
    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, reason: CloseReason) { detach() }
    func beginDrain() { connection.close() }
}
