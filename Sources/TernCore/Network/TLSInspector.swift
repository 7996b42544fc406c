/// MOSN's listener `inspector: true`: TLS and plain text on one port. Each accepted connection
/// waits, unread, until its first byte arrives; 0x16 (a TLS handshake record) sends it to `tls`
/// (the listener's TLS, then its filters), anything else to `plain` (its filters as plain text).
/// The byte is only peeked (`PeekWait`), so OpenSSL, or the protocol, reads the stream from its
/// start. A client that sends nothing is let go after the listener's idle timeout, as the `Auto`
/// sniffer does.
public final class TLSInspector: AcceptHandler, PeekClassifier {
    static let handshakeRecord: UInt8 = 0x16
    let tls: AcceptHandler
    let plain: AcceptHandler
    public let worker: Worker
    public let peekWaitMS: Int64
    public let listenerName: String
    public let peekScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)

    /// `idleTimeoutMS` 0: no bound on the wait (as `connection_idle_timeout: 0` elsewhere).
    public init(tls: AcceptHandler, plain: AcceptHandler, worker: Worker, idleTimeoutMS: Int64, listenerName: String) {
        self.tls = tls
        self.plain = plain
        self.worker = worker
        self.peekWaitMS = idleTimeoutMS
        self.listenerName = listenerName
    }

    deinit { peekScratch.deallocate() }

    public func accepted(_ connection: Connection, listener: Listener) { waitForBytes(connection, listener: listener) }

    public var peekLimit: Int { 1 }
    public var timeoutReason: String { "no byte within the idle timeout" }

    public func classify(_ peeked: UnsafeRawBufferPointer, complete: Bool) -> PeekVerdict {
        .handTo(peeked[0] == TLSInspector.handshakeRecord ? tls : plain)
    }
}
