import CTernShim
import Glibc

/// A listener filter: sees each accepted connection before any network filter does (MOSN's
/// `listener_filters`). It may annotate the connection; false closes it.
public protocol ListenerFilter: AnyObject {
    func onAccept(_ connection: Connection, listener: Listener) -> Bool
}

/// How a capturing listener learns where a connection was going.
public enum OriginalDestinationMode: String, Sendable {
    /// iptables REDIRECT (nat table): the kernel rewrote the destination to the listener; the
    /// original one is read back with SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6).
    case redirect
    /// iptables TPROXY (mangle table): the destination is untouched, so the accepted socket's
    /// own local address is where the client meant to connect. The listener is IP_TRANSPARENT.
    case tproxy
}

/// MOSN's `original_dst` listener filter: stores the original destination on the connection.
/// A failed lookup (a client that connected to the listener directly, with no NAT entry) leaves
/// it nil and the connection runs the capturing listener's own chain, as in MOSN.
public final class OriginalDestinationFilter: ListenerFilter {
    public let mode: OriginalDestinationMode
    let logger: Logger

    public init(mode: OriginalDestinationMode, logger: Logger) {
        self.mode = mode
        self.logger = logger
    }

    public func onAccept(_ connection: Connection, listener: Listener) -> Bool {
        switch mode {
        case .redirect:
            var storage = sockaddr_storage()
            var length = socklen_t(0)
            if tern_original_dst(connection.fd, listener.address.family, &storage, &length) == 0 {
                connection.originalDestination = SocketAddress(storage: storage)
            } else {
                let e = errno
                // ENOENT: conntrack has no entry, i.e. nobody redirected this connection.
                if e == ENOENT { logger.debug("listener", "listener \(listener.name): connection not redirected; its own filters run") }
                else { logger.error("listener", "listener \(listener.name): SO_ORIGINAL_DST failed: \(String(cString: strerror(e))); its own filters run") }
            }
        case .tproxy:
            // An IPv4 client on a dual-stack [::] listener has a v4-mapped local address.
            connection.originalDestination = SocketAddress.local(of: connection.fd)?.unmappingIPv4
            if connection.originalDestination == nil {
                logger.error("listener", "listener \(listener.name): getsockname failed: \(String(cString: strerror(errno))); its own filters run")
            }
        }
        // A client that connected to this listener itself was not intercepted, though conntrack
        // (REDIRECT) or the socket (TPROXY) still names an address: the listener's own. Kept, it
        // would send an ORIGINAL_DST cluster's tcp_proxy back into this listener, over and over.
        if let destination = connection.originalDestination, destination.port == listener.address.port,
           let local = SocketAddress.local(of: connection.fd)?.unmappingIPv4, local == destination {
            logger.debug("listener", "listener \(listener.name): connection made to the listener itself, not intercepted; its own filters run")
            connection.originalDestination = nil
        }
        return true
    }
}

/// A listener that owns an address for hand-off: connections whose original destination is that
/// address run its network filters, though it never listens itself (`bind_port: false`).
public struct HandOffTarget {
    public let name: String
    public let address: SocketAddress
    /// Takes connections to any address of its family on its port (0.0.0.0 / [::], or the
    /// loopback address with MOSN's `fallback_to_local`), when no listener owns the exact address.
    public let isPortFallback: Bool
    /// Its filter chain, or what comes before it (TLS on a listener that terminates TLS).
    public let entry: AcceptHandler
    public init(name: String, address: SocketAddress, isPortFallback: Bool, entry: AcceptHandler) {
        self.name = name; self.address = address; self.isPortFallback = isPortFallback; self.entry = entry
    }
}

/// accept → listener filters → network filter chain. With `handOff`, a connection whose original
/// destination one of the targets owns (exact ip:port first, then a fallback listener of that
/// port, as MOSN matches) runs that target's chain; otherwise (no match, no original
/// destination, or the capturing listener's own address) it runs `ownChain`. Handed-off
/// connections do not run listener filters again, so a capture can never loop.
public final class ListenerFilterStage: AcceptHandler {
    let filters: [ListenerFilter]
    let ownChain: AcceptHandler
    let targets: [HandOffTarget]
    let logger: Logger

    public init(filters: [ListenerFilter], ownChain: AcceptHandler, handOff targets: [HandOffTarget], logger: Logger) {
        self.filters = filters
        self.ownChain = ownChain
        self.targets = targets
        self.logger = logger
    }

    public func accepted(_ connection: Connection, listener: Listener) {
        for f in filters where !f.onAccept(connection, listener: listener) {
            connection.close()
            return
        }
        guard let destination = connection.originalDestination else {
            ownChain.accepted(connection, listener: listener)
            return
        }
        let target = owner(of: destination)
        if logger.enabled(.debug) {
            logger.debug("listener", "listener \(listener.name): original destination \(destination) -> \(target?.name ?? "own filters (no listener owns it)")")
        }
        (target?.entry ?? ownChain).accepted(connection, listener: listener)
    }

    /// The listener owning `destination`: exact address first, then the port's fallback.
    func owner(of destination: SocketAddress) -> HandOffTarget? {
        if let exact = targets.first(where: { $0.address == destination }) { return exact }
        return targets.last(where: { $0.isPortFallback && $0.address.port == destination.port && $0.address.family == destination.family })
    }
}
