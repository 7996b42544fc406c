import CTernShim
import Glibc

/// Receives accepted connections from a listener: the network filter chain's entry point.
public protocol AcceptHandler: AnyObject {
    func accepted(_ connection: Connection, listener: Listener)
}

public enum ListenError: Error, CustomStringConvertible {
    case socket(String, Int32)
    public var description: String {
        switch self { case .socket(let what, let e): return "\(what): \(String(cString: strerror(e)))" }
    }
}

/// One listening socket per worker (SO_REUSEPORT): the kernel spreads connections across workers.
public final class Listener: EventHandler {
    public let name: String
    public let address: SocketAddress
    public let fd: Int32
    public unowned let loop: EventLoop
    public unowned let buffers: BufferPool
    public let handler: AcceptHandler
    public private(set) var accepting = true

    public init(name: String, address: SocketAddress, loop: EventLoop, buffers: BufferPool, handler: AcceptHandler, backlog: Int32 = 1024) throws {
        let fd = tern_socket_tcp(address.family)
        guard fd >= 0 else { throw ListenError.socket("socket", errno) }
        guard tern_set_reuse(fd, 1) == 0 else { let e = errno; Glibc.close(fd); throw ListenError.socket("setsockopt", e) }
        let rc = address.withSockAddr { bind(fd, $0, $1) }
        guard rc == 0 else { let e = errno; Glibc.close(fd); throw ListenError.socket("bind \(address)", e) }
        guard listen(fd, backlog) == 0 else { let e = errno; Glibc.close(fd); throw ListenError.socket("listen \(address)", e) }
        self.name = name
        self.address = address
        self.fd = fd
        self.loop = loop
        self.buffers = buffers
        self.handler = handler
        loop.register(fd: fd, handler: self, events: Readiness.readable | Readiness.edgeTriggered)
    }

    public func handleEvents(_ events: UInt32) {
        while accepting {
            let client = tern_accept4(fd)
            if client < 0 {
                let e = errno
                if e == EINTR || e == ECONNABORTED { continue }
                break // EAGAIN, or EMFILE: the next edge retries
            }
            _ = tern_set_nodelay(client)
            handler.accepted(Connection(fd: client, loop: loop, buffers: buffers), listener: self)
        }
    }

    /// Stops accepting (drain on SIGTERM): the socket is closed so the kernel refuses new connections.
    public func stop() {
        guard accepting else { return }
        accepting = false
        loop.unregister(fd: fd)
        Glibc.close(fd)
    }
}
