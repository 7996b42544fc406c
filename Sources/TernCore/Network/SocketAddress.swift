import Glibc

/// An IPv4, IPv6 or unix domain socket address, parsed once at config load.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public let family: Int32
    public let port: UInt16
    fileprivate let ipv4: in_addr_t
    fileprivate let ipv6: (UInt64, UInt64)
    /// AF_UNIX only: the path as written; a leading "@" names a Linux abstract socket (no file).
    public let unixPath: String?
    /// "ip:port" as written, or "unix:" and the path.
    public let description: String

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.family == b.family && a.port == b.port && a.ipv4 == b.ipv4 && a.ipv6 == b.ipv6 && a.unixPath == b.unixPath
    }

    public var isUnix: Bool { family == AF_UNIX }
    /// A unix socket in the abstract namespace: nothing on the filesystem to check or remove.
    public var isAbstractUnix: Bool { unixPath?.hasPrefix("@") == true }

    /// The longest path sun_path holds with its terminating NUL (107 bytes on Linux); an abstract
    /// name has the same room after its leading NUL.
    public static let maxUnixPathBytes = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    public enum UnixPathProblem: Error, Equatable, CustomStringConvertible {
        case empty
        case tooLong(bytes: Int)
        case containsNUL
        public var description: String {
            switch self {
            case .empty: return "empty unix socket path"
            case .tooLong(let n): return "unix socket path is \(n) bytes; at most \(SocketAddress.maxUnixPathBytes) fit in sun_path"
            case .containsNUL: return "unix socket path contains a NUL byte"
            }
        }
    }

    /// A unix domain socket address: a filesystem path, or "@name" for Linux's abstract namespace
    /// (as Go, and so MOSN, reads it).
    public static func unix(path: String) throws(UnixPathProblem) -> SocketAddress {
        let bytes = path.utf8.count - (path.hasPrefix("@") ? 1 : 0)
        if bytes == 0 { throw .empty }
        if path.utf8.contains(0) { throw .containsNUL }
        if bytes > maxUnixPathBytes { throw .tooLong(bytes: bytes) }
        return SocketAddress(family: AF_UNIX, port: 0, ipv4: 0, ipv6: (0, 0), unixPath: path, description: "unix:" + path)
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
            return SocketAddress(family: AF_INET, port: port, ipv4: v4.s_addr, ipv6: (0, 0), unixPath: nil, description: text)
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, String(host), &v6) == 1 {
            let words = withUnsafeBytes(of: v6) { ($0.load(fromByteOffset: 0, as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
            return SocketAddress(family: AF_INET6, port: port, ipv4: 0, ipv6: words, unixPath: nil, description: text)
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
        if family == AF_UNIX { return withUnixSockAddr(body) }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) {
            $0.storeBytes(of: ipv6.0, toByteOffset: 0, as: UInt64.self)
            $0.storeBytes(of: ipv6.1, toByteOffset: 8, as: UInt64.self)
        }
        return withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
    }

    /// sockaddr_un: the path and its NUL, or for "@name" a NUL and the name, with the length
    /// counting only the name (abstract names are not NUL-terminated).
    private func withUnixSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        let path = unixPath ?? ""
        let abstract = path.hasPrefix("@")
        // Copied straight from the string's UTF-8 (no array per connect); the length was checked at parse.
        let nameBytes = withUnsafeMutableBytes(of: &sun.sun_path) { raw in
            var i = abstract ? 1 : 0
            let end = abstract ? raw.count : raw.count - 1   // a path keeps room for its NUL
            for byte in path.utf8.dropFirst(abstract ? 1 : 0) where i < end { raw[i] = byte; i += 1 }
            return i
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path) ?? 2
        // A path counts its NUL; an abstract name is exactly its bytes after the leading NUL.
        let length = pathOffset + (abstract ? nameBytes : nameBytes + 1)
        return withUnsafePointer(to: &sun) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(length)) } }
    }
}

extension SocketAddress {
    /// The address the kernel filled in (accept, getpeername, getsockname, SO_ORIGINAL_DST); nil
    /// for families Tern does not route on.
    public init?(storage: sockaddr_storage) {
        var copy = storage
        let made: SocketAddress? = withUnsafePointer(to: &copy) { raw in
            switch Int32(raw.pointee.ss_family) {
            case AF_INET:
                return raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var addr = p.pointee.sin_addr
                    let port = UInt16(bigEndian: p.pointee.sin_port)
                    return SocketAddress(family: AF_INET, port: port, ipv4: addr.s_addr, ipv6: (0, 0), unixPath: nil,
                                         description: "\(presentation(AF_INET, &addr)):\(port)")
                }
            case AF_INET6:
                return raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var addr = p.pointee.sin6_addr
                    let port = UInt16(bigEndian: p.pointee.sin6_port)
                    let words = withUnsafeBytes(of: addr) { ($0.load(fromByteOffset: 0, as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
                    return SocketAddress(family: AF_INET6, port: port, ipv4: 0, ipv6: words, unixPath: nil,
                                         description: "[\(presentation(AF_INET6, &addr))]:\(port)")
                }
            case AF_UNIX:
                // A path, or an abstract name after a leading NUL (Tern's names hold no NUL).
                return raw.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { p -> SocketAddress? in
                    withUnsafeBytes(of: p.pointee.sun_path) { bytes -> SocketAddress? in
                        let abstract = bytes.first == 0
                        let name = bytes.dropFirst(abstract ? 1 : 0).prefix { $0 != 0 }
                        guard !name.isEmpty else { return nil }
                        return try? SocketAddress.unix(path: (abstract ? "@" : "") + String(decoding: name, as: UTF8.self))
                    }
                }
            default:
                return nil
            }
        }
        guard let made else { return nil }
        self = made
    }

    /// The far end of a connected socket (the client, for an accepted one).
    public static func peer(of fd: Int32) -> SocketAddress? {
        query(fd) { getpeername($0, $1, $2) }
    }

    /// The local end of a socket: for a TPROXY-intercepted connection, the original destination.
    public static func local(of fd: Int32) -> SocketAddress? {
        query(fd) { getsockname($0, $1, $2) }
    }

    private static func query(_ fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &length) } }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }

    /// The address's bits as one 128-bit number (IPv4 in the low 32 bits), most significant first.
    fileprivate var bits: (high: UInt64, low: UInt64) {
        if family == AF_INET { return (0, UInt64(UInt32(bigEndian: ipv4))) }
        return (UInt64(bigEndian: ipv6.0), UInt64(bigEndian: ipv6.1))
    }

    /// An IPv6 address of the form ::ffff:a.b.c.d (an IPv4 client on a dual-stack socket), as IPv4.
    fileprivate var unmappedIPv4: UInt64? {
        guard family == AF_INET6 else { return nil }
        let b = bits
        return b.high == 0 && b.low >> 32 == 0xffff ? b.low & 0xffff_ffff : nil
    }
}

/// `inet_ntop` text of a raw address (config-time and log-time only).
private func presentation(_ family: Int32, _ addr: inout in_addr) -> String {
    withUnsafePointer(to: &addr) { presentation(family, UnsafeRawPointer($0)) }
}

private func presentation(_ family: Int32, _ addr: inout in6_addr) -> String {
    withUnsafePointer(to: &addr) { presentation(family, UnsafeRawPointer($0)) }
}

private func presentation(_ family: Int32, _ raw: UnsafeRawPointer) -> String {
    var text = [CChar](repeating: 0, count: 64)
    _ = inet_ntop(family, raw, &text, socklen_t(text.count))
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A CIDR block (`10.0.0.0/8`, `fd00::/8`), MOSN's `{"address", "length"}`. An IPv4 block also
/// matches IPv4 clients seen through a dual-stack IPv6 socket (::ffff:a.b.c.d).
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    public let family: Int32
    public let length: Int
    fileprivate let network: (high: UInt64, low: UInt64)
    fileprivate let mask: (high: UInt64, low: UInt64)
    public let description: String

    public static func == (a: AddressRange, b: AddressRange) -> Bool {
        a.family == b.family && a.length == b.length && a.network == b.network
    }

    /// nil when `address` is not an IP literal or `length` is past the family's width.
    public init?(address: String, length: Int) {
        let probe = address.contains(":") ? "[\(address)]:0" : "\(address):0"
        guard let a = SocketAddress.parse(probe), address != "localhost" else { return nil }
        let width = a.family == AF_INET ? 32 : 128
        guard length >= 0 && length <= width else { return nil }
        family = a.family
        self.length = length
        let bitsFromTop = (width == 32 ? 96 : 0) + length
        func maskWord(_ from: Int) -> UInt64 {   // `from`: the word's first bit index (0 or 64)
            let n = min(max(bitsFromTop - from, 0), 64)
            return n == 0 ? 0 : ~UInt64(0) << (64 - n)
        }
        // IPv4 lives in the low 32 bits of the low word; the prefix counts from bit 96.
        mask = width == 32 ? (0, maskWord(64) & 0xffff_ffff) : (maskWord(0), maskWord(64))
        let b = a.bits
        network = (b.high & mask.high, b.low & mask.low)
        description = "\(address)/\(length)"
    }

    public func contains(_ address: SocketAddress) -> Bool {
        if address.isUnix { return false }   // a unix peer has no IP to match
        var b = address.bits
        if family == AF_INET {
            if address.family == AF_INET6 {
                guard let v4 = address.unmappedIPv4 else { return false }
                b = (0, v4)
            }
        } else if address.family != AF_INET6 {
            return false
        }
        return b.high & mask.high == network.high && b.low & mask.low == network.low
    }
}

extension SocketAddress {
    /// ::ffff:a.b.c.d:port (an IPv4 client seen through a dual-stack IPv6 socket) as a.b.c.d:port,
    /// so it matches IPv4 listeners; any other address unchanged.
    public var unmappingIPv4: SocketAddress {
        guard let v4 = unmappedIPv4 else { return self }
        let address = in_addr_t(UInt32(truncatingIfNeeded: v4).bigEndian)
        var text = in_addr(s_addr: address)
        return SocketAddress(family: AF_INET, port: port, ipv4: address, ipv6: (0, 0), unixPath: nil,
                             description: "\(presentation(AF_INET, &text)):\(port)")
    }

    /// 0.0.0.0 or [::]: a listener on it owns its port on every address of its family.
    public var isUnspecified: Bool {
        switch family {
        case AF_INET: return ipv4 == 0
        case AF_INET6: return ipv6 == (0, 0)
        default: return false
        }
    }
}

/// An IP address as matching sees it: its bits as one 128-bit number (IPv4 in the low 32 bits)
/// and its family. Small and trivially copied, unlike `SocketAddress` (which keeps text).
public struct IPAddressBits: Sendable, Equatable {
    public let high: UInt64
    public let low: UInt64
    public let isIPv6: Bool

    /// The IPv4 address, for an IPv4 address or an IPv6 one of the form ::ffff:a.b.c.d.
    @inline(__always)
    var ipv4: UInt64? {
        if !isIPv6 { return low }
        return high == 0 && low >> 32 == 0xffff ? low & 0xffff_ffff : nil
    }
}

extension IPAddressBits {
    /// An IP address in header bytes, for matching only (no text kept, no allocation):
    /// `a.b.c.d`, `a.b.c.d:port`, an IPv6 literal, `[v6]` or `[v6]:port`, surrounding spaces
    /// allowed. nil for anything else (a host name, a list of addresses).
    public static func parse(_ p: UnsafePointer<UInt8>, _ count: Int) -> IPAddressBits? {
        var start = 0, end = count
        while start < end && (p[start] == 32 || p[start] == 9) { start += 1 }
        while end > start && (p[end - 1] == 32 || p[end - 1] == 9) { end -= 1 }
        guard start < end else { return nil }
        var colons = 0
        for i in start..<end {
            let c = p[i]
            if c == UInt8(ascii: ":") { colons += 1; continue }
            // Only what an IP literal (and brackets and a port) is made of: a NUL would end the
            // text inet_pton reads early and let trailing bytes through unseen.
            let hexOrDot = (c >= 48 && c <= 57) || (c | 0x20 >= 97 && c | 0x20 <= 102) || c == UInt8(ascii: ".")
            guard hexOrDot || c == UInt8(ascii: "[") || c == UInt8(ascii: "]") else { return nil }
        }
        if p[start] == UInt8(ascii: "[") {
            var close = start + 1
            while close < end && p[close] != UInt8(ascii: "]") { close += 1 }
            guard close < end else { return nil }
            let rest = close + 1
            guard rest == end || (p[rest] == UInt8(ascii: ":") && rest + 1 < end && (rest + 1..<end).allSatisfy { p[$0] >= 48 && p[$0] <= 57 }) else { return nil }
            return literal(AF_INET6, p + start + 1, close - start - 1)
        }
        if colons >= 2 { return literal(AF_INET6, p + start, end - start) }
        if colons == 1 {
            var colon = start
            while p[colon] != UInt8(ascii: ":") { colon += 1 }
            guard colon + 1 < end, (colon + 1..<end).allSatisfy({ p[$0] >= 48 && p[$0] <= 57 }) else { return nil }
            end = colon
        }
        return literal(AF_INET, p + start, end - start)
    }

    /// inet_pton over bytes copied, NUL-terminated, to the stack.
    private static func literal(_ family: Int32, _ p: UnsafePointer<UInt8>, _ n: Int) -> IPAddressBits? {
        guard n > 0 && n < 64 else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text -> IPAddressBits? in
            for i in 0..<n { text[i] = CChar(bitPattern: p[i]) }
            text[n] = 0
            if family == AF_INET {
                var v4 = in_addr()
                guard inet_pton(AF_INET, text.baseAddress!, &v4) == 1 else { return nil }
                return IPAddressBits(high: 0, low: UInt64(UInt32(bigEndian: v4.s_addr)), isIPv6: false)
            }
            var v6 = in6_addr()
            guard inet_pton(AF_INET6, text.baseAddress!, &v6) == 1 else { return nil }
            return IPAddressBits(v6)
        }
    }

    private init(_ v6: in6_addr) {
        let words = withUnsafeBytes(of: v6) { ($0.load(fromByteOffset: 0, as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
        self.init(high: UInt64(bigEndian: words.0), low: UInt64(bigEndian: words.1), isIPv6: true)
    }

    /// The peer of a connected socket (no text kept, so no allocation, unlike
    /// `SocketAddress.peer(of:)`); nil for a unix peer or an error.
    public static func peer(of fd: Int32) -> IPAddressBits? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) } }
        guard rc == 0 else { return nil }
        return withUnsafePointer(to: &storage) { raw -> IPAddressBits? in
            switch Int32(raw.pointee.ss_family) {
            case AF_INET:
                return raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    IPAddressBits(high: 0, low: UInt64(UInt32(bigEndian: $0.pointee.sin_addr.s_addr)), isIPv6: false)
                }
            case AF_INET6:
                return raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { IPAddressBits($0.pointee.sin6_addr) }
            default:
                return nil
            }
        }
    }
}

/// CIDR blocks reduced to plain words, for checking one address against many per request
/// (ip_access): no per-block copy, retain or family switch. Matches as `AddressRange` does (an
/// IPv4 block also holds ::ffff:a.b.c.d clients; an IPv6 block only IPv6 addresses).
public struct AddressRangeSet: Sendable {
    /// Per IPv4 block: network, mask (the address in the low 32 bits).
    private var v4: [UInt64] = []
    /// Per IPv6 block: network high, low, mask high, low.
    private var v6: [UInt64] = []

    public init(_ ranges: [AddressRange]) {
        for r in ranges {
            if r.family == AF_INET { v4 += [r.network.low, r.mask.low] }
            else { v6 += [r.network.high, r.network.low, r.mask.high, r.mask.low] }
        }
    }

    public func contains(_ address: IPAddressBits) -> Bool {
        // Unchecked reads: the loops stay within the arrays, whose lengths are multiples of 2 and 4.
        if let v = address.ipv4 {
            let found = v4.withUnsafeBufferPointer { w in
                var i = 0
                while i < w.count { if v & w[i + 1] == w[i] { return true }; i += 2 }
                return false
            }
            if found { return true }
        }
        if address.isIPv6 {
            return v6.withUnsafeBufferPointer { w in
                var i = 0
                while i < w.count {
                    if address.high & w[i + 2] == w[i] && address.low & w[i + 3] == w[i + 1] { return true }
                    i += 4
                }
                return false
            }
        }
        return false
    }
}

extension IPAddressBits {
    /// The IP address alone as a hash input (the source-address hash policy): the port is left
    /// out so every connection of one client maps alike.
    public var addressHash: UInt64 {
        isIPv6 ? HashKey.mix(high ^ HashKey.mix(low)) : HashKey.mix(low)
    }
}

/// A connection's peer address, read once (see `Connection.peerAddress`).
final class PeerAddress {
    let address: IPAddressBits?
    let hash: UInt64
    /// `ip_access` on the peer address: the serial of the filter that last decided for this
    /// connection and its verdict, so a keep-alive connection's next requests skip the lists
    /// (serials are never reused, so a filter a reload replaced never matches).
    var accessFilterSerial: UInt64 = 0
    var accessAllowed = false
    init(_ address: IPAddressBits?) {
        self.address = address
        hash = address?.addressHash ?? 0
    }
}
