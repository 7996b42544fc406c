import Glibc

/// An IPv4 or IPv6 socket address, parsed once at config load.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public let family: Int32
    public let port: UInt16
    fileprivate let ipv4: in_addr_t
    fileprivate let ipv6: (UInt64, UInt64)
    public let description: String

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.family == b.family && a.port == b.port && a.ipv4 == b.ipv4 && a.ipv6 == b.ipv6
    }

    /// Parses "ip:port", "[ipv6]:port" or "localhost:port".
    public static func parse(_ text: String) -> SocketAddress? {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portText) else { return nil }
        if host == "localhost" { host = "127.0.0.1" }
        if host.isEmpty { host = "0.0.0.0" }
        var v4 = in_addr()
        if inet_pton(AF_INET, String(host), &v4) == 1 {
            return SocketAddress(family: AF_INET, port: port, ipv4: v4.s_addr, ipv6: (0, 0), description: text)
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, String(host), &v6) == 1 {
            let words = withUnsafeBytes(of: v6) { ($0.load(fromByteOffset: 0, as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
            return SocketAddress(family: AF_INET6, port: port, ipv4: 0, ipv6: words, description: text)
        }
        return nil
    }

    /// Calls `body` with a sockaddr pointer and length for this address.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        if family == AF_INET {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = ipv4
            return withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) {
            $0.storeBytes(of: ipv6.0, toByteOffset: 0, as: UInt64.self)
            $0.storeBytes(of: ipv6.1, toByteOffset: 8, as: UInt64.self)
        }
        return withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
    }
}
