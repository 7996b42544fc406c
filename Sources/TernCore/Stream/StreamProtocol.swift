/// The answer of a protocol to the first bytes of a connection (`Auto` sniffing).
public enum SniffResult: Sendable { case match, noMatch, needMoreBytes }

/// A stream protocol (HTTP/1, bolt, ...): it recognises its first bytes and runs a downstream
/// session on a connection. New protocols register by name in the server's registry.
public protocol StreamProtocol: Sendable {
    var name: String { get }
    func sniff(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> SniffResult
    /// Takes over `connection` (becomes its delegate); bytes already read stay in its input.
    func startSession(connection: Connection, forwarder: Forwarder)
}

/// A network filter: sees each accepted connection in chain order. A terminal filter (proxy,
/// tcp_proxy) takes the connection and stops the chain.
public protocol NetworkFilter: AnyObject {
    func onAccept(_ connection: Connection) -> Bool   // true: handled, stop the chain
    /// The chain the filter belongs to, so it can hand a connection on (`passOn`).
    func attached(to chain: NetworkFilterChain)
}

extension NetworkFilter {
    public func attached(to chain: NetworkFilterChain) {}
}

/// The filters of one listener on one worker.
public final class NetworkFilterChain: AcceptHandler {
    public let filters: [NetworkFilter]
    /// This worker's counters for the listener the chain belongs to.
    public let counters: ListenerCounters
    public init(filters: [NetworkFilter], counters: ListenerCounters = ListenerCounters()) {
        self.filters = filters
        self.counters = counters
        for f in filters { f.attached(to: self) }
    }
    public func accepted(_ connection: Connection, listener: Listener) {
        counters.stats.connectionsTotal &+= 1
        counters.stats.connectionsActive &+= 1
        connection.counters = counters
        run(connection, from: 0)
    }

    /// A filter that took the connection hands it to the filters after it, with the bytes it
    /// already read still in the connection's input (the proxy filter's fallback for unknown
    /// protocols). No filter after it takes the connection: it is closed.
    public func passOn(_ connection: Connection, after filter: NetworkFilter) {
        guard let index = filters.firstIndex(where: { $0 === filter }) else { connection.close(); return }
        run(connection, from: index + 1)
    }

    private func run(_ connection: Connection, from start: Int) {
        for f in filters[start...] where f.onAccept(connection) { return }
        connection.close()
    }
}

/// The `proxy` network filter: hands the connection to its downstream protocol, or sniffs the
/// first bytes among several (`Auto`).
public final class ProxyFilter: NetworkFilter {
    let worker: Worker
    let forwarder: Forwarder
    let protocols: [StreamProtocol]
    var settings: ProxySettings { _read { yield forwarder.settings } }
    weak var chain: NetworkFilterChain?

    public func attached(to chain: NetworkFilterChain) { self.chain = chain }

    public init(worker: Worker, settings: ProxySettings, protocols: [StreamProtocol]) {
        self.worker = worker
        forwarder = Forwarder(worker: worker, settings: settings)
        self.protocols = protocols
    }

    public func onAccept(_ connection: Connection) -> Bool {
        // With a fallback, even one protocol is sniffed: other bytes go to the next filter.
        if protocols.count == 1 && !settings.fallbackToNextFilter {
            protocols[0].startSession(connection: connection, forwarder: forwarder)
        } else {
            let sniffer = ProtocolSniffer(filter: self, connection: connection)
            connection.delegate = sniffer
            worker.add(sniffer, fd: connection.fd)
        }
        return true
    }
}

/// Holds a new connection until its first bytes name a protocol. A client that stays silent is
/// let go after the idle timeout, one that started but does not finish after the header timeout.
final class ProtocolSniffer: ConnectionDelegate, DownstreamSession, TimerTarget {
    let filter: ProxyFilter
    let connection: Connection
    private var timer: LoopTimer?
    private var firstByteMS: Int64 = 0

    init(filter: ProxyFilter, connection: Connection) {
        self.filter = filter
        self.connection = connection
        armTimer()
    }

    deinit { if let t = timer { filter.worker.loop.timers.cancel(t) } }

    private var deadline: Int64? {
        let s = filter.settings
        let idle: Int64? = s.idleTimeoutMS > 0 ? connection.lastProgressMS + s.idleTimeoutMS : nil
        guard firstByteMS > 0 && s.headerTimeoutMS > 0 else { return idle }
        return min(firstByteMS + s.headerTimeoutMS, idle ?? Int64.max)
    }

    private func armTimer() {
        guard let deadline else { return }
        if timer == nil { timer = LoopTimer(target: self) }
        filter.worker.loop.timers.arm(timer!, at: deadline)
    }

    func timerFired(_ timer: LoopTimer) {
        guard connection.state == .open, connection.delegate === self else { return }
        guard let deadline, deadline <= filter.worker.loop.nowMS else { armTimer(); return }
        filter.worker.logger.error("proxy", "listener \(filter.settings.listenerName): no protocol recognised in time (\(connection.input?.readableBytes ?? 0) byte(s) received); closing")
        connection.close()
    }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        guard let input = connection.input, input.readableBytes > 0 else { connection.close(); return }
        if firstByteMS == 0 { firstByteMS = filter.worker.loop.nowMS; armTimer() }
        var undecided = false
        for p in filter.protocols {
            switch p.sniff(input.readPointer, input.readableBytes) {
            case .match:
                detach()
                p.startSession(connection: connection, forwarder: filter.forwarder)
                connection.delegate?.connectionReadable(connection, eof: eof)
                return
            case .needMoreBytes: undecided = true
            case .noMatch: break
            }
        }
        if !undecided || eof || input.readableBytes > 64 {
            if filter.settings.fallbackToNextFilter, let chain = filter.chain {
                filter.worker.logger.debug("proxy", "listener \(filter.settings.listenerName): unknown protocol; handing the connection to the next filter")
                detach()
                connection.delegate = nil
                chain.passOn(connection, after: filter)
                return
            }
            filter.worker.logger.error("proxy", "listener \(filter.settings.listenerName): unknown protocol in first bytes, closing")
            connection.close()
        }
    }

    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {}
    func connectionClosed(_ connection: Connection, reason: CloseReason) { detach() }

    /// The sniffer's work is over (a protocol took the connection, the next filter did, or it closed).
    private func detach() {
        if let t = timer { filter.worker.loop.timers.cancel(t) }
        filter.worker.remove(fd: connection.fd)
    }
    func beginDrain() { connection.close() }
}
