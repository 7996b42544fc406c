import Glibc
import Testing
@testable import TernCore

/// A protocol whose connections start with its magic word; its session just records that it started.
struct PingProtocol: StreamProtocol {
    let started: Box
    var magicWord = "PING"
    var name: String { magicWord }
    func sniff(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> SniffResult {
        let magic = Array(magicWord.utf8)
        for i in 0..<min(count, 4) where bytes[i] != magic[i] { return .noMatch }
        return count >= 4 ? .match : .needMoreBytes
    }
    func startSession(connection: Connection, forwarder: Forwarder) { started.count += 1; connection.close() }
}

final class Box: @unchecked Sendable { var count = 0 }

/// The filter after the proxy: takes the connection and keeps the bytes it finds.
final class CatchAllFilter: NetworkFilter, ConnectionDelegate {
    var taken: [Connection] = []
    var bytes: [UInt8] = []
    func onAccept(_ connection: Connection) -> Bool {
        taken.append(connection)
        connection.delegate = self
        if let input = connection.input { bytes += input.readableArray(); input.consume(input.readableBytes) }
        return true
    }
    func connectionReadable(_ connection: Connection, eof: Bool) {
        if let input = connection.input { bytes += input.readableArray(); input.consume(input.readableBytes) }
    }
    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, reason: CloseReason) {}
}

struct NetworkFilterChainTests {
    final class Fixture {
        let worker = Worker(id: 0, clusters: [], logger: Logger(level: .fatal, fd: 2))
        let started = Box()
        let next = CatchAllFilter()
        let chain: NetworkFilterChain
        let listener: Listener
        lazy var driver = LoopDriver(worker.loop)

        init(fallback: Bool) throws {
            let settings = ProxySettings(listenerName: "l", routes: RouteTable(name: "r", virtualHosts: [], domains: []),
                                         limits: ProtocolLimits(), idleTimeoutMS: 5000, defaultRouteTimeoutMS: 0,
                                         fallbackToNextFilter: fallback)
            // Two protocols, so the proxy filter sniffs with or without the fallback.
            let proxy = ProxyFilter(worker: worker, settings: settings,
                                    protocols: [PingProtocol(started: started), PingProtocol(started: started, magicWord: "PONG")])
            chain = NetworkFilterChain(filters: [proxy, next])
            listener = try Listener(name: "l", address: SocketAddress.parse("127.0.0.1:0")!, loop: worker.loop,
                                    buffers: worker.buffers, handler: chain)
        }

        /// A client on a socketpair whose other end is handed to the chain as if accepted.
        func connect() -> Int32 {
            let (mine, peer) = socketPair()
            chain.accepted(Connection(fd: mine, loop: worker.loop, buffers: worker.buffers), listener: listener)
            return peer
        }
    }

    @Test func unknownBytesGoToTheNextFilterIntactWithTheFallback() throws {
        let f = try Fixture(fallback: true)
        let peer = f.connect()
        defer { close(peer) }
        peerWrite(peer, Array("SELECT 1;\r\n".utf8))
        #expect(f.driver.run { f.next.taken.count == 1 })
        peerWrite(peer, Array("more".utf8))
        #expect(f.driver.run { f.next.bytes.count == 15 })
        #expect(f.next.bytes == Array("SELECT 1;\r\nmore".utf8), "the next filter saw \(String(decoding: f.next.bytes, as: UTF8.self))")
        #expect(f.started.count == 0)
        #expect(f.worker.sessionCount == 0, "the sniffer still counts as a session")
    }

    @Test func aKnownProtocolStillGoesToItsSessionWithTheFallback() throws {
        let f = try Fixture(fallback: true)
        let peer = f.connect()
        defer { close(peer) }
        peerWrite(peer, Array("PING".utf8))
        #expect(f.driver.run { f.started.count == 1 })
        #expect(f.next.taken.isEmpty)
    }

    @Test func withoutTheFallbackUnknownBytesCloseTheConnection() throws {
        let f = try Fixture(fallback: false)
        let peer = f.connect()
        defer { close(peer) }
        peerWrite(peer, Array("SELECT 1;\r\n".utf8))
        #expect(f.driver.run { peerRead(peer).eof })
        #expect(f.next.taken.isEmpty)
    }
}
