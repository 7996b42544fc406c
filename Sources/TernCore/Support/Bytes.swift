/// Byte helpers shared by codecs and the router: case-insensitive comparison and hashing of ASCII
/// bytes in place, without building Strings.
public enum Bytes {
    @inline(__always) public static func lower(_ b: UInt8) -> UInt8 {
        (b >= 65 && b <= 90) ? b | 0x20 : b
    }

    /// Compares `count` bytes at `p` with `lowercased` ignoring ASCII case.
    @inline(__always)
    public static func equalsIgnoringCase(_ p: UnsafePointer<UInt8>, _ count: Int, _ lowercased: [UInt8]) -> Bool {
        if count != lowercased.count { return false }
        return lowercased.withUnsafeBufferPointer { l in
            for i in 0..<count where lower(p[i]) != l[i] { return false }
            return true
        }
    }

    @inline(__always)
    public static func equals(_ p: UnsafePointer<UInt8>, _ count: Int, _ other: [UInt8]) -> Bool {
        if count != other.count { return false }
        return other.withUnsafeBufferPointer { o in memcmpEqual(p, o.baseAddress!, count) }
    }

    @inline(__always)
    static func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        for i in 0..<n where a[i] != b[i] { return false }
        return true
    }

    @inline(__always)
    public static func hasPrefix(_ p: UnsafePointer<UInt8>, _ count: Int, _ prefix: [UInt8]) -> Bool {
        if count < prefix.count { return false }
        return prefix.withUnsafeBufferPointer { memcmpEqual(p, $0.baseAddress ?? p, prefix.count) }
    }

    /// FNV-1a over lowercased bytes.
    @inline(__always)
    public static func hashLowercased(_ p: UnsafePointer<UInt8>, _ count: Int) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        for i in 0..<count { h = (h ^ UInt64(lower(p[i]))) &* 0x100000001b3 }
        return h
    }

    public static func hashLowercased(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBufferPointer { hashLowercased($0.baseAddress!, $0.count) }
    }

    public static func lowercased(_ s: String) -> [UInt8] { Array(s.utf8).map(lower) }

    public static func string(_ p: UnsafePointer<UInt8>, _ count: Int) -> String {
        String(decoding: UnsafeBufferPointer(start: p, count: count), as: UTF8.self)
    }
}

/// A pseudo-random generator per worker (xorshift): load balancers and weighted routes need speed,
/// not cryptographic quality.
public struct FastRandom {
    private var state: UInt64
    public init(seed: UInt64 = UInt64.random(in: 1...UInt64.max)) { state = seed | 1 }
    public mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
}
