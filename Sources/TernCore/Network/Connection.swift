import CTernShim
import Glibc

/// Why a connection ended; carried to the delegate and into logs.
public enum CloseReason: Sendable, Equatable {
    case localClose
    case peerClosed
    case readError(Int32)
    case writeError(Int32)
    case connectFailed(Int32)
    case connectTimeout
    /// The transport's handshake failed (upstream TLS: unknown CA, wrong name, a client
    /// certificate the server refused), with the reason for logs and answers.
    case handshakeFailed(String)
}

/// How a connection moves bytes over its socket when that is more than read(2)/write(2): TLS
/// (TernTLS) implements it. Plain TCP connections have none and call the socket directly, so the
/// common path pays one nil check. Both calls follow the syscalls' contract: a count of bytes,
/// 0 for the end of the stream (read), or -1 with `errno` set (EAGAIN when the socket must
/// become ready first; the connection is registered for both directions, edge-triggered).
/// A transport may wait on either direction for either call (a TLS handshake flight to send
/// during a read), so with a transport every readiness edge retries both a pending read and a
/// blocked write, and reads go on until EAGAIN (a short read says nothing about the socket).
public protocol Transport: AnyObject {
    func read(fd: Int32, into buffer: UnsafeMutablePointer<UInt8>, count: Int) -> Int
    func write(fd: Int32, from buffer: UnsafePointer<UInt8>, count: Int) -> Int
    /// Our output ends (half-close, `closing: false`) or the socket is about to be closed
    /// (`closing: true`): TLS sends its close_notify here, and frees its state on close.
    func shutdown(fd: Int32, closing: Bool)
    /// Why the handshake failed, once a call failed because of it; nil otherwise. The connection
    /// closes with `.handshakeFailed` then, so a session can answer with a TLS-specific error.
    var handshakeFailure: String? { get }
}

extension Transport {
    public var handshakeFailure: String? { nil }
}

public protocol ConnectionDelegate: AnyObject {
    /// New bytes are in `connection.input` (and/or the peer closed its side when `eof`).
    func connectionReadable(_ connection: Connection, eof: Bool)
    /// An outbound connect completed.
    func connectionConnected(_ connection: Connection)
    /// Pending output fell below the low watermark after having passed the high one.
    func connectionWriteDrained(_ connection: Connection)
    func connectionClosed(_ connection: Connection, reason: CloseReason)
    /// Only when `ownerMovesBytes`: the socket may be readable and/or writable (edge-triggered;
    /// `writable` is false while output queued in the connection is still unsent).
    func connectionSocketReady(_ connection: Connection, readable: Bool, writable: Bool)
}

extension ConnectionDelegate {
    public func connectionSocketReady(_ connection: Connection, readable: Bool, writable: Bool) {}
}

/// A non-blocking stream socket (TCP or unix) registered once, edge-triggered, with its loop. Input and output
/// buffers come from the worker's pool only while data is in flight, so an idle connection holds
/// only this object.
public final class Connection: EventHandler, TimerTarget {
    public enum State { case connecting, open, closed }

    public let fd: Int32
    public unowned let loop: EventLoop
    public unowned let buffers: BufferPool
    public weak var delegate: ConnectionDelegate?
    /// nil: plain TCP. Set before the first byte moves (a TLS handshake owns the bytes from then).
    public var transport: Transport?
    public private(set) var state: State
    public private(set) var input: ByteBuffer?
    private var output: ByteBuffer?
    public private(set) var readPaused = false
    private var readReady = false
    public private(set) var peerHalfClosed = false
    /// The end of the peer's stream was delivered (`eof: true`): nothing more is read.
    public private(set) var inputEnded = false
    /// Our side of the stream is shut (shutdown SHUT_WR after the output drained): the peer saw
    /// our FIN and may still send.
    public private(set) var outputShut = false
    private var shutAfterFlush = false
    /// Where the client meant to connect, when an original_dst listener filter found it (iptables
    /// REDIRECT or TPROXY); nil otherwise. tcp_proxy's ORIGINAL_DST clusters connect there.
    public var originalDestination: SocketAddress?
    /// The peer's IP address (nil for a unix peer), read with getpeername on first use and kept:
    /// ip_access checks it on every request of a keep-alive connection.
    public var peerAddress: IPAddressBits? { peer.address }
    /// The client address's hash for the hash balancers' source-address policy (0 for unix).
    public var sourceAddressHash: UInt64 { peer.hash }
    /// The verdict of the `ip_access` filter with this serial on the peer address, if it decided
    /// for this connection before.
    @inline(__always)
    func rememberedAccess(filter serial: UInt64) -> Bool? {
        let p = peer
        return p.accessFilterSerial == serial ? p.accessAllowed : nil
    }
    func rememberAccess(filter serial: UInt64, allowed: Bool) {
        let p = peer
        p.accessFilterSerial = serial
        p.accessAllowed = allowed
    }
    private var peer: PeerAddress {
        if let peerCache { return peerCache }
        let made = PeerAddress(IPAddressBits.peer(of: fd))
        peerCache = made
        return made
    }
    /// A reference, so connections that never ask (most) pay one word for it.
    private var peerCache: PeerAddress?
    /// Its id and addresses as access logs print them, made on first use (only access logs ask).
    public var logIdentity: ConnectionLogIdentity {
        if let identityCache { return identityCache }
        let made = ConnectionLogIdentity(fd: fd)
        identityCache = made
        return made
    }
    private var identityCache: ConnectionLogIdentity?
    /// An upstream connection's place in its cluster's per-host open-connection counts
    /// (LB_LEAST_CONNECTION), left when it closes.
    var openCount: OpenConnectionSlot?
    private var writeBlocked = false
    private var aboveHighWatermark = false
    private var closeAfterFlush = false
    private var delivering = false
    static let readBatchLimit = 64 * 1024
    public var highWatermark = 256 * 1024
    public var lowWatermark = 64 * 1024
    /// Free for the owner to use (e.g. the pool's host index).
    public var tag = 0
    /// When a byte last moved in either direction (loop clock): the no-progress timeouts of the
    /// sessions read it, so a peer that neither sends nor reads is let go whatever phase it is in.
    public private(set) var lastProgressMS: Int64
    /// Set while the connection waits in its loop's end-of-batch flush list.
    public var flushScheduled = false
    /// The owner moves the bytes itself (tcp_proxy's splice path): readiness goes to
    /// `connectionSocketReady` and nothing is read here. Output already queued is still written
    /// first; the owner calls `noteProgress()` for the bytes it moves.
    public var ownerMovesBytes = false
    /// The counters of the listener this (downstream) connection belongs to, set when it reaches
    /// the listener's network filters; nil on upstream connections.
    public var counters: ListenerCounters?

    public init(fd: Int32, loop: EventLoop, buffers: BufferPool, connecting: Bool = false) {
        self.fd = fd
        self.loop = loop
        self.buffers = buffers
        self.state = connecting ? .connecting : .open
        lastProgressMS = loop.nowMS
        loop.register(fd: fd, handler: self)
    }

    /// Starts a non-blocking connect; completion arrives as `connectionConnected` or
    /// `connectionClosed` (`.connectFailed`, or `.connectTimeout` after `timeoutMS` when positive).
    public static func connect(to address: SocketAddress, loop: EventLoop, buffers: BufferPool, timeoutMS: Int64 = 0) -> Connection? {
        let fd = tern_socket_stream(address.family)
        guard fd >= 0 else { return nil }
        if !address.isUnix { _ = tern_set_nodelay(fd) }
        // A unix socket connects at once (0, completed through the writable edge as TCP's
        // connect is) or fails at once (EAGAIN when the listener's backlog is full: refused here).
        let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if rc != 0 && errno != EINPROGRESS {
            Glibc.close(fd)
            return nil
        }
        let c = Connection(fd: fd, loop: loop, buffers: buffers, connecting: true)
        if timeoutMS > 0 {
            let t = LoopTimer(target: c)
            c.connectTimer = t
            loop.timers.arm(t, at: loop.nowMS + timeoutMS)
        }
        return c
    }

    /// Only while connecting: every pool and protocol gets the same connect timeout this way.
    private var connectTimer: LoopTimer?

    public func timerFired(_ timer: LoopTimer) {
        connectTimer = nil
        if state == .connecting { close(reason: .connectTimeout) }
    }

    private func stopConnectTimer() {
        if let t = connectTimer { loop.timers.cancel(t); connectTimer = nil }
    }

    public var pendingOutput: Int { output?.readableBytes ?? 0 }

    public func handleEvents(_ events: UInt32) {
        if state == .connecting {
            if events & (Readiness.writable | Readiness.error | Readiness.hangup) != 0 {
                let err = tern_socket_error(fd)
                if err != 0 { close(reason: .connectFailed(err)); return }
                stopConnectTimer()
                state = .open
                openCount?.connected()
                delegate?.connectionConnected(self)
                if state != .open { return }
            } else { return }
        }
        // A FIN (or hang-up) while reading is paused is only remembered: the bytes before it are
        // still in the kernel and are delivered, then the end, once the owner resumes reading.
        // Remembered with an owner moving bytes too: one that hands reading back (the TLS
        // inspector) leaves the connection knowing an EOF waits behind the bytes.
        if events & (Readiness.readHangup | Readiness.hangup) != 0 { peerHalfClosed = true }
        if ownerMovesBytes { reportReadiness(events); return }
        let readEdge = Readiness.readable | Readiness.readHangup | Readiness.hangup | Readiness.error
        let writeEdge = Readiness.writable | Readiness.error | Readiness.hangup
        let edges = transport == nil || events & (readEdge | writeEdge) == 0 ? events : readEdge | writeEdge
        if edges & readEdge != 0 {
            readReady = true
            if !readPaused { readAvailable() }
        }
        // An error or hang-up also ends a blocked write: the next write reports why.
        if state == .open && edges & writeEdge != 0 && writeBlocked {
            writeBlocked = false
            flush()
        }
    }

    private func reportReadiness(_ events: UInt32) {
        let readable = events & (Readiness.readable | Readiness.readHangup | Readiness.hangup | Readiness.error) != 0
        var writable = events & (Readiness.writable | Readiness.error | Readiness.hangup) != 0
        if writable && writeBlocked {
            writeBlocked = false
            flush()
            guard state == .open else { return }
            writable = !writeBlocked
        }
        delegate?.connectionSocketReady(self, readable: readable, writable: writable)
    }

    /// For an owner that moves bytes itself: feeds the no-progress timeouts.
    public func noteProgress() { lastProgressMS = loop.nowMS }

    /// Reads until the socket is drained (edge-triggered), then hands the bytes to the delegate.
    private func readAvailable() {
        var eof = false
        while state == .open && readReady && !readPaused && !inputEnded {
            let buffer: ByteBuffer
            if let b = input { buffer = b } else { buffer = buffers.take(); input = buffer }
            buffer.reserve(4096)
            let room = buffer.writableBytes
            let n = transport?.read(fd: fd, into: buffer.writePointer, count: room) ?? Glibc.read(fd, buffer.writePointer, room)
            if n > 0 {
                buffer.writerIndex += n
                lastProgressMS = loop.nowMS
                counters?.stats.bytesIn &+= n
                // A short read drains the socket unless the peer also closed (then EOF is still to read).
                if n < room && !peerHalfClosed && transport == nil { readReady = false }
                // A full read: gather the rest first (up to 64 KiB), so the delegate sees it in one
                // call and answers with one write instead of one per buffer-full. A transport returns
                // a record at a time, so everything it gives is gathered.
                if (n == room || transport != nil) && buffer.readableBytes < Connection.readBatchLimit { continue }
            } else if n == 0 {
                readReady = false
                eof = true
                inputEnded = true
            } else {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { readReady = false }
                else if e == EINTR { continue }
                else { releaseInputIfEmpty(); close(reason: transportFailure() ?? .readError(e)); return }
            }
            if input?.readableBytes ?? 0 > 0 || eof {
                deliver(eof: eof)
                releaseInputIfEmpty()
                if eof { return }
            }
        }
        releaseInputIfEmpty()
    }

    /// Hands the input to the delegate; while it runs, `resumeReading` only lifts the pause (the
    /// read loop on the stack reads on when the delegate returns), so resuming is safe anywhere.
    private func deliver(eof: Bool) {
        let outer = delivering
        delivering = true
        delegate?.connectionReadable(self, eof: eof)
        delivering = outer
    }

    private func releaseInputIfEmpty() {
        if let b = input, b.isEmpty { input = nil; buffers.give(b) }
    }

    /// Stops reading (back-pressure or pipelining): bytes stay in the kernel until `resumeReading`.
    public func pauseReading() { readPaused = true }

    public func resumeReading() {
        guard readPaused else { return }
        readPaused = false
        guard state == .open, !delivering else { return }
        if let b = input, !b.isEmpty {
            deliver(eof: false)
            releaseInputIfEmpty()
        }
        if readReady && !readPaused && state == .open { readAvailable() }
    }

    /// The buffer to append output into; call `flush()` after appending.
    public var outputBuffer: ByteBuffer {
        if let b = output { return b }
        let b = buffers.take()
        output = b
        return b
    }

    /// Writes what is pending; leftovers wait for the next writable edge.
    public func flush() {
        guard state == .open, let out = output else { return }
        while out.readableBytes > 0 {
            let n = transport?.write(fd: fd, from: out.readPointer, count: out.readableBytes) ?? Glibc.write(fd, out.readPointer, out.readableBytes)
            if n > 0 {
                out.consume(n)
                lastProgressMS = loop.nowMS
                counters?.stats.bytesOut &+= n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                writeBlocked = true
                break
            } else {
                let e = errno
                close(reason: transportFailure() ?? .writeError(e))
                return
            }
        }
        let pending = out.readableBytes
        if pending == 0 {
            output = nil
            buffers.give(out)
            if closeAfterFlush { close(reason: .localClose); return }
            if shutAfterFlush { shutOutput() }
        }
        if aboveHighWatermark && pending <= lowWatermark {
            aboveHighWatermark = false
            delegate?.connectionWriteDrained(self)
        }
    }

    private func transportFailure() -> CloseReason? {
        transport?.handshakeFailure.map { .handshakeFailed($0) }
    }

    /// True when queued output passed the high watermark; the caller should stop feeding this
    /// connection and wait for `connectionWriteDrained`.
    public func exceedsHighWatermark() -> Bool {
        if pendingOutput > highWatermark { aboveHighWatermark = true }
        return aboveHighWatermark
    }

    /// Moves everything read so far to `other`'s output and flushes it (tcp_proxy's copy). When
    /// `other` has nothing queued the buffer itself changes hands, so no byte is copied.
    public func forwardInput(to other: Connection) {
        guard let b = input, b.readableBytes > 0, other.state == .open, !other.outputShut, !other.shutAfterFlush else { return }
        if other.output == nil {
            input = nil
            other.output = b
        } else {
            other.output!.write(b.readPointer, count: b.readableBytes)
            b.consume(b.readableBytes)
        }
        other.flush()
    }

    /// Half-close: sends our FIN once everything queued has been written, and keeps reading.
    public func shutdownWriteWhenFlushed() {
        guard state == .open, !outputShut else { return }
        if pendingOutput == 0 { shutOutput() } else { shutAfterFlush = true }
    }

    private func shutOutput() {
        shutAfterFlush = false
        outputShut = true
        transport?.shutdown(fd: fd, closing: false)
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Closes with a reset (RST instead of FIN, queued output discarded): how a reset on one side
    /// of a tcp_proxy pair reaches the other.
    public func abort() {
        guard state != .closed else { return }
        var hard = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
        // No TLS close_notify first: that would tell the peer the stream ended cleanly. Dropping
        // the transport frees its state without one.
        transport = nil
        close(reason: .localClose)
    }

    /// Closes once everything queued has been written.
    public func closeWhenFlushed() {
        if pendingOutput == 0 { close(reason: .localClose) } else { closeAfterFlush = true; readPaused = true }
    }

    /// Hot upgrade: gives the socket up without closing it, with the bytes read from it and not
    /// used yet, so another process can take the connection over. nil (nothing changed) when it
    /// cannot move: TLS state, output not yet written, a peer that half-closed, not open.
    public func releaseForHandOff() -> (fd: Int32, unread: [UInt8])? {
        guard state == .open, transport == nil, pendingOutput == 0, !ownerMovesBytes, !peerHalfClosed, !inputEnded else { return nil }
        state = .closed
        stopConnectTimer()
        if let c = counters { c.stats.connectionsActive -= 1; counters = nil }
        loop.unregister(fd: fd)
        let unread = input?.readableArray() ?? []
        if let b = input { input = nil; buffers.give(b) }
        if let b = output { output = nil; buffers.give(b) }
        delegate = nil
        return (fd, unread)
    }

    /// The taking side: bytes the previous process had read from this socket, handled as if
    /// just read (call after the session took the connection).
    public func deliver(handedOver bytes: [UInt8]) {
        guard state == .open, !bytes.isEmpty else { return }
        let buffer = input ?? buffers.take()
        input = buffer
        buffer.write(bytes)
        delegate?.connectionReadable(self, eof: false)
    }

    public func close(reason: CloseReason = .localClose) {
        guard state != .closed else { return }
        state = .closed
        stopConnectTimer()
        if let c = counters { c.stats.connectionsActive -= 1; counters = nil }
        loop.unregister(fd: fd)
        transport?.shutdown(fd: fd, closing: true)
        Glibc.close(fd)
        if let slot = openCount { openCount = nil; slot.closed() }
        let d = delegate
        delegate = nil
        // The delegate still sees what was unread and unsent (a retry resends the bytes a failed
        // connect never sent); the buffers go back to the pool after it.
        d?.connectionClosed(self, reason: reason)
        if let b = input { input = nil; buffers.give(b) }
        if let b = output { output = nil; buffers.give(b) }
    }
}
