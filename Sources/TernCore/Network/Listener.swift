import CTernShim
import Glibc

/// Receives accepted connections from a listener: the network filter chain's entry point.
public protocol AcceptHandler: AnyObject {
    func accepted(_ connection: Connection, listener: Listener)
}

public enum ListenError: Error, CustomStringConvertible {
    case socket(String, Int32)
    /// Not a failing call: the address is not Tern's to take (a live unix socket, a file).
    case refused(String)
    public var description: String {
        switch self {
        case .socket(let what, let e): return "\(what): \(String(cString: strerror(e)))"
        case .refused(let why): return why
        }
    }
}

/// One listening socket per worker: its own with SO_REUSEPORT for TCP (the kernel spreads
/// connections across workers), or its duplicate of the one unix socket (workers race to accept).
public final class Listener: EventHandler, TimerTarget {
    public let name: String
    public let address: SocketAddress
    public let fd: Int32
    public unowned let loop: EventLoop
    public unowned let buffers: BufferPool
    public let handler: AcceptHandler
    public private(set) var accepting = true
    private var retryTimer: LoopTimer?
    private var lastOutOfDescriptorsLog: Int64 = -1_000_000
    /// Optional: told when accept fails for lack of descriptors (logged at most once a second).
    public var onAcceptError: ((String) -> Void)?

    /// TCP only on TCP sockets: a unix socket has no Nagle to turn off.
    private let setsNoDelay: Bool

    /// Opens this worker's own TCP listening socket (SO_REUSEPORT). `transparent`: IP_TRANSPARENT,
    /// so connections iptables TPROXY steers here are accepted with the address the client
    /// dialled as their local address (needs CAP_NET_ADMIN).
    public convenience init(name: String, address: SocketAddress, loop: EventLoop, buffers: BufferPool, handler: AcceptHandler, backlog: Int32 = 1024,
                            transparent: Bool = false) throws {
        let fd = tern_socket_tcp(address.family)
        guard fd >= 0 else { throw ListenError.socket("socket", errno) }
        guard tern_set_reuse(fd, 1) == 0 else { let e = errno; Glibc.close(fd); throw ListenError.socket("setsockopt", e) }
        if transparent && tern_set_transparent(fd, address.family) != 0 {
            let e = errno; Glibc.close(fd); throw ListenError.socket("setsockopt IP_TRANSPARENT", e)
        }
        let rc = address.withSockAddr { bind(fd, $0, $1) }
        guard rc == 0 else { let e = errno; Glibc.close(fd); throw ListenError.socket("bind \(address)", e) }
        guard listen(fd, backlog) == 0 else { let e = errno; Glibc.close(fd); throw ListenError.socket("listen \(address)", e) }
        self.init(name: name, address: address, listeningDescriptor: fd, loop: loop, buffers: buffers, handler: handler)
    }

    /// Accepts on a socket already bound and listening (non-blocking), which this listener now
    /// owns and closes on `stop()`: a worker's duplicate of a shared unix socket.
    public init(name: String, address: SocketAddress, listeningDescriptor fd: Int32, loop: EventLoop, buffers: BufferPool, handler: AcceptHandler) {
        self.name = name
        self.address = address
        self.fd = fd
        self.loop = loop
        self.buffers = buffers
        self.handler = handler
        setsNoDelay = !address.isUnix
        loop.register(fd: fd, handler: self, events: Readiness.readable | Readiness.edgeTriggered)
    }

    public func handleEvents(_ events: UInt32) {
        while accepting {
            // A shared unix socket wakes every worker: the ones that lose the race get EAGAIN.
            let client = tern_accept4(fd)
            if client < 0 {
                let e = errno
                if e == EINTR || e == ECONNABORTED { continue }
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    // Edge-triggered: no new edge comes for connections already queued, so retry
                    // on a timer instead of leaving them in the backlog.
                    if loop.nowMS - lastOutOfDescriptorsLog >= 1000 {
                        lastOutOfDescriptorsLog = loop.nowMS
                        onAcceptError?("listener \(name): accept failed: \(String(cString: strerror(e))); retrying in 100 ms")
                    }
                    if retryTimer == nil { retryTimer = LoopTimer(target: self) }
                    loop.timers.arm(retryTimer!, at: loop.nowMS + 100)
                }
                break
            }
            if setsNoDelay { _ = tern_set_nodelay(client) }
            handler.accepted(Connection(fd: client, loop: loop, buffers: buffers), listener: self)
        }
    }

    public func timerFired(_ timer: LoopTimer) { if accepting { handleEvents(Readiness.readable) } }

    /// Stops accepting (drain on SIGTERM): the socket is closed so the kernel refuses new connections.
    public func stop() {
        guard accepting else { return }
        accepting = false
        if let t = retryTimer { loop.timers.cancel(t) }
        loop.unregister(fd: fd)
        Glibc.close(fd)
    }
}
