import Glibc
import Synchronization
import Testing
@testable import TernCore

// Unit tests of the event loop, Connection and ConnectionPool on real sockets (a socketpair or
// loopback TCP), the loop driven turn by turn (`EventLoop.runOnce`) on the test's own thread.

/// Turns a loop until a condition holds or a timeout passes.
final class LoopDriver {
    let loop: EventLoop

    init(_ loop: EventLoop) { self.loop = loop }

    /// Whether `condition` held before `timeoutMS` passed (checked before every turn).
    @discardableResult
    func run(timeoutMS: Int64 = 2000, until condition: () -> Bool) -> Bool {
        loop.updateClock()
        let deadline = loop.nowMS + timeoutMS
        while !condition() {
            if loop.nowMS >= deadline { return false }
            loop.runOnce(maxWaitMS: min(5, loop.timers.millisecondsUntilNext(now: loop.nowMS)))
        }
        return true
    }

    /// Turns the loop for about `ms` milliseconds.
    func run(forMS ms: Int64) { run(timeoutMS: ms) { false } }
}

/// Records every delegate call of a connection; consumes input unless told not to.
final class RecordingDelegate: ConnectionDelegate {
    var reads: [(bytes: [UInt8], eof: Bool)] = []
    var connected = 0
    var drained = 0
    var closed: [CloseReason] = []
    var consumeInput = true
    var onReadable: ((Connection, Bool) -> Void)?

    var received: [UInt8] { reads.flatMap(\.bytes) }
    var eofCount: Int { reads.filter(\.eof).count }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        reads.append((connection.input?.readableArray() ?? [], eof))
        if consumeInput, let input = connection.input { input.consume(input.readableBytes) }
        onReadable?(connection, eof)
    }
    func connectionConnected(_ connection: Connection) { connected += 1 }
    func connectionWriteDrained(_ connection: Connection) { drained += 1 }
    func connectionClosed(_ connection: Connection, reason: CloseReason) { closed.append(reason) }
}

/// A connected, non-blocking AF_UNIX stream pair: (Tern's end, the test's peer end).
func socketPair() -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds)
    precondition(rc == 0, "socketpair failed: errno \(errno)")
    return (fds[0], fds[1])
}

func peerWrite(_ fd: Int32, _ bytes: [UInt8]) {
    let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    precondition(n == bytes.count, "short write to peer: \(n)")
}

/// Everything the peer end can read right now (non-blocking); `eof` when the other side closed.
func peerRead(_ fd: Int32) -> (bytes: [UInt8], eof: Bool) {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { out.append(contentsOf: buf[0..<n]); continue }
        return (out, n == 0)
    }
}

/// A loop, a buffer pool and a Connection on one end of a socketpair, with a recording delegate.
final class PairFixture {
    let loop = EventLoop()
    let buffers = BufferPool()
    let connection: Connection
    let peer: Int32
    let delegate = RecordingDelegate()
    lazy var driver = LoopDriver(loop)

    init(sendBuffer: Int32? = nil) {
        let (mine, theirs) = socketPair()
        if var size = sendBuffer { setsockopt(mine, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        connection = Connection(fd: mine, loop: loop, buffers: buffers)
        connection.delegate = delegate
        peer = theirs
    }

    deinit {
        connection.close()
        close(peer)
    }
}

struct ConnectionTests {
    @Test func bytesFromThePeerReachTheDelegate() {
        let f = PairFixture()
        peerWrite(f.peer, Array("hello".utf8))
        #expect(f.driver.run { !f.delegate.reads.isEmpty })
        #expect(f.delegate.received == Array("hello".utf8))
        #expect(f.delegate.eofCount == 0)
        // Consumed input is handed back to the pool: an idle connection holds no buffer.
        #expect(f.connection.input == nil)
        peerWrite(f.peer, Array(" again".utf8))
        #expect(f.driver.run { f.delegate.received.count == 11 })
        #expect(f.delegate.received == Array("hello again".utf8))
    }

    @Test func unconsumedInputStaysAndGrowsWithTheNextRead() {
        let f = PairFixture()
        f.delegate.consumeInput = false
        peerWrite(f.peer, Array("ab".utf8))
        #expect(f.driver.run { f.delegate.reads.count == 1 })
        peerWrite(f.peer, Array("cd".utf8))
        #expect(f.driver.run { f.delegate.reads.count == 2 })
        #expect(f.delegate.reads[1].bytes == Array("abcd".utf8))
    }

    @Test func endOfStreamIsDeliveredOnceAfterTheData() {
        let f = PairFixture()
        peerWrite(f.peer, Array("last words".utf8))
        shutdown(f.peer, Int32(SHUT_WR))
        #expect(f.driver.run { f.delegate.eofCount > 0 })
        f.driver.run(forMS: 30)
        #expect(f.delegate.received == Array("last words".utf8))
        #expect(f.delegate.eofCount == 1)
        #expect(f.delegate.reads.last?.eof == true)
        #expect(f.connection.peerHalfClosed)
        // EOF alone does not close: the owner decides (it may still write its answer).
        #expect(f.connection.state == .open)
        f.connection.outputBuffer.write(Array("answer".utf8))
        f.connection.flush()
        #expect(peerRead(f.peer).bytes == Array("answer".utf8))
    }

    @Test func pausedReadingHoldsBytesUntilResumed() {
        let f = PairFixture()
        f.connection.pauseReading()
        peerWrite(f.peer, Array("held".utf8))
        f.driver.run(forMS: 30)
        #expect(f.delegate.reads.isEmpty)
        f.connection.resumeReading()
        #expect(f.delegate.received == Array("held".utf8))
        #expect(!f.connection.readPaused)
    }

    @Test func writesPushBackAboveTheHighWatermarkAndReportTheDrainOnce() {
        let f = PairFixture(sendBuffer: 8192)
        f.connection.highWatermark = 64 * 1024
        f.connection.lowWatermark = 16 * 1024
        let total = 1024 * 1024
        let payload = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        f.connection.outputBuffer.write(payload)
        f.connection.flush()
        #expect(f.connection.pendingOutput > 64 * 1024)   // the peer reads nothing yet
        #expect(f.connection.exceedsHighWatermark())
        #expect(f.delegate.drained == 0)
        var received: [UInt8] = []
        let done = f.driver.run(timeoutMS: 5000) {
            received += peerRead(f.peer).bytes
            return received.count == total
        }
        #expect(done, "received \(received.count) of \(total)")
        #expect(received == payload)
        #expect(f.delegate.drained == 1)
        #expect(f.connection.pendingOutput == 0)
        #expect(!f.connection.exceedsHighWatermark())
    }

    @Test func belowTheHighWatermarkNoDrainIsReported() {
        let f = PairFixture()
        f.connection.outputBuffer.write(Array("small".utf8))
        f.connection.flush()
        #expect(!f.connection.exceedsHighWatermark())
        f.driver.run(forMS: 20)
        #expect(peerRead(f.peer).bytes == Array("small".utf8))
        #expect(f.delegate.drained == 0)
    }

    @Test func closeTellsTheDelegateOnceAndThePeerSeesEOF() {
        let f = PairFixture()
        f.connection.close()
        f.connection.close()
        #expect(f.delegate.closed == [.localClose])
        #expect(f.connection.state == .closed)
        #expect(f.connection.delegate == nil)
        #expect(peerRead(f.peer).eof)
    }

    @Test func closeWhenFlushedWritesEverythingFirst() {
        let f = PairFixture(sendBuffer: 8192)
        let payload = [UInt8](repeating: 42, count: 300_000)
        f.connection.outputBuffer.write(payload)
        f.connection.flush()
        f.connection.closeWhenFlushed()
        #expect(f.connection.state == .open)   // output still queued
        var received: [UInt8] = []
        var eof = false
        #expect(f.driver.run(timeoutMS: 5000) {
            let r = peerRead(f.peer)
            received += r.bytes
            eof = eof || r.eof
            return eof
        })
        #expect(received.count == payload.count)
        #expect(f.delegate.closed == [.localClose])
    }

    @Test func theDelegateMayCloseFromInsideTheReadCallback() {
        let f = PairFixture()
        f.delegate.onReadable = { c, _ in c.close() }
        peerWrite(f.peer, Array("bye".utf8))
        #expect(f.driver.run { !f.delegate.closed.isEmpty })
        #expect(f.delegate.reads.count == 1)
        #expect(f.delegate.closed == [.localClose])
    }

    @Test func flushLaterWritesOnceAfterTheBatch() {
        let f = PairFixture()
        f.connection.outputBuffer.write(Array("a".utf8))
        f.loop.flushLater(f.connection)
        f.connection.outputBuffer.write(Array("b".utf8))
        f.loop.flushLater(f.connection)
        #expect(f.connection.flushScheduled)
        #expect(peerRead(f.peer).bytes.isEmpty)   // nothing written before the batch ends
        #expect(f.driver.run { f.connection.pendingOutput == 0 })
        #expect(!f.connection.flushScheduled)
        #expect(peerRead(f.peer).bytes == Array("ab".utf8))
    }
}

/// Records which timers fired, in order.
final class TimerLog: TimerTarget {
    var fired: [Int] = []
    var onFire: ((LoopTimer) -> Void)?
    func timerFired(_ timer: LoopTimer) {
        fired.append(timer.tag)
        onFire?(timer)
    }
}

struct TimerTests {
    @Test func theHeapFiresDueTimersByDeadlineAndSkipsCancelledOnes() {
        let heap = TimerHeap()
        let log = TimerLog()
        let timers = (0..<6).map { LoopTimer(target: log, tag: $0) }
        let deadlines: [Int64] = [50, 10, 40, 20, 30, 60]
        for (t, d) in zip(timers, deadlines) { heap.arm(t, at: d) }
        heap.cancel(timers[2])
        heap.cancel(timers[2])                 // cancelling twice is harmless
        heap.arm(timers[0], at: 5)             // re-arming moves it, never duplicates it
        #expect(heap.count == 5)
        #expect(!timers[2].isArmed && timers[0].isArmed)
        #expect(heap.millisecondsUntilNext(now: 0) == 5)
        heap.fireDue(now: 30)
        #expect(log.fired == [0, 1, 3, 4])
        #expect(heap.count == 1)
        #expect(heap.millisecondsUntilNext(now: 30) == 30)
        heap.fireDue(now: 1000)
        #expect(log.fired == [0, 1, 3, 4, 5])
        #expect(heap.count == 0)
        #expect(heap.millisecondsUntilNext(now: 0) == 1000)   // nothing armed: the loop wakes once a second
    }

    @Test func aTimerReArmedFromItsCallbackFiresAgainLater() {
        let heap = TimerHeap()
        let log = TimerLog()
        let t = LoopTimer(target: log, tag: 7)
        var rounds = 0
        log.onFire = { timer in
            rounds += 1
            if rounds < 3 { heap.arm(timer, at: timer.deadline + 10) }
        }
        heap.arm(t, at: 10)
        heap.fireDue(now: 15)
        #expect(log.fired == [7])              // re-armed into the future: not fired again in this pass
        heap.fireDue(now: 100)
        #expect(log.fired == [7, 7, 7])
        #expect(!t.isArmed)
    }

    @Test func theLoopFiresTimersInDeadlineOrder() {
        let loop = EventLoop()
        let driver = LoopDriver(loop)
        let log = TimerLog()
        let a = LoopTimer(target: log, tag: 1), b = LoopTimer(target: log, tag: 2), c = LoopTimer(target: log, tag: 3)
        loop.updateClock()
        let now = loop.nowMS
        loop.timers.arm(a, at: now + 60)
        loop.timers.arm(b, at: now + 20)
        loop.timers.arm(c, at: now + 40)
        loop.timers.cancel(c)
        loop.timers.arm(a, at: now + 10)
        #expect(driver.run { log.fired.count == 2 })
        driver.run(forMS: 60)
        #expect(log.fired == [1, 2])
        #expect(loop.nowMS - now >= 20)
    }
}

struct TaskQueueTests {
    @Test func tasksFromAnotherThreadRunOnTheLoopThreadInOrder() async {
        let loop = EventLoop()
        let driver = LoopDriver(loop)
        let ran = Mutex<[Int]>([])
        let loopThread = pthread_self()
        let onLoopThread = Mutex(true)
        let remote = loop.remote
        let sender = Thread { @Sendable in
            for i in 0..<100 {
                remote.execute {
                    if pthread_equal(pthread_self(), loopThread) == 0 { onLoopThread.withLock { $0 = false } }
                    ran.withLock { $0.append(i) }
                }
            }
        }
        sender.start()
        #expect(driver.run(timeoutMS: 5000) { ran.withLock { $0.count } == 100 })
        sender.join()
        #expect(ran.withLock { $0 } == Array(0..<100))
        #expect(onLoopThread.withLock { $0 })
    }
}

/// A plain pthread for the cross-thread test (no Foundation in this target).
final class Thread: @unchecked Sendable {
    private let body: @Sendable () -> Void
    private var handle = pthread_t()
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&handle, nil, { arg in
            let t = Unmanaged<Thread>.fromOpaque(arg!).takeRetainedValue()
            t.body()
            return nil
        }, box)
    }
    func join() { pthread_join(handle, nil) }
}

/// A loopback TCP listener the test accepts from by hand.
final class LoopbackServer {
    let fd: Int32
    let port: UInt16
    var accepted: [Int32] = []

    /// `backlog` 0 and nothing accepted: later connects stay half-open (for connect timeouts).
    init(backlog: Int32 = 16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, backlog)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
    }

    /// Accepts whatever is queued; the number accepted so far.
    @discardableResult
    func acceptPending() -> Int {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { return accepted.count }
            _ = fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK)
            accepted.append(c)
        }
    }

    deinit {
        for c in accepted { close(c) }
        close(fd)
    }
}

struct ConnectionPoolTests {
    final class Fixture {
        let loop = EventLoop()
        let buffers = BufferPool()
        let server = LoopbackServer()
        let pool: ConnectionPool
        let delegate = RecordingDelegate()
        lazy var driver = LoopDriver(loop)

        init(idleTimeoutMS: Int64 = 60_000, maxRequests: Int = 100, maxIdle: Int = 1) {
            let host = HostConfig(address: SocketAddress.parse("127.0.0.1:\(server.port)")!, hostname: "", weight: 1, metadata: [:])
            let config = ClusterConfig(name: "c", lbType: "LB_ROUNDROBIN", hosts: [host], connectTimeoutMS: 1000, idleTimeoutMS: idleTimeoutMS,
                                       maxRequestsPerConnection: maxRequests, connectionBufferLimit: 0, maxIdlePerHost: maxIdle)
            pool = ConnectionPool(config: config, loop: loop, buffers: buffers)
        }

        /// A connected upstream connection from the pool, accepted by the server.
        func connected() -> Connection? {
            guard let c = try? pool.connect(host: 0) else { return nil }
            c.delegate = delegate
            let before = delegate.connected
            let accepted = server.accepted.count
            guard driver.run(until: { self.delegate.connected > before && self.server.acceptPending() > accepted }) else { return nil }
            return c
        }

        deinit { pool.closeAll() }
    }

    @Test func aReleasedConnectionIsHandedOutAgainWithItsCount() throws {
        let f = Fixture()
        let c = try #require(f.connected())
        #expect(c.highWatermark == 64 * 1024)   // conn_buffer_limit_bytes never below 64 KiB
        f.pool.release(c, requestsServed: 3)
        #expect(f.pool.idleCount == 1)
        #expect(c.delegate === f.pool)
        let (again, served) = try #require(f.pool.takeIdle(host: 0))
        #expect(again === c && served == 3)
        #expect(f.pool.idleCount == 0)
        #expect(f.pool.takeIdle(host: 0) == nil)
    }

    @Test func connectionsPastTheirLimitsAreClosedNotPooled() throws {
        let f = Fixture(maxRequests: 5, maxIdle: 1)
        let worn = try #require(f.connected())
        f.pool.release(worn, requestsServed: 5)   // max_request_per_conn reached
        #expect(worn.state == .closed && f.pool.idleCount == 0)
        let first = try #require(f.connected()), second = try #require(f.connected())
        f.pool.release(first, requestsServed: 1)
        f.pool.release(second, requestsServed: 1)   // the host's idle list is full
        #expect(f.pool.idleCount == 1)
        #expect(first.state == .open && second.state == .closed)
    }

    @Test func anIdleConnectionWhosePeerClosesIsDropped() throws {
        let f = Fixture()
        let c = try #require(f.connected())
        f.pool.release(c, requestsServed: 1)
        close(f.server.accepted.removeLast())
        #expect(f.driver.run { f.pool.idleCount == 0 })
        #expect(c.state == .closed)
        #expect(f.pool.takeIdle(host: 0) == nil)
    }

    @Test func anIdleConnectionThatReceivesBytesIsDropped() throws {
        let f = Fixture()
        let c = try #require(f.connected())
        f.pool.release(c, requestsServed: 1)
        peerWrite(f.server.accepted.last!, Array("HTTP/1.1 200 OK\r\n".utf8))
        #expect(f.driver.run { f.pool.idleCount == 0 })
        #expect(c.state == .closed)
    }

    @Test func idleConnectionsExpireAfterTheIdleTimeout() throws {
        let f = Fixture(idleTimeoutMS: 50)
        let c = try #require(f.connected())
        f.loop.updateClock()
        let released = f.loop.nowMS
        f.pool.release(c, requestsServed: 1)
        #expect(f.driver.run { f.pool.idleCount == 0 })
        #expect(f.loop.nowMS - released >= 50)
        #expect(c.state == .closed)
        // The server sees the close.
        #expect(f.driver.run { peerRead(f.server.accepted.last!).eof })
    }
}
