import Foundation
import Glibc
import Synchronization

/// A TCP server in the test process for L4 tests: listens on 127.0.0.1 (port from the OS) and
/// runs `handler` on its own thread for every accepted connection, with the descriptor (blocking,
/// with `timeout` on reads and writes so no thread hangs). The handler owns the descriptor and
/// closes it (or not, to test what a proxy does with a peer that goes quiet).
public final class TCPPeer: @unchecked Sendable {
    public let port: UInt16
    private let fd: Int32
    private let lock = NSLock()
    private var stopped = false
    private var acceptedCount = 0

    public init(port requested: UInt16 = 0, timeout: Double = 10, handler: @escaping @Sendable (Int32) -> Void) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withIPv4Address("127.0.0.1", port: requested) { bind(fd, $0, $1) }
        guard rc == 0, listen(fd, 128) == 0 else { Glibc.close(fd); throw TestError("TCPPeer: bind/listen failed: errno \(errno)") }
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        port = UInt16(bigEndian: bound.sin_port)
        self.fd = fd
        let listening = fd
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(listening, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return   // closed by stop()
                }
                var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                lock.withLock { acceptedCount += 1 }
                Thread.detachNewThread { handler(client) }
            }
        }
    }

    /// Connections accepted so far.
    public var accepted: Int { lock.withLock { acceptedCount } }

    public func stop() {
        let first = lock.withLock { () -> Bool in defer { stopped = true }; return !stopped }
        if first { shutdown(fd, Int32(SHUT_RDWR)); Glibc.close(fd) }
    }

    deinit { stop() }
}

/// Socket helpers for L4 tests (blocking descriptors with timeouts).
public enum TCPBytes {
    /// Writes everything; false when the peer went away or the write timed out.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = send(fd, bytes.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { writeAll(fd, $0) } }

    /// How a read loop ended.
    public enum End: Equatable, Sendable { case eof, reset, timeout, error(Int32) }

    /// Reads until the end of the stream, handing each chunk to `body`.
    public static func readToEnd(_ fd: Int32, _ body: (UnsafeRawBufferPointer) -> Void) -> End {
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { buffer.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }; continue }
            if n == 0 { return .eof }
            let e = errno
            if e == EINTR { continue }
            if e == ECONNRESET { return .reset }
            if e == EAGAIN || e == EWOULDBLOCK { return .timeout }
            return .error(e)
        }
    }

    /// Reads exactly `count` bytes (nil when the stream ended or timed out first).
    public static func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            got += n
        }
        return out
    }

    /// Closes with a reset (RST) instead of a FIN.
    public static func reset(_ fd: Int32) {
        var hard = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }
}

/// A large stream both ends can check cheaply: byte i is `bytes[i % bytes.count]`, a random
/// block of prime length, so a lost, repeated or reordered piece shows as a mismatch (memcmp
/// speed even in a debug build).
public struct PatternBlock: Sendable {
    public let bytes: [UInt8]
    public init(seed: UInt64 = 0x9e37_79b9_7f4a_7c15) {
        var state = seed
        var block = [UInt8](repeating: 0, count: 1_048_573)   // prime
        for i in block.indices {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            block[i] = UInt8(truncatingIfNeeded: state >> 24)
        }
        bytes = block
    }

    /// Sends `total` bytes of the pattern; false when the peer stopped taking them.
    public func send(_ fd: Int32, total: Int) -> Bool {
        var sent = 0
        return bytes.withUnsafeBytes { block in
            while sent < total {
                let offset = sent % block.count
                let n = min(block.count - offset, total - sent, 256 * 1024)
                if !TCPBytes.writeAll(fd, UnsafeRawBufferPointer(rebasing: block[offset..<(offset + n)])) { return false }
                sent += n
            }
            return true
        }
    }

    /// Follows a received stream: `matches` stays true while every byte is the pattern's.
    public struct Checker {
        public let pattern: PatternBlock
        public private(set) var received = 0
        public private(set) var matches = true
        public init(_ pattern: PatternBlock) { self.pattern = pattern }
        public mutating func add(_ chunk: UnsafeRawBufferPointer) {
            pattern.bytes.withUnsafeBytes { block in
                var done = 0
                while done < chunk.count {
                    let offset = (received + done) % block.count
                    let n = min(block.count - offset, chunk.count - done)
                    if memcmp(chunk.baseAddress! + done, block.baseAddress! + offset, n) != 0 { matches = false }
                    done += n
                }
            }
            received += chunk.count
        }
    }
}

/// A `tern start` config with one listener whose filter chain is `filters` (JSON array body) and
/// the given clusters (JSON array body).
public func l4Config(listen: UInt16, filters: String, clusters: String, logLevel: String = "INFO", idleTimeout: String? = nil,
                     routers: String = "") -> String {
    let idle = idleTimeout.map { " \"connection_idle_timeout\": \"\($0)\"," } ?? ""
    let routerList = routers.isEmpty ? "" : "\"routers\": [\(routers)],"
    return """
    { "servers": [{ "default_log_path": "stderr", "default_log_level": "\(logLevel)", "graceful_timeout": "2s", \(routerList)
        "listeners": [{ "name": "l4", "address": "127.0.0.1:\(listen)", "bind_port": true,\(idle)
           "filter_chains": [{ "filters": [\(filters)] }] }] }],
      "cluster_manager": { "clusters": [\(clusters)] } }
    """
}

/// A boolean shared between a test and the threads it starts.
public final class SharedFlag: Sendable {
    private let state = Mutex<Bool>(false)
    public init() {}
    public var isSet: Bool { state.withLock { $0 } }
    public func set(_ value: Bool = true) { state.withLock { $0 = value } }
}

/// Calls `body` with a sockaddr for an IPv4 address and port (tests' bind and connect).
public func withIPv4Address<R>(_ ip: String, port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr(ip)
    addr.sin_port = port.bigEndian
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
}
