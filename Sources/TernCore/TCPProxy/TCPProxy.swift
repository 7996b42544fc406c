import Glibc

/// One `tcp_proxy` route: the cluster for connections whose source and destination match. An
/// empty list matches anything (MOSN's code matches nothing for an empty list, which makes a route
/// without addresses dead; Envoy and this treat it as "any").
public struct TCPProxyRoute: Sendable {
    public let clusterIndex: Int
    public let sources: [AddressRange]
    public let destinations: [AddressRange]
    public let sourcePorts: [ClosedRange<UInt16>]
    public let destinationPorts: [ClosedRange<UInt16>]

    public init(clusterIndex: Int, sources: [AddressRange] = [], destinations: [AddressRange] = [],
                sourcePorts: [ClosedRange<UInt16>] = [], destinationPorts: [ClosedRange<UInt16>] = []) {
        self.clusterIndex = clusterIndex
        self.sources = sources; self.destinations = destinations
        self.sourcePorts = sourcePorts; self.destinationPorts = destinationPorts
    }

    var needsSource: Bool { !sources.isEmpty || !sourcePorts.isEmpty }
    var needsDestination: Bool { !destinations.isEmpty || !destinationPorts.isEmpty }

    public func matches(source: SocketAddress?, destination: SocketAddress?) -> Bool {
        TCPProxyRoute.match(source, sources, sourcePorts) && TCPProxyRoute.match(destination, destinations, destinationPorts)
    }

    private static func match(_ address: SocketAddress?, _ ranges: [AddressRange], _ ports: [ClosedRange<UInt16>]) -> Bool {
        if ranges.isEmpty && ports.isEmpty { return true }
        guard let address else { return false }
        if !ranges.isEmpty && !ranges.contains(where: { $0.contains(address) }) { return false }
        if !ports.isEmpty && !ports.contains(where: { $0.contains(address.port) }) { return false }
        return true
    }
}

/// When a tcp_proxy pair moves its bytes with splice(2) (a pipe per direction, no user-space
/// copy) instead of through pooled buffers: `TERN_TCP_SPLICE` in the environment, read once at
/// the first tcp_proxy connection. See docs/benchmarks.md for the numbers behind the default.
/// Copies are the default: on loopback (a sidecar's leg to its app) they moved bulk bytes faster
/// and cost the endpoints less CPU; splice saves the proxy itself about a third of its CPU per GB.
enum TCPProxySpliceMode {
    /// Unset, or any other value (the default): copies only.
    case never
    /// `1`: from the first byte.
    case always
    /// `bulk`: copies, then splice once the pair has moved `bulkBytes` and a read filled a whole
    /// 64 KiB batch, so chatty and idle pairs never hold pipes.
    case afterBulk

    static let bulkBytes = 1 << 20

    static let current: TCPProxySpliceMode = {
        guard let value = getenv("TERN_TCP_SPLICE") else { return .never }
        if strcmp(value, "1") == 0 { return .always }
        if strcmp(value, "bulk") == 0 { return .afterBulk }
        return .never
    }()
}

/// Read-only settings of one `tcp_proxy` filter, shared by all workers.
public struct TCPProxySettings: Sendable {
    public let listenerName: String
    /// MOSN's `stat_prefix`: names the filter in log lines.
    public let statPrefix: String
    /// In order; the first that matches picks the cluster. MOSN's `cluster` key is one route
    /// that matches everything (and, as in MOSN, makes `routes` unused).
    public let routes: [TCPProxyRoute]
    /// A pair with no byte moving either way for this long is closed; 0: never.
    public let idleTimeoutMS: Int64
    /// Connect tries per client connection, each to a host the balancer picks; nil: MOSN's
    /// default, one per host up to 3.
    public let maxConnectAttempts: Int?

    public init(listenerName: String, statPrefix: String, routes: [TCPProxyRoute], idleTimeoutMS: Int64, maxConnectAttempts: Int?) {
        self.listenerName = listenerName; self.statPrefix = statPrefix; self.routes = routes
        self.idleTimeoutMS = idleTimeoutMS; self.maxConnectAttempts = maxConnectAttempts
    }
}

/// The `tcp_proxy` network filter (terminal): each accepted connection gets an upstream
/// connection and the bytes are copied both ways (`TCPProxySession`).
public final class TCPProxyFilter: NetworkFilter {
    let worker: Worker
    let settings: TCPProxySettings

    public init(worker: Worker, settings: TCPProxySettings) {
        self.worker = worker
        self.settings = settings
    }

    public func onAccept(_ connection: Connection) -> Bool {
        TCPProxySession(filter: self, downstream: connection).start()
        return true
    }

    /// The cluster for a connection: the first route that matches its addresses.
    func cluster(for connection: Connection) -> ClusterRuntime? {
        var source: SocketAddress?, destination: SocketAddress?
        var looked = (source: false, destination: false)
        for route in settings.routes {
            if route.needsSource && !looked.source { source = SocketAddress.peer(of: connection.fd); looked.source = true }
            if route.needsDestination && !looked.destination {
                // An intercepted connection is matched on where the client meant to go, as MOSN does.
                destination = connection.originalDestination ?? SocketAddress.local(of: connection.fd)
                looked.destination = true
            }
            if route.matches(source: source, destination: destination) { return worker.clusters[route.clusterIndex] }
        }
        return nil
    }
}

/// One client connection and its upstream connection. The bytes read on one side are handed to
/// the other side's output as they are (the buffer changes hands when the output is empty);
/// when a side's output passes its high watermark the other side stops reading until it drains,
/// so a fast sender never makes Tern buffer more than a watermark per direction. A FIN on one
/// side is passed on as a FIN (half-close) while the other direction keeps flowing; the pair
/// closes when both directions have ended, or at once with a reset when either side fails.
final class TCPProxySession: ConnectionDelegate, DownstreamSession, TimerTarget {
    /// connecting → streaming → closed. While connecting, the client's bytes wait in its input
    /// (and in the kernel: reading is paused); a connect failure moves to the next host.
    enum Phase { case connecting, streaming, closed }

    let filter: TCPProxyFilter
    let downstream: Connection
    private var upstream: Connection?
    private var cluster: ClusterRuntime?
    private var upstreamName = ""
    private var attemptsLeft = 0
    /// Hosts whose connect failed for this client: a retry goes elsewhere while any host is left.
    private var failedHosts: [Int] = []
    private var hostIndex = -1
    private var bytesFromClient = 0, bytesToClient = 0
    private var phase = Phase.connecting
    private var idleTimer: LoopTimer?
    /// Set once the pair moves its bytes with splice(2) (`TCPProxySpliceMode`).
    private var spliced: SplicedPair?
    /// The session keeps itself alive until both connections are closed: connections hold their
    /// delegate weakly, and the worker forgets the session as soon as the client's side is closed.
    private var keepAlive: TCPProxySession?
    private var worker: Worker { filter.worker }
    private var settings: TCPProxySettings { filter.settings }

    init(filter: TCPProxyFilter, downstream: Connection) {
        self.filter = filter
        self.downstream = downstream
    }

    func start() {
        keepAlive = self
        downstream.delegate = self
        downstream.pauseReading()
        worker.add(self, fd: downstream.fd)
        guard let cluster = filter.cluster(for: downstream) else {
            worker.logger.info("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): no route matches the connection; closing")
            downstream.close()
            return
        }
        self.cluster = cluster
        let hosts = cluster.config.hosts.count
        attemptsLeft = cluster.config.originalDestination ? 1 : (settings.maxConnectAttempts ?? min(max(hosts, 1), 3))
        connectNext()
    }

    /// Starts a connect to the next host; on failure to even start one, tries the next.
    private func connectNext() {
        guard let cluster else { return }
        while attemptsLeft > 0 && phase == .connecting && downstream.state == .open {
            attemptsLeft -= 1
            let address: SocketAddress
            if cluster.config.originalDestination {
                guard let original = downstream.originalDestination else {
                    worker.logger.error("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): cluster \(cluster.config.name) is ORIGINAL_DST but the connection has no original destination (no original_dst listener filter ran); closing")
                    downstream.close()
                    return
                }
                address = original
            } else {
                guard var host = cluster.chooseHost(.all, LoadBalancerContext(downstream: downstream)) else {
                    failed(.noHealthyHost(cluster: cluster.config.name))
                    return
                }
                let count = cluster.config.hosts.count
                if failedHosts.contains(host) && failedHosts.count < count {
                    while failedHosts.contains(host) { host = host + 1 == count ? 0 : host + 1 }
                }
                hostIndex = host
                address = cluster.config.hosts[host].address
            }
            upstreamName = address.description
            var refusal: StreamError = .connectFailed(host: upstreamName, reason: .connectFailed(errno))
            let connection: Connection?
            if cluster.config.originalDestination {
                connection = Connection.connect(to: address, loop: worker.loop, buffers: worker.buffers, timeoutMS: cluster.config.connectTimeoutMS)
                if connection == nil { refusal = .connectFailed(host: upstreamName, reason: .connectFailed(errno)) }
            } else {
                do {
                    connection = try Connection.connect(toHost: hostIndex, of: cluster.config, transports: cluster.transports, load: cluster.load,
                                                        loop: worker.loop, buffers: worker.buffers, forWaitingRequest: false)
                } catch {
                    connection = nil
                    switch error {
                    case .failed: refusal = .connectFailed(host: upstreamName, reason: .connectFailed(errno))
                    case .overflow(let limit): refusal = .overflow(cluster: cluster.config.name, limit: limit)
                    }
                }
            }
            if let c = connection {
                c.delegate = self
                upstream = c
                return
            }
            // connectFailed goes on to the next host itself (or gives up): this loop must not
            // start a second connection behind it.
            connectFailed(refusal)
            return
        }
    }

    private func connectFailed(_ error: StreamError) {
        cluster?.stats.record(error)
        upstream = nil
        if hostIndex >= 0 { failedHosts.append(hostIndex) }
        if attemptsLeft > 0 {
            worker.logger.warn("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): \(error.detail); trying another host")
            connectNext()
        } else {
            failed(error)
        }
    }

    /// No upstream: the client is closed (a TCP client has no other way to learn it).
    private func failed(_ error: StreamError) {
        worker.logger.error("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): \(error.code): \(error.detail); closing the client connection")
        downstream.close()
    }

    func connectionConnected(_ connection: Connection) {
        guard connection === upstream, phase == .connecting else { return }
        phase = .streaming
        cluster?.stats.connectionsOpened += 1
        worker.logger.debug("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): \(SocketAddress.peer(of: downstream.fd)?.description ?? "?") connected to \(upstreamName) (cluster \(cluster?.config.name ?? ""))")
        armIdleTimer()
        if TCPProxySpliceMode.current == .always && startSplicing() { return }
        downstream.resumeReading()
    }

    /// Hands both connections to a `SplicedPair`; false (the pair keeps copying) for a TLS
    /// connection or when no pipe can be made.
    private func startSplicing() -> Bool {
        guard let upstream, downstream.transport == nil, upstream.transport == nil,
              let pair = SplicedPair(client: downstream, upstream: upstream) else { return false }
        spliced = pair
        worker.logger.debug("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): pair with \(upstreamName) moves its bytes with splice(2) from here on")
        pair.start()
        return true
    }

    func connectionSocketReady(_ connection: Connection, readable: Bool, writable: Bool) {
        spliced?.socketReady(connection, readable: readable, writable: writable)
    }

    private func peer(of connection: Connection) -> Connection? { connection === downstream ? upstream : downstream }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        guard phase == .streaming, let other = peer(of: connection) else { return }
        // A FIN read before tcp_proxy took the connection (the Auto sniffer's fallback) was
        // delivered to the sniffer; the connection remembers it, so it is passed on here.
        let eof = eof || connection.inputEnded
        let count = connection.input?.readableBytes ?? 0
        if connection === downstream { bytesFromClient += count } else { bytesToClient += count }
        connection.forwardInput(to: other)
        guard other.state == .open else { return }
        if other.exceedsHighWatermark() { connection.pauseReading() }
        if eof {
            other.shutdownWriteWhenFlushed()
            if other.inputEnded { finishWhenFlushed() }
        } else if count >= Connection.readBatchLimit && bytesFromClient + bytesToClient >= TCPProxySpliceMode.bulkBytes
                    && TCPProxySpliceMode.current == .afterBulk && !other.inputEnded {
            // A bulk pair: splice from here on. The read loop below this call stops at the pause.
            connection.pauseReading()
            if !startSplicing() && !other.exceedsHighWatermark() { connection.resumeReading() }
        }
    }

    func connectionWriteDrained(_ connection: Connection) {
        guard phase == .streaming, spliced == nil, let other = peer(of: connection), !other.inputEnded else { return }
        other.resumeReading()
    }

    /// Both directions ended: each side closes once its last bytes (and FIN) are written.
    private func finishWhenFlushed() {
        downstream.closeWhenFlushed()
        upstream?.closeWhenFlushed()
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        if connection === downstream { worker.remove(fd: downstream.fd) }
        switch phase {
        case .connecting:
            if connection === upstream {
                switch reason {
                case .connectTimeout: connectFailed(.connectTimeout(host: upstreamName))
                case .localClose: break
                default: connectFailed(.connectFailed(host: upstreamName, reason: reason))
                }
                if upstream == nil && downstream.state != .open { end() }
            } else {
                upstream?.close()
                end()
            }
        case .streaming:
            let other = peer(of: connection)
            if connection === upstream, case .handshakeFailed(let why) = reason {
                // TCP connected but TLS did not: counted and logged as HTTP and bolt do (the
                // client is reset; its bytes may have been read, so no other host is tried).
                let error = StreamError.upstreamTLSFailed(host: upstreamName, why: why)
                cluster?.stats.record(error)
                worker.logger.warn("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): \(error.code): \(error.detail); resetting the client")
            }
            if reason != .localClose {
                // A reset or an error on one side: the other learns it as a reset, not as a clean end.
                worker.logger.debug("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): \(connection === downstream ? "client" : "upstream \(upstreamName)") closed with \(reason); resetting the other side")
                other?.abort()
            }
            if other == nil || other!.state == .closed { end() }
        case .closed:
            break
        }
    }

    /// The last thing any path calls: it lets go of the session.
    private func end() {
        guard phase != .closed else { return }
        if let pair = spliced {
            bytesFromClient += pair.fromClient.moved
            bytesToClient += pair.toClient.moved
            pair.close()
        }
        if phase == .streaming {
            worker.logger.debug("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): pair with \(upstreamName) closed; \(bytesFromClient) bytes from the client, \(bytesToClient) to it")
        }
        phase = .closed
        if let t = idleTimer { worker.loop.timers.cancel(t) }
        keepAlive = nil
    }

    private func armIdleTimer() {
        guard settings.idleTimeoutMS > 0 else { return }
        if idleTimer == nil { idleTimer = LoopTimer(target: self) }
        let last = max(downstream.lastProgressMS, upstream?.lastProgressMS ?? 0)
        worker.loop.timers.arm(idleTimer!, at: last + settings.idleTimeoutMS)
    }

    func timerFired(_ timer: LoopTimer) {
        guard phase == .streaming else { return }
        let last = max(downstream.lastProgressMS, upstream?.lastProgressMS ?? 0)
        if worker.loop.nowMS < last + settings.idleTimeoutMS { armIdleTimer(); return }
        worker.logger.info("tcp_proxy", "\(settings.statPrefix) listener \(settings.listenerName): \(StreamError.idleTimeout(host: upstreamName, ms: settings.idleTimeoutMS).detail); closing both sides")
        cluster?.stats.timeouts += 1
        // Closed here, not as a failure: the callbacks of the two closes find the phase over.
        let up = upstream
        withExtendedLifetime(self) {
            end()
            downstream.close()
            up?.close()
        }
    }

    /// Bytes carry no request boundaries Tern could wait for: a draining worker lets the pair
    /// run until it ends by itself or the drain timeout stops the process.
    func beginDrain() {}
}
