import CTernShim
import Glibc
import Synchronization
import TernCore
import TernHTTP1

/// The admin thread: its own event loop serving the admin API and the Prometheus scrape, so a
/// slow or hostile admin client never takes time from a worker's loop. It reads the workers'
/// counters only through their task queues (StatsCollection).
final class AdminServer {
    let loop = EventLoop()
    let buffers = BufferPool(bufferSize: 16384, maxFree: 8)
    let api: AdminAPI
    var listeners: [Listener] = []

    init(api: AdminAPI) { self.api = api }

    /// Opens the admin and Prometheus listeners; the error names the config key that failed.
    /// `probe`: refuse a port in use (off while taking over from a running Tern, whose admin
    /// listener shares the port until it exits).
    func open(_ plan: AdminPlan, logger: Logger, probe: Bool = true) -> String? {
        var sites: [(key: String, address: SocketAddress, site: AdminSite)] = []
        if let a = plan.address { sites.append(("admin", a, .admin)) }
        if let p = plan.prometheus { sites.append(("metrics.sinks[prometheus]", p.address, .prometheus(endpoint: p.endpoint))) }
        for s in sites {
            if probe && s.address.port != 0, let problem = probeBind(s.address) { return "\(s.key): \(problem)" }
            do {
                let acceptor = AdminAcceptor(server: self, site: s.site)
                let l = try Listener(name: s.key, address: s.address, loop: loop, buffers: buffers, handler: acceptor, backlog: 64)
                l.onAcceptError = { logger.error("admin", $0) }
                listeners.append(l)
                let bound = SocketAddress.local(of: l.fd)?.description ?? s.address.description
                logger.info("admin", s.site.isAdmin ? "admin API listening on \(bound)" : "prometheus metrics on http://\(bound)\(s.site.endpoint)")
            } catch {
                return "\(s.key): \(error)"
            }
        }
        return nil
    }
}

enum AdminSite {
    case admin
    case prometheus(endpoint: String)
    var isAdmin: Bool { if case .admin = self { return true } else { return false } }
    var endpoint: String { if case .prometheus(let e) = self { return e } else { return "" } }
}

final class AdminAcceptor: AcceptHandler {
    unowned let server: AdminServer
    let site: AdminSite
    init(server: AdminServer, site: AdminSite) { self.server = server; self.site = site }
    func accepted(_ connection: Connection, listener: Listener) {
        let session = AdminSession(connection: connection, server: server, site: site)
        session.retain = session   // until its connection closes
    }
}

/// One request to the admin API, its bytes copied out of the connection (the admin path is not
/// the hot path: plain Strings are fine here).
struct AdminRequest {
    let method: String
    let path: String
    /// The query string without the `?`, as sent.
    let query: String
    let body: [UInt8]

    /// `key=value` pairs of the query (percent-decoding is not needed for the names Tern takes).
    var queryItems: [(name: String, value: String)] {
        query.split(separator: "&").map { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }
    }
}

struct AdminResponse {
    var status: Int
    var contentType: String
    var body: [UInt8]
    var allow: String? = nil

    static func text(_ status: Int, _ s: String) -> AdminResponse { AdminResponse(status: status, contentType: "text/plain; charset=utf-8", body: Array(s.utf8)) }
    static func json(_ status: Int, _ s: String) -> AdminResponse { AdminResponse(status: status, contentType: "application/json", body: Array(s.utf8)) }
    /// MOSN's error body shape: `{"error": "…"}`.
    static func error(_ status: Int, _ message: String) -> AdminResponse { json(status, "{\"error\": \(JSONText.quote(message))}\n") }
}

/// One admin client connection: requests one at a time (pipelined ones wait their turn), HTTP/1.1
/// keep-alive, bounded head and body, closed after `idleTimeoutMS` without a request.
final class AdminSession: ConnectionDelegate, TimerTarget {
    static let limits = HTTPLimits(maxHeadBytes: 8192, maxHeaderCount: 64)
    static let maxBodyBytes = 64 * 1024
    static let idleTimeoutMS: Int64 = 60_000

    let connection: Connection
    unowned let server: AdminServer
    let site: AdminSite
    var retain: AdminSession?
    private let head = HTTPHead()
    private var scanned = 0
    /// A request is being answered (counters being collected): the next one waits.
    private var busy = false
    private var closeAfterAnswer = false
    /// The client closed its side: what it sent is answered, then the connection is closed.
    private var peerClosed = false
    private var idleTimer: LoopTimer!
    private var lastActivityMS: Int64

    init(connection: Connection, server: AdminServer, site: AdminSite) {
        self.connection = connection
        self.server = server
        self.site = site
        lastActivityMS = server.loop.nowMS
        idleTimer = LoopTimer(target: self)
        connection.delegate = self
        server.loop.timers.arm(idleTimer, at: lastActivityMS + AdminSession.idleTimeoutMS)
    }

    func connectionReadable(_ connection: Connection, eof: Bool) {
        lastActivityMS = server.loop.nowMS
        if eof { peerClosed = true }
        process()
    }

    func connectionConnected(_ connection: Connection) {}
    func connectionWriteDrained(_ connection: Connection) {}

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        server.loop.timers.cancel(idleTimer)
        retain = nil
    }

    func timerFired(_ timer: LoopTimer) {
        let idleUntil = lastActivityMS + AdminSession.idleTimeoutMS
        if busy || server.loop.nowMS < idleUntil {
            server.loop.timers.arm(idleTimer, at: max(idleUntil, server.loop.nowMS + 1000))
            return
        }
        connection.close()
    }

    /// Answers every complete request read so far, one at a time; closes once a client that shut
    /// its side has nothing more to be answered.
    private func process() {
        answerCompleteRequests()
        if peerClosed && !busy && connection.state == .open { connection.closeWhenFlushed() }
    }

    private func answerCompleteRequests() {
        while !busy, connection.state == .open, !closeAfterAnswer, let input = connection.input, input.readableBytes > 0 {
            let p = UnsafePointer(input.readPointer)
            let n = input.readableBytes
            switch HTTPParser.parseRequest(p, n, limits: AdminSession.limits, head: head, scanned: &scanned) {
            case .needMore:
                return
            case .error(let e):
                input.clear()
                answer(.error(e.status, e.reason), close: true)
                return
            case .complete:
                var bodyLength = 0
                switch head.framing {
                case .none: break
                case .contentLength(let length):
                    guard length <= AdminSession.maxBodyBytes else {
                        input.clear()
                        answer(.error(413, "request body larger than \(AdminSession.maxBodyBytes) bytes"), close: true)
                        return
                    }
                    bodyLength = Int(length)
                case .chunked, .untilClose:
                    input.clear()
                    answer(.error(411, "send the body with a Content-Length"), close: true)
                    return
                }
                guard n >= head.headLength + bodyLength else { scanned = 0; return }   // the body is still coming
                func text(_ start: Int, _ count: Int) -> String { String(decoding: UnsafeBufferPointer(start: p + start, count: count), as: UTF8.self) }
                let pathEnd = head.targetStart + head.pathLength
                let request = AdminRequest(method: text(head.methodStart, head.methodLength),
                                           path: text(head.targetStart, head.pathLength),
                                           query: head.targetLength > head.pathLength ? text(pathEnd + 1, head.targetLength - head.pathLength - 1) : "",
                                           body: Array(UnsafeBufferPointer(start: p + head.headLength, count: bodyLength)))
                let keepAlive = head.keepAlive
                input.consume(head.headLength + bodyLength)
                busy = true
                server.api.handle(request, site: site, loop: server.loop) { [self] response in
                    busy = false
                    answer(response, close: !keepAlive)
                    if connection.state == .open && !closeAfterAnswer { process() }
                }
            }
        }
    }

    private func answer(_ response: AdminResponse, close: Bool) {
        lastActivityMS = server.loop.nowMS
        guard connection.state == .open else { return }
        if close { closeAfterAnswer = true }
        let out = connection.outputBuffer
        out.write("HTTP/1.1 ")
        out.writeDecimal(response.status)
        out.writeByte(32)
        out.write(string: StatusText.reason(response.status))
        out.write("\r\ncontent-type: ")
        out.write(string: response.contentType)
        out.write("\r\ncontent-length: ")
        out.writeDecimal(response.body.count)
        if let allow = response.allow { out.write("\r\nallow: "); out.write(string: allow) }
        if closeAfterAnswer { out.write("\r\nconnection: close") }
        out.write("\r\n\r\n")
        out.write(response.body)
        connection.flush()
        if closeAfterAnswer { connection.closeWhenFlushed() }
    }
}

extension Server {
    /// Starts the admin thread (before the workers: a port in use fails the start before any
    /// traffic is taken); nil when its listeners are open.
    func startAdmin() -> String? {
        final class Outcome: Sendable { let value = Mutex<(done: Bool, failure: String?)>((false, nil)) }
        let outcome = Outcome()
        startThread(name: "tern-admin") { [self] in
            let api = AdminAPI(plan: { [self] in current.withLock { $0 } }, logger: logger, workers: { [self] in remoteQueues },
                               isDraining: { [self] in draining.load(ordering: .relaxed) })
            let admin = AdminServer(api: api)
            let failure = admin.open(plan.admin, logger: logger, probe: inherited == nil)
            outcome.value.withLock { $0 = (true, failure) }
            if failure == nil { admin.loop.run() }
        }
        let deadline = tern_monotonic_ms() + 10_000
        while tern_monotonic_ms() < deadline {
            let state = outcome.value.withLock { $0 }
            if state.done { return state.failure }
            usleep(1000)
        }
        return "the admin thread did not start within 10 s"
    }
}
