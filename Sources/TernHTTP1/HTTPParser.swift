import Glibc
import TernCore

/// Why a message was refused, with the status to answer and a short reason for the log and body.
public struct HTTPParseError: Error, Equatable, Sendable {
    public let status: Int
    public let reason: String
    public init(_ status: Int, _ reason: String) { self.status = status; self.reason = reason }
}

/// One header line's position within a parsed head (offsets from the head's first byte).
public struct HeaderField: Sendable {
    public var nameStart: Int32, nameLength: Int32, valueStart: Int32, valueLength: Int32
    /// Fields the proxy must not forward (hop-by-hop, framing, or named in Connection).
    public var dropped: Bool
}

/// The field positions of one head: a growable array that never shrinks and never copies, so
/// appending costs a store and a count bump (Swift's Array pays a uniqueness check per append).
public final class FieldList: RandomAccessCollection, MutableCollection {
    private var storage: UnsafeMutablePointer<HeaderField>
    private var capacity: Int
    public private(set) var endIndex = 0
    public var startIndex: Int { 0 }

    init(capacity: Int = 32) {
        self.capacity = capacity
        storage = UnsafeMutablePointer<HeaderField>.allocate(capacity: capacity)
    }

    deinit { storage.deallocate() }

    public subscript(position: Int) -> HeaderField {
        get { storage[position] }
        set { storage[position] = newValue }
    }

    @inline(__always) func append(_ field: HeaderField) {
        if endIndex == capacity {
            let grown = UnsafeMutablePointer<HeaderField>.allocate(capacity: capacity * 2)
            grown.moveInitialize(from: storage, count: endIndex)
            storage.deallocate()
            storage = grown
            capacity *= 2
        }
        (storage + endIndex).initialize(to: field)
        endIndex += 1
    }

    @inline(__always) func removeAll() { endIndex = 0 }
}

public enum BodyFraming: Equatable, Sendable {
    case none
    case contentLength(Int64)
    case chunked
    case untilClose
}

/// A parsed request or status line plus header fields, as offsets into the bytes it was parsed from.
/// One instance per connection side, reused for every message, so parsing allocates nothing once
/// its field array has grown to the connection's largest head.
public final class HTTPHead {
    public var headLength = 0
    // request line
    public var methodStart = 0, methodLength = 0
    public var targetStart = 0, targetLength = 0
    public var pathLength = 0   // target up to '?'
    // status line
    public var status = 0
    public var reasonStart = 0, reasonLength = 0
    public var versionMinor = 1
    public let fields = FieldList()
    public var framing: BodyFraming = .none
    public var keepAlive = true
    public var expectContinue = false
    public var hostIndex = -1          // index in fields of Host
    public var method: Method = .other
    /// Content-Length of a bodiless response (HEAD, 204, 304), passed on as sent; -1 when absent.
    public var bodilessContentLength: Int64 = -1

    public enum Method: Sendable {
        case get, head, post, put, delete, connect, options, other
        /// RFC 9110 §9.2.2: the methods a retry may send again (TRACE is parsed as `other`).
        public var isIdempotent: Bool {
            switch self {
            case .get, .head, .put, .delete, .options: return true
            case .post, .connect, .other: return false
            }
        }
    }

    public init() {}

    func reset() {
        fields.removeAll()
        framing = .none
        keepAlive = true
        expectContinue = false
        hostIndex = -1
        status = 0
        method = .other
        bodilessContentLength = -1
    }
}

public struct HTTPLimits: Sendable {
    public var maxHeadBytes: Int
    public var maxHeaderCount: Int
    public init(maxHeadBytes: Int = 64 * 1024, maxHeaderCount: Int = 100) {
        self.maxHeadBytes = maxHeadBytes
        self.maxHeaderCount = maxHeaderCount
    }
}

public enum HeadParseResult: Equatable {
    case needMore
    case complete
    case error(HTTPParseError)
}

/// Strict RFC 9112 parsing of message heads, in place over raw bytes.
public enum HTTPParser {
    // tchar per RFC 9110 §5.6.2, as two 64-bit masks (bytes 0-63 and 64-127): a constant test,
    // no table load.
    @inline(__always) static func isToken(_ b: UInt8) -> Bool {
        // 0x03FF6CFA00000000: ! # $ % & ' * + - . 0-9 ; 0x57FFFFFFC7FFFFFE: A-Z ^ _ ` a-z | ~
        if b < 64 { return (0x03FF_6CFA_0000_0000 as UInt64) >> UInt64(b) & 1 != 0 }
        if b < 128 { return (0x57FF_FFFF_C7FF_FFFE as UInt64) >> UInt64(b - 64) & 1 != 0 }
        return false
    }
    /// field-value bytes: VCHAR, obs-text, SP, HTAB.
    @inline(__always) static func isFieldValueByte(_ b: UInt8) -> Bool { b == 9 || (b >= 32 && b != 127) }

    /// Finds the end of the head (index just past CRLFCRLF), scanning from `from`. Returns nil when
    /// not yet complete. Leading empty lines before a request line are allowed by RFC 9112 §2.2 and
    /// are counted in the head.
    @inline(__always)
    static func findHeadEnd(_ p: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        var i = max(from, 3)
        while i < n {
            // memchr jumps line to line with SIMD; only LFs are inspected.
            guard let lf = memchr(p + i, 10, n - i) else { return nil }
            let at = p.distance(to: lf.assumingMemoryBound(to: UInt8.self))
            if at >= 3 && p[at - 1] == 13 && p[at - 2] == 10 && p[at - 3] == 13 { return at + 1 }
            i = at + 1
        }
        return nil
    }

    /// Parses a request head. `scanned` carries how far a previous call looked for the end of the
    /// head, so a head arriving byte by byte is scanned once overall.
    public static func parseRequest(_ p: UnsafePointer<UInt8>, _ n: Int, limits: HTTPLimits, head: HTTPHead, scanned: inout Int) -> HeadParseResult {
        var start = 0
        while start + 1 < n && p[start] == 13 && p[start + 1] == 10 && start < 8 { start += 2 }
        guard let end = findHeadEnd(p, n, from: max(scanned, start + 3)) else {
            if n > limits.maxHeadBytes { return .error(HTTPParseError(431, "request head larger than \(limits.maxHeadBytes) bytes")) }
            // Reject garbage early instead of waiting for a CRLFCRLF that may never come. Only the
            // bytes new since the last call are checked, so a head arriving byte by byte costs O(n).
            if let e = earlyRequestCheck(p, n, from: scanned) { return .error(e) }
            scanned = max(n - 3, 0)
            return .needMore
        }
        scanned = 0
        if end > limits.maxHeadBytes { return .error(HTTPParseError(431, "request head larger than \(limits.maxHeadBytes) bytes")) }
        head.reset()
        head.headLength = end
        var i = start
        // method
        let methodStart = i
        while i < end && isToken(p[i]) { i += 1 }
        if i == methodStart || p[i] != 32 { return .error(HTTPParseError(400, "malformed request line (method)")) }
        head.methodStart = methodStart
        head.methodLength = i - methodStart
        head.method = classifyMethod(p + methodStart, i - methodStart)
        i += 1
        // request-target: visible ASCII, no spaces
        let targetStart = i
        var pathEnd = -1
        while i < end && p[i] > 32 && p[i] < 127 {
            if p[i] == UInt8(ascii: "?") && pathEnd < 0 { pathEnd = i }
            i += 1
        }
        if i == targetStart || p[i] != 32 { return .error(HTTPParseError(400, "malformed request line (target)")) }
        head.targetStart = targetStart
        head.targetLength = i - targetStart
        head.pathLength = (pathEnd < 0 ? i : pathEnd) - targetStart
        i += 1
        // HTTP-version
        guard i + 10 <= end, p[i] == 72, p[i + 1] == 84, p[i + 2] == 84, p[i + 3] == 80, p[i + 4] == 47,
              isDigit(p[i + 5]), p[i + 6] == 46, isDigit(p[i + 7]), p[i + 8] == 13, p[i + 9] == 10 else {
            return .error(HTTPParseError(400, "malformed request line (version)"))
        }
        if p[i + 5] != 49 { return .error(HTTPParseError(505, "HTTP version not supported")) }
        head.versionMinor = Int(p[i + 7] - 48)
        i += 10
        if let e = parseFields(p, i, end, limits: limits, head: head) { return .error(e) }
        if let e = requestFraming(p, head) { return .error(e) }
        return .complete
    }

    /// Parses a response head from an upstream. Any error here means the upstream connection is unusable (502).
    public static func parseResponse(_ p: UnsafePointer<UInt8>, _ n: Int, limits: HTTPLimits, head: HTTPHead, requestMethod: HTTPHead.Method, scanned: inout Int) -> HeadParseResult {
        guard let end = findHeadEnd(p, n, from: max(scanned, 3)) else {
            if n > limits.maxHeadBytes { return .error(HTTPParseError(502, "upstream response head too large")) }
            if n >= 5 && !(p[0] == 72 && p[1] == 84 && p[2] == 84 && p[3] == 80 && p[4] == 47) {
                return .error(HTTPParseError(502, "malformed upstream status line"))
            }
            if hasBareLF(p, n, from: scanned) { return .error(HTTPParseError(502, "bare LF in upstream response head")) }
            scanned = max(n - 3, 0)
            return .needMore
        }
        scanned = 0
        if end > limits.maxHeadBytes { return .error(HTTPParseError(502, "upstream response head too large")) }
        head.reset()
        head.headLength = end
        // HTTP/1.x SP 3DIGIT [SP reason] CRLF
        guard end >= 14, p[0] == 72, p[1] == 84, p[2] == 84, p[3] == 80, p[4] == 47, p[5] == 49, p[6] == 46,
              isDigit(p[7]), p[8] == 32, isDigit(p[9]), isDigit(p[10]), isDigit(p[11]) else {
            return .error(HTTPParseError(502, "malformed upstream status line"))
        }
        head.versionMinor = Int(p[7] - 48)
        head.status = Int(p[9] - 48) * 100 + Int(p[10] - 48) * 10 + Int(p[11] - 48)
        if head.status < 100 { return .error(HTTPParseError(502, "malformed upstream status code")) }
        var i = 12
        if p[i] == 32 {
            i += 1
            head.reasonStart = i
            while i < end && p[i] != 13 {
                if !isFieldValueByte(p[i]) { return .error(HTTPParseError(502, "invalid byte in upstream reason phrase")) }
                i += 1
            }
            head.reasonLength = i - head.reasonStart
        } else {
            head.reasonStart = i
            head.reasonLength = 0
        }
        guard p[i] == 13, p[i + 1] == 10 else { return .error(HTTPParseError(502, "malformed upstream status line")) }
        i += 2
        if let e = parseFields(p, i, end, limits: limits, head: head) {
            return .error(HTTPParseError(502, "upstream: " + e.reason))
        }
        if let e = responseFraming(p, head, requestMethod: requestMethod) { return .error(e) }
        return .complete
    }

    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }

    /// Before the head is complete: refuse a first line that can never be valid and bare LFs, so
    /// garbage does not sit in the buffer until the size limit.
    static func earlyRequestCheck(_ p: UnsafePointer<UInt8>, _ n: Int, from: Int) -> HTTPParseError? {
        if from == 0 {
            var i = 0
            while i < n && i < 8 && (p[i] == 13 || p[i] == 10) { i += 1 }
            let methodStart = i
            while i < n && isToken(p[i]) { i += 1 }
            if i < n && (p[i] != 32 || i == methodStart) { return HTTPParseError(400, "malformed request line (method)") }
        }
        if hasBareLF(p, n, from: from) { return HTTPParseError(400, "bare LF in request head") }
        return nil
    }

    /// A LF not preceded by CR in p[from..<n] (leading empty lines aside).
    @inline(__always)
    static func hasBareLF(_ p: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Bool {
        var j = max(from, 1)
        while j < n {
            if p[j] == 10 && p[j - 1] != 13 { return true }
            j += 1
        }
        return n > 0 && from == 0 && p[0] == 10
    }

    static func classifyMethod(_ p: UnsafePointer<UInt8>, _ n: Int) -> HTTPHead.Method {
        switch n {
        case 3: if p[0] == 71 && p[1] == 69 && p[2] == 84 { return .get }
                if p[0] == 80 && p[1] == 85 && p[2] == 84 { return .put }
        case 4: if p[0] == 72 && p[1] == 69 && p[2] == 65 && p[3] == 68 { return .head }
                if p[0] == 80 && p[1] == 79 && p[2] == 83 && p[3] == 84 { return .post }
        case 6: if p[0] == 68 && p[1] == 69 && p[2] == 76 { return .delete }
        case 7: if p[0] == 67 && p[1] == 79 && p[2] == 78 && p[3] == 78 { return .connect }
                if p[0] == 79 && p[1] == 80 && p[2] == 84 { return .options }
        default: break
        }
        return .other
    }

    /// The first byte in p[from..<to] that may not appear in a field value (a CTL other than HTAB,
    /// or DEL), or nil. Eight bytes at a time: a word with no byte below 0x20 and no 0x7F is
    /// skipped whole; only a flagged word (most often one holding a tab) is looked at byte by byte.
    @inline(__always)
    static func firstInvalidValueByte(_ p: UnsafePointer<UInt8>, from: Int, to: Int) -> Int? {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        var k = from
        while k + 8 <= to {
            let x = UnsafeRawPointer(p + k).loadUnaligned(as: UInt64.self)
            let below20 = (x &- ones &* 0x20) & ~x & highs
            let y = x ^ (ones &* 0x7F)
            let isDel = (y &- ones) & ~y & highs
            if below20 | isDel != 0 {
                for j in k..<(k + 8) where !isFieldValueByte(p[j]) { return j }
            }
            k += 8
        }
        while k < to {
            if !isFieldValueByte(p[k]) { return k }
            k += 1
        }
        return nil
    }

    /// Parses field lines between `from` and `end` (which ends with the blank line).
    static func parseFields(_ p: UnsafePointer<UInt8>, _ from: Int, _ end: Int, limits: HTTPLimits, head: HTTPHead) -> HTTPParseError? {
        // Every offset below is less than `end`, so one range check here makes the Int32
        // conversions in the loop exact (instead of four trapping conversions per field).
        guard end <= Int(Int32.max) else { return HTTPParseError(431, "head larger than 2 GiB") }
        var i = from
        let last = end - 2   // start of the final CRLF
        while i < last {
            if p[i] == 32 || p[i] == 9 { return HTTPParseError(400, "obsolete line folding") }
            let nameStart = i
            while i < last && isToken(p[i]) { i += 1 }
            if i == nameStart { return HTTPParseError(400, "invalid header name") }
            if p[i] != UInt8(ascii: ":") {
                if p[i] == 32 || p[i] == 9 { return HTTPParseError(400, "whitespace before colon in header") }
                return HTTPParseError(400, "invalid byte in header name")
            }
            let nameLength = i - nameStart
            i += 1
            while p[i] == 32 || p[i] == 9 { i += 1 }
            let valueStart = i
            // The line ends at the next CR (the head is known to end in CRLFCRLF, so one exists).
            let cr = p.distance(to: memchr(p + i, 13, end - i)!.assumingMemoryBound(to: UInt8.self))
            if p[cr + 1] != 10 { return HTTPParseError(400, "bare CR in header") }
            if let k = firstInvalidValueByte(p, from: i, to: cr) {
                return HTTPParseError(400, p[k] == 10 ? "bare LF in header" : "invalid byte in header value")
            }
            var valueEnd = cr
            while valueEnd > valueStart && (p[valueEnd - 1] == 32 || p[valueEnd - 1] == 9) { valueEnd -= 1 }
            i = cr
            if head.fields.count >= limits.maxHeaderCount {
                return HTTPParseError(431, "more than \(limits.maxHeaderCount) header fields")
            }
            head.fields.append(HeaderField(nameStart: Int32(truncatingIfNeeded: nameStart),
                                           nameLength: Int32(truncatingIfNeeded: nameLength),
                                           valueStart: Int32(truncatingIfNeeded: valueStart),
                                           valueLength: Int32(truncatingIfNeeded: valueEnd - valueStart), dropped: false))
            i += 2
        }
        return nil
    }

    // Lowercased names the proxy cares about.
    static let contentLength = Array("content-length".utf8)
    static let transferEncoding = Array("transfer-encoding".utf8)
    static let connection = Array("connection".utf8)
    static let host = Array("host".utf8)
    static let expect = Array("expect".utf8)
    static let hopByHop: [[UInt8]] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"].map { Array($0.utf8) }
    static let chunkedToken = Array("chunked".utf8)
    static let closeToken = Array("close".utf8)
    static let keepAliveToken = Array("keep-alive".utf8)
    static let continueToken = Array("100-continue".utf8)

    struct FramingScan {
        var contentLength: Int64 = -1
        var transferEncodingSeen = false
        var chunkedFinal = false
        var connectionClose = false
        var connectionKeepAlive = false
        var error: String?
    }

    /// Reads framing and connection fields, marks hop-by-hop fields as dropped.
    static func scanFraming(_ p: UnsafePointer<UInt8>, _ head: HTTPHead) -> FramingScan {
        var scan = FramingScan()
        var sawConnection = false
        for idx in head.fields.indices {
            let f = head.fields[idx]
            let name = p + Int(f.nameStart), nl = Int(f.nameLength)
            let value = p + Int(f.valueStart), vl = Int(f.valueLength)
            switch nl {
            case 14 where Bytes.equalsIgnoringCase(name, nl, contentLength):
                head.fields[idx].dropped = true
                guard vl > 0, vl <= 18 else { scan.error = "invalid Content-Length"; return scan }
                var v: Int64 = 0
                for k in 0..<vl {
                    guard isDigit(value[k]) else { scan.error = "invalid Content-Length"; return scan }
                    v = v * 10 + Int64(value[k] - 48)
                }
                if scan.contentLength >= 0 { scan.error = "duplicate Content-Length"; return scan }
                scan.contentLength = v
            case 17 where Bytes.equalsIgnoringCase(name, nl, transferEncoding):
                head.fields[idx].dropped = true
                // Each coding in the list; chunked must be the last and appear once.
                var listError: String?
                forEachListToken(value, vl) { token, length in
                    if scan.chunkedFinal { listError = "chunked is not the final transfer coding"; return true }
                    if Bytes.equalsIgnoringCase(token, length, chunkedToken) { scan.chunkedFinal = true }
                    else { scan.chunkedFinal = false; scan.error = "unsupported transfer coding" }
                    return false
                }
                if let listError { scan.error = listError; return scan }
                scan.transferEncodingSeen = true
                if vl == 0 { scan.error = "empty Transfer-Encoding" }
            case 10 where Bytes.equalsIgnoringCase(name, nl, connection):
                head.fields[idx].dropped = true
                sawConnection = true
            case 4 where Bytes.equalsIgnoringCase(name, nl, host):
                if head.hostIndex >= 0 { scan.error = "duplicate Host"; return scan }
                head.hostIndex = idx
            case 6 where Bytes.equalsIgnoringCase(name, nl, expect):
                if Bytes.equalsIgnoringCase(value, vl, continueToken) { head.expectContinue = true; head.fields[idx].dropped = true }
            case 2, 7, 10, 16:
                // Only names of a hop-by-hop length are compared (te, trailer/upgrade, keep-alive,
                // proxy-connection): most fields skip the comparisons entirely.
                for h in hopByHop where h.count == nl && Bytes.equalsIgnoringCase(name, nl, h) { head.fields[idx].dropped = true }
            default:
                break
            }
        }
        // Connection options: close / keep-alive, and every other token names a field to drop.
        // (A second pass instead of remembering indices keeps parsing free of allocations.)
        guard sawConnection else { return scan }
        for idx in head.fields.indices {
            let f = head.fields[idx]
            guard f.nameLength == 10, Bytes.equalsIgnoringCase(p + Int(f.nameStart), 10, connection) else { continue }
            let value = p + Int(f.valueStart), vl = Int(f.valueLength)
            forEachListToken(value, vl) { token, length in
                if Bytes.equalsIgnoringCase(token, length, closeToken) { scan.connectionClose = true }
                else if Bytes.equalsIgnoringCase(token, length, keepAliveToken) { scan.connectionKeepAlive = true }
                else {
                    for j in head.fields.indices {
                        let g = head.fields[j]
                        if Int(g.nameLength) == length && equalsCaseless(p + Int(g.nameStart), token, length) {
                            head.fields[j].dropped = true
                        }
                    }
                }
                return false
            }
        }
        return scan
    }

    /// Calls `body` with each non-empty element of a comma-separated field value, OWS trimmed;
    /// stops when it returns true.
    @inline(__always)
    static func forEachListToken(_ value: UnsafePointer<UInt8>, _ length: Int, _ body: (UnsafePointer<UInt8>, Int) -> Bool) {
        var k = 0
        while k <= length {
            var e = k
            while e < length && value[e] != UInt8(ascii: ",") { e += 1 }
            var s = k, t = e
            while s < t && (value[s] == 32 || value[s] == 9) { s += 1 }
            while t > s && (value[t - 1] == 32 || value[t - 1] == 9) { t -= 1 }
            if t > s && body(value + s, t - s) { return }
            k = e + 1
        }
    }

    @inline(__always)
    static func equalsCaseless(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        for i in 0..<n where Bytes.lower(a[i]) != Bytes.lower(b[i]) { return false }
        return true
    }

    static func requestFraming(_ p: UnsafePointer<UInt8>, _ head: HTTPHead) -> HTTPParseError? {
        let scan = scanFraming(p, head)
        if scan.transferEncodingSeen && scan.contentLength >= 0 {
            return HTTPParseError(400, "both Transfer-Encoding and Content-Length")
        }
        if let error = scan.error {
            return HTTPParseError(error == "unsupported transfer coding" ? 501 : 400, error)
        }
        if scan.transferEncodingSeen {
            if head.versionMinor == 0 { return HTTPParseError(400, "Transfer-Encoding in an HTTP/1.0 request") }
            head.framing = .chunked
        } else if scan.contentLength > 0 {
            head.framing = .contentLength(scan.contentLength)
        } else {
            head.framing = scan.contentLength == 0 ? .contentLength(0) : .none
        }
        if head.versionMinor >= 1 {
            if head.hostIndex < 0 { return HTTPParseError(400, "missing Host header") }
            head.keepAlive = !scan.connectionClose
        } else {
            head.keepAlive = scan.connectionKeepAlive && !scan.connectionClose
            head.expectContinue = false
        }
        return nil
    }

    static func responseFraming(_ p: UnsafePointer<UInt8>, _ head: HTTPHead, requestMethod: HTTPHead.Method) -> HTTPParseError? {
        let scan = scanFraming(p, head)
        head.hostIndex = -1
        head.expectContinue = false
        if scan.transferEncodingSeen && scan.contentLength >= 0 {
            return HTTPParseError(502, "upstream sent both Transfer-Encoding and Content-Length")
        }
        if let error = scan.error {
            return HTTPParseError(502, "upstream: " + error)
        }
        head.keepAlive = head.versionMinor >= 1 ? !scan.connectionClose : (scan.connectionKeepAlive && !scan.connectionClose)
        // RFC 9112 §6.3
        if requestMethod == .head || head.status < 200 || head.status == 204 || head.status == 304 {
            head.framing = .none
            head.bodilessContentLength = scan.contentLength
            return nil
        }
        head.bodilessContentLength = -1
        if scan.transferEncodingSeen {
            head.framing = scan.chunkedFinal ? .chunked : .untilClose
            if !scan.chunkedFinal { head.keepAlive = false }
        } else if scan.contentLength >= 0 {
            head.framing = .contentLength(scan.contentLength)
        } else {
            head.framing = .untilClose
            head.keepAlive = false
        }
        return nil
    }
}
