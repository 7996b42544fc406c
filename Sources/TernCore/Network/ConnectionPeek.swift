import Glibc

/// What a `PeekClassifier` makes of a connection's first bytes.
public enum PeekVerdict {
    /// Not enough bytes to tell yet; asked again when more arrive.
    case needMore
    /// Hand the connection, every byte still unread, to this handler.
    case handTo(AcceptHandler)
    /// Close it; the reason is logged (debug) with the listener's name.
    case close(String)
}

/// Chooses where an accepted connection goes from its first bytes, which are only peeked
/// (`recv(MSG_PEEK)`), so whoever takes the connection reads the stream from its start: the TLS
/// inspector (one byte) and the SNI router (a ClientHello) share this wait.
public protocol PeekClassifier: AnyObject {
    var worker: Worker { get }
    var listenerName: String { get }
    /// The most bytes ever peeked; when that many are there, `classify` must decide.
    var peekLimit: Int { get }
    /// How long a connection may take to send enough bytes; 0: no bound.
    var peekWaitMS: Int64 { get }
    /// Scratch of at least `peekLimit` bytes, shared by this worker's waits (one runs at a time).
    var peekScratch: UnsafeMutableRawBufferPointer { get }
    /// `complete`: no more bytes will come (the limit is reached, or the client sent its FIN).
    func classify(_ peeked: UnsafeRawBufferPointer, complete: Bool) -> PeekVerdict
    /// The log line's reason when the wait times out.
    var timeoutReason: String { get }
}

extension PeekClassifier {
    /// Puts `connection` in readiness-only mode until `classify` decides.
    public func waitForBytes(_ connection: Connection, listener: Listener) {
        let waiting = PeekWait(classifier: self, connection: connection, listener: listener)
        // Readiness only: nothing is read until a side is chosen.
        connection.ownerMovesBytes = true
        connection.delegate = waiting
        worker.add(waiting, fd: connection.fd)
        waiting.start()
    }
}

/// One connection waiting for enough bytes; a drain closes it (it has no request in flight).
final class PeekWait: ConnectionDelegate, DownstreamSession, TimerTarget {
    let classifier: PeekClassifier
    let connection: Connection
    unowned let listener: Listener
    private var timer: LoopTimer?

    init(classifier: PeekClassifier, connection: Connection, listener: Listener) {
        self.classifier = classifier
        self.connection = connection
        self.listener = listener
    }

    func start() {
        guard classifier.peekWaitMS > 0 else { return }
        let t = LoopTimer(target: self)
        timer = t
        classifier.worker.loop.timers.arm(t, at: classifier.worker.loop.nowMS + classifier.peekWaitMS)
    }

    func connectionSocketReady(_ connection: Connection, readable: Bool, writable: Bool) {
        guard readable else { return }
        let scratch = classifier.peekScratch
        let limit = min(classifier.peekLimit, scratch.count)
        var n = 0
        while true {
            n = recv(connection.fd, scratch.baseAddress, limit, Int32(MSG_PEEK))
            if n > 0 { break }
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
        // With MSG_PEEK a FIN behind the bytes is not reported; the hang-up edge recorded it.
        let complete = n >= limit || connection.peerHalfClosed
        switch classifier.classify(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), complete: complete) {
        case .needMore:
            return
        case .close(let why):
            classifier.worker.logger.info("listener", "listener \(classifier.listenerName): \(why); connection closed")
            withExtendedLifetime(self) {
                detach()
                connection.close()
            }
        case .handTo(let next):
            detach()
            connection.ownerMovesBytes = false
            connection.delegate = nil
            next.accepted(connection, listener: listener)
            // The readable edge went to the wait: replay it for whoever took the connection.
            if connection.state == .open { connection.handleEvents(Readiness.readable) }
        }
    }

    func timerFired(_ timer: LoopTimer) {
        self.timer = nil
        guard connection.state == .open, connection.delegate === self else { return }
        classifier.worker.logger.debug("listener", "listener \(classifier.listenerName): \(classifier.timeoutReason); connection closed")
        // detach() drops the worker's reference, the only strong one (timers hold their target
        // unowned): keep self alive until the close is done.
        withExtendedLifetime(self) {
            detach()
            connection.close()
        }
    }

    private func detach() {
        if let t = timer { classifier.worker.loop.timers.cancel(t); timer = nil }
        classifier.worker.remove(fd: connection.fd)
    }

    func connectionReadable(_ connection: Connection, eof: Bool) {}
    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, reason: CloseReason) { detach() }
    func beginDrain() { connection.close() }
}
