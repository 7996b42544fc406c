import Glibc
import Testing
@testable import TernCore

/// A toy multiplexed protocol: every frame is 6 bytes, [kind][id: 4 bytes big-endian][status];
/// kind 0 is a response, 1 a request, 2 a heartbeat.
enum ToyMux: MultiplexProtocol {
    struct Frame { let kind: UInt8; let id: UInt32; let status: UInt8 }
    typealias Caller = ToyCaller
    typealias CallContext = UInt8

    static func frame(kind: UInt8, id: UInt32, status: UInt8 = 0) -> [UInt8] {
        [kind, UInt8(id >> 24), UInt8(id >> 16 & 0xFF), UInt8(id >> 8 & 0xFF), UInt8(id & 0xFF), status]
    }
    static func parse(_ bytes: [UInt8]) -> [Frame] {
        stride(from: 0, to: bytes.count - bytes.count % 6, by: 6).map {
            Frame(kind: bytes[$0], id: UInt32(bytes[$0 + 1]) << 24 | UInt32(bytes[$0 + 2]) << 16 | UInt32(bytes[$0 + 3]) << 8 | UInt32(bytes[$0 + 4]),
                  status: bytes[$0 + 5])
        }
    }

    static func decode(_ p: UnsafePointer<UInt8>, _ count: Int, maxFrame: Int) -> MultiplexDecode<Frame> {
        guard count >= 6 else { return .needMore }
        guard p[0] <= 2 else { return .error("bad kind \(p[0])") }
        return .frame(parse(Array(UnsafeBufferPointer(start: p, count: 6)))[0])
    }
    static func length(of frame: Frame) -> Int { 6 }
    static func role(of frame: Frame) -> MultiplexFrameRole {
        switch frame.kind {
        case 0: return .response(id: frame.id, status: Int(frame.status))
        case 2: return .heartbeatAnswer
        default: return .other
        }
    }
    static func writeHeartbeat(_ out: ByteBuffer, id: UInt32, like context: UInt8?) { out.write(frame(kind: 2, id: id)) }
    static func deliver(_ p: UnsafePointer<UInt8>, _ frame: Frame, of call: PendingCall<ToyMux>, to caller: ToyCaller) {
        caller.answers.append((call.originalID, Int(frame.status)))
    }
    static func status(for error: StreamError) -> Int { 99 }
    static func blamesHost(status: Int) -> Bool { status == 99 }
    static func fail(_ call: PendingCall<ToyMux>, _ error: StreamError, to caller: ToyCaller) {
        caller.failures.append((call.originalID, error.code))
    }
    static func resume(_ caller: ToyCaller) { caller.resumed += 1 }
}

final class ToyCaller {
    var answers: [(UInt32, Int)] = []
    var failures: [(UInt32, String)] = []
    var resumed = 0
}

struct MultiplexPoolTests {
    final class Fixture {
        let server = LoopbackServer()
        let worker: Worker
        let pool: MultiplexPool<ToyMux>
        lazy var driver = LoopDriver(worker.loop)

        init(maxConcurrent: Int = 100, connectTimeoutMS: Int64 = 1000) {
            let host = HostConfig(address: SocketAddress.parse("127.0.0.1:\(server.port)")!, hostname: "", weight: 1, metadata: [:])
            let config = ClusterConfig(name: "toy", lbType: "LB_ROUNDROBIN", hosts: [host], connectTimeoutMS: connectTimeoutMS, idleTimeoutMS: 60_000,
                                       maxRequestsPerConnection: 1024, connectionBufferLimit: 0, maxIdlePerHost: 1)
            worker = Worker(id: 0, clusters: [config], logger: Logger(level: .fatal, fd: 2))
            var settings = MultiplexSettings()
            settings.maxConcurrentPerConnection = maxConcurrent
            pool = MultiplexPool<ToyMux>(settings: settings, worker: worker)
        }

        deinit { pool.closeAll() }

        func connection() throws -> MultiplexConnection<ToyMux> {
            guard case .connection(let c) = pool.connection(clusterIndex: 0, host: 0) else { throw TestFailure("no connection") }
            return c
        }

        /// Sends a call as a caller would: register it, write the frame under the new id.
        func call(_ c: MultiplexConnection<ToyMux>, from caller: ToyCaller?, id: UInt32, deadlineMS: Int64 = 60_000) -> UInt32 {
            let upstreamID = c.register(caller: caller, originalID: id, context: 1, deadline: worker.loop.nowMS + deadlineMS)
            c.connection.outputBuffer.write(ToyMux.frame(kind: 1, id: upstreamID))
            c.connection.flush()
            return upstreamID
        }

        /// What the upstream received so far, as frames.
        func upstreamFrames(_ count: Int) -> [ToyMux.Frame] {
            var bytes: [UInt8] = []
            driver.run { server.acceptPending(); if let fd = server.accepted.first { bytes += peerRead(fd).bytes }; return bytes.count >= count * 6 }
            return ToyMux.parse(bytes)
        }
    }

    struct TestFailure: Error { let what: String; init(_ w: String) { what = w } }

    @Test func answersMapBackToTheirCallersWhateverTheOrder() throws {
        let f = Fixture()
        let c = try f.connection()
        let a = ToyCaller(), b = ToyCaller()
        // Both callers use id 7: the pool gives each call its own id on the wire.
        _ = f.call(c, from: a, id: 7)
        _ = f.call(c, from: b, id: 7)
        let sent = f.upstreamFrames(2)
        #expect(sent.count == 2 && sent[0].id != sent[1].id)
        let fd = f.server.accepted[0]
        peerWrite(fd, ToyMux.frame(kind: 0, id: sent[1].id, status: 5) + ToyMux.frame(kind: 0, id: sent[0].id, status: 4))
        f.driver.run { a.answers.count == 1 && b.answers.count == 1 }
        #expect(a.answers.map(\.0) == [7] && a.answers.map(\.1) == [4])
        #expect(b.answers.map(\.0) == [7] && b.answers.map(\.1) == [5])
        #expect(c.inFlight == 0)
        #expect(f.worker.clusters[0].stats.byStatus == [4: 1, 5: 1])
    }

    @Test func callsInFlightFailWithTheirOwnIdsWhenTheUpstreamCloses() throws {
        let f = Fixture()
        let c = try f.connection()
        let caller = ToyCaller()
        for id in [1, 2, 3] as [UInt32] { _ = f.call(c, from: caller, id: id) }
        _ = f.upstreamFrames(3)
        close(f.server.accepted.removeFirst())
        f.driver.run { caller.failures.count == 3 }
        #expect(caller.failures.map(\.0).sorted() == [1, 2, 3])
        #expect(caller.failures.allSatisfy { $0.1 == "upstream_reset" })
        // The closed connection left the pool: the next call opens a new one.
        #expect(try f.connection() !== c)
    }

    @Test func aCallPastItsDeadlineFailsAsATimeoutAndALateAnswerIsDropped() throws {
        let f = Fixture()
        let c = try f.connection()
        let caller = ToyCaller()
        let wireID = f.call(c, from: caller, id: 9, deadlineMS: 100)
        _ = f.upstreamFrames(1)
        #expect(f.driver.run(timeoutMS: 2000) { caller.failures.count == 1 })
        #expect(caller.failures.first?.1 == "upstream_request_timeout")
        peerWrite(f.server.accepted[0], ToyMux.frame(kind: 0, id: wireID))
        f.driver.run(forMS: 100)
        #expect(caller.answers.isEmpty, "an answer after the timeout reached the caller")
        #expect(f.worker.clusters[0].stats.timeouts == 1)
    }

    @Test func aFullConnectionRefusesTheNextCallAtOnce() throws {
        let f = Fixture(maxConcurrent: 2)
        let c = try f.connection()
        let caller = ToyCaller()
        _ = f.call(c, from: caller, id: 1)
        _ = f.call(c, from: caller, id: 2)
        guard case .failed(let error) = f.pool.connection(clusterIndex: 0, host: 0) else {
            Issue.record("a third call got a connection past the bound"); return
        }
        #expect(error.code == "upstream_overloaded")
        // One-way calls keep nothing and do not count.
        _ = f.call(c, from: nil, id: 3)
        #expect(c.inFlight == 2)
    }

    @Test func aConnectToAnUnreachableHostFailsItsCalls() throws {
        // A port nothing listens on: the connect is refused, the calls fail as connect failures.
        let f = Fixture()
        let deadHost = HostConfig(address: SocketAddress.parse("127.0.0.1:1")!, hostname: "", weight: 1, metadata: [:])
        let config = ClusterConfig(name: "dead", lbType: "LB_ROUNDROBIN", hosts: [deadHost], connectTimeoutMS: 500, idleTimeoutMS: 60_000,
                                   maxRequestsPerConnection: 1024, connectionBufferLimit: 0, maxIdlePerHost: 1)
        let worker = Worker(id: 0, clusters: [config], logger: Logger(level: .fatal, fd: 2))
        let pool = MultiplexPool<ToyMux>(settings: MultiplexSettings(), worker: worker)
        guard case .connection(let c) = pool.connection(clusterIndex: 0, host: 0) else { return }   // refused at once is fine too
        let caller = ToyCaller()
        _ = c.register(caller: caller, originalID: 4, context: 1, deadline: worker.loop.nowMS + 60_000)
        #expect(LoopDriver(worker.loop).run { caller.failures.count == 1 })
        #expect(caller.failures.first?.1 == "upstream_connect_failed")
        #expect(worker.clusters[0].stats.connectFailures == 1)
        pool.closeAll()
        _ = f
    }
}
