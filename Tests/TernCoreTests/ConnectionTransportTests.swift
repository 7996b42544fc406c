import Glibc
import Testing
@testable import TernCore

/// A stand-in for TLS: flips every byte on the way in and out.
private final class FlipTransport: Transport {
    var reads = 0, writes = 0
    func read(fd: Int32, into buffer: UnsafeMutablePointer<UInt8>, count: Int) -> Int {
        reads += 1
        let n = Glibc.read(fd, buffer, count)
        if n > 0 { for i in 0..<n { buffer[i] ^= 0xFF } }
        return n
    }
    func write(fd: Int32, from buffer: UnsafePointer<UInt8>, count: Int) -> Int {
        writes += 1
        let flipped = (0..<count).map { buffer[$0] ^ 0xFF }
        return flipped.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, count) }
    }
    func shutdown(fd: Int32, closing: Bool) {}
}

/// A stand-in for a TLS read that must first send (a handshake flight): its first read takes
/// what the socket holds into its own buffer (as OpenSSL's read-ahead does) and answers EAGAIN,
/// as OpenSSL's WANT_WRITE does; the next read hands the bytes over.
private final class WantsWriteFirstTransport: Transport {
    var held: [UInt8]? = nil
    func read(fd: Int32, into buffer: UnsafeMutablePointer<UInt8>, count: Int) -> Int {
        guard let bytes = held else {
            var tmp = [UInt8](repeating: 0, count: 4096)
            let n = Glibc.read(fd, &tmp, tmp.count)
            if n > 0 { held = Array(tmp[0..<n]) }
            errno = EAGAIN
            return -1
        }
        if bytes.isEmpty { errno = EAGAIN; return -1 }
        for (i, b) in bytes.prefix(count).enumerated() { buffer[i] = b }
        let n = min(count, bytes.count)
        held = Array(bytes.dropFirst(n))
        return n
    }
    func write(fd: Int32, from buffer: UnsafePointer<UInt8>, count: Int) -> Int { Glibc.write(fd, buffer, count) }
    func shutdown(fd: Int32, closing: Bool) {}
}

private final class Collector: ConnectionDelegate {
    var bytes: [UInt8] = []
    var eofs = 0
    var closed: CloseReason?
    func connectionReadable(_ connection: Connection, eof: Bool) {
        if let input = connection.input {
            bytes += Array(UnsafeBufferPointer(start: input.readPointer, count: input.readableBytes))
            input.consume(input.readableBytes)
        }
        if eof { eofs += 1 }
    }
    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, reason: CloseReason) { closed = reason }
}

private func turn(_ loop: EventLoop, times: Int = 3) { for _ in 0..<times { loop.runOnce(maxWaitMS: 20) } }

@Suite struct ConnectionTransportTests {
    @Test func aTransportSeesEveryByteBothWays() {
        let loop = EventLoop(), buffers = BufferPool(bufferSize: 4096)
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let c = Connection(fd: mine, loop: loop, buffers: buffers)
        let transport = FlipTransport()
        c.transport = transport
        let d = Collector()
        c.delegate = d
        c.outputBuffer.write("hello")
        c.flush()
        var got = [UInt8](repeating: 0, count: 16)
        let n = Glibc.read(peer, &got, 16)
        #expect(n == 5 && Array(got[0..<5]) == Array("hello".utf8).map { $0 ^ 0xFF })
        let incoming = Array("world".utf8).map { $0 ^ 0xFF }
        _ = incoming.withUnsafeBufferPointer { Glibc.write(peer, $0.baseAddress, $0.count) }
        turn(loop)
        #expect(d.bytes == Array("world".utf8))
        #expect(transport.reads > 0 && transport.writes == 1)
        c.close()
    }

    @Test func aFinWhileReadingIsPausedComesAfterTheBytesBeforeIt() {
        let loop = EventLoop(), buffers = BufferPool(bufferSize: 4096)
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let c = Connection(fd: mine, loop: loop, buffers: buffers)
        let d = Collector()
        c.delegate = d
        c.pauseReading()
        _ = Glibc.write(peer, "abc", 3)
        shutdown(peer, Int32(SHUT_WR))
        turn(loop)
        #expect(d.bytes.isEmpty && d.eofs == 0 && d.closed == nil, "paused: nothing delivered, nothing closed")
        #expect(c.state == .open)
        c.resumeReading()
        turn(loop)
        #expect(d.bytes == Array("abc".utf8))
        #expect(d.eofs == 1)
        c.close()
    }

    /// Edge-triggered: a read that waited on writability, with the socket already emptied into
    /// the transport, gets no readable edge again, so the writable edge must retry the read.
    @Test func aReadThatWaitedOnWritabilityIsRetriedOnTheWritableEdge() {
        let loop = EventLoop(), buffers = BufferPool(bufferSize: 4096)
        let (mine, peer) = socketPair()
        defer { close(peer) }
        let c = Connection(fd: mine, loop: loop, buffers: buffers)
        c.transport = WantsWriteFirstTransport()
        let d = Collector()
        c.delegate = d
        // Our output fills the socket, so a writable edge comes once the peer drains it.
        let chunk = [UInt8](repeating: 0x61, count: 64 * 1024)
        for _ in 0..<32 { c.outputBuffer.write(chunk) }
        c.flush()
        #expect(c.pendingOutput > 0, "the socket buffer should be full")
        peerWrite(peer, Array("ping".utf8))
        turn(loop)
        #expect(d.bytes.isEmpty, "the first read waits")
        var sink = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<200 where c.pendingOutput > 0 || d.bytes.isEmpty {
            while recv(peer, &sink, sink.count, Int32(MSG_DONTWAIT)) > 0 {}
            turn(loop, times: 1)
        }
        #expect(d.bytes == Array("ping".utf8))
        c.close()
    }

    @Test func aConnectThatNeverCompletesTimesOut() throws {
        let loop = EventLoop(), buffers = BufferPool(bufferSize: 4096)
        // A listener with a full backlog that never accepts: later connects stay half-open.
        let server = LoopbackServer(backlog: 0)
        let target = try #require(SocketAddress.parse("127.0.0.1:\(server.port)"))
        // Fill the backlog so later connects stay in SYN_SENT.
        var fillers: [Connection] = []
        var timedOut: Connection?
        var d = Collector()
        for _ in 0..<8 {
            guard let c = Connection.connect(to: target, loop: loop, buffers: buffers, timeoutMS: 200) else { continue }
            let collector = Collector()
            c.delegate = collector
            fillers.append(c)
            timedOut = c
            d = collector
        }
        let start = loop.nowMS
        while d.closed == nil && loop.nowMS - start < 3000 { loop.runOnce(maxWaitMS: 50) }
        // At least the last connect could not complete and was closed by its timer.
        #expect(d.closed == .connectTimeout, "the last connect ended with \(String(describing: d.closed)), state \(String(describing: timedOut?.state))")
        for c in fillers { c.close() }
    }
}
