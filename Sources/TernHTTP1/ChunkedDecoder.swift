/// Incremental decoder of a chunked body (RFC 9112 §7.1). It yields one event per call so the
/// caller can forward data in place; trailer lines are yielded whole, once complete.
public struct ChunkedDecoder {
    public enum Event: Equatable {
        case needMore
        case data(offset: Int, length: Int)
        case trailer(offset: Int, length: Int)   // one field line including its CRLF
        case end
        case error(String)
    }

    enum State { case size, sizeTail, extension_, sizeLF, data, dataCR, dataLF, trailer, done }

    var state = State.size
    var remaining: Int64 = 0
    var sizeDigits = 0
    var extensionBytes = 0
    var trailerBytes = 0
    var trailerCount = 0
    public var maxExtensionBytes = 4096
    public var maxTrailerBytes = 16384
    public var maxTrailerCount = 100

    public init() {}

    public mutating func reset() { self = ChunkedDecoder() }

    public var isDone: Bool { state == .done }

    @inline(__always) static func hexValue(_ b: UInt8) -> Int64? {
        switch b {
        case 48...57: return Int64(b - 48)
        case 97...102: return Int64(b - 87)
        case 65...70: return Int64(b - 55)
        default: return nil
        }
    }

    /// Consumes from `p[0..<n]`; returns how many bytes were consumed and what was found.
    public mutating func next(_ p: UnsafePointer<UInt8>, _ n: Int) -> (consumed: Int, event: Event) {
        var i = 0
        while i < n {
            let b = p[i]
            switch state {
            case .size:
                if let v = ChunkedDecoder.hexValue(b) {
                    if sizeDigits == 15 { return (i, .error("chunk size too large")) }
                    remaining = remaining * 16 + v
                    sizeDigits += 1
                    i += 1
                } else {
                    if sizeDigits == 0 { return (i, .error("invalid chunk size")) }
                    state = .sizeTail
                }
            case .sizeTail:
                if b == 32 || b == 9 { extensionBytes += 1; if extensionBytes > maxExtensionBytes { return (i, .error("chunk extension too long")) }; i += 1 }
                else if b == UInt8(ascii: ";") { state = .extension_; i += 1 }
                else if b == 13 { state = .sizeLF; i += 1 }
                else { return (i, .error("invalid chunk size line")) }
            case .extension_:
                if b == 13 { state = .sizeLF; i += 1 }
                else if HTTPParser.isFieldValueByte(b) {
                    extensionBytes += 1
                    if extensionBytes > maxExtensionBytes { return (i, .error("chunk extension too long")) }
                    i += 1
                } else { return (i, .error("invalid byte in chunk extension")) }
            case .sizeLF:
                if b != 10 { return (i, .error("bare CR in chunk size line")) }
                i += 1
                extensionBytes = 0
                sizeDigits = 0
                if remaining == 0 { state = .trailer } else { state = .data }
            case .data:
                let take = Int(min(remaining, Int64(n - i)))
                remaining -= Int64(take)
                if remaining == 0 { state = .dataCR }
                return (i + take, .data(offset: i, length: take))
            case .dataCR:
                if b != 13 { return (i, .error("chunk data longer than its size")) }
                state = .dataLF; i += 1
            case .dataLF:
                if b != 10 { return (i, .error("bare CR after chunk data")) }
                state = .size; i += 1
            case .trailer:
                // Needs a whole line: find its LF in what is available. The answer must not depend
                // on where reads split the line, so a partial line is refused only when the line it
                // starts is sure to be refused whole: a field line (anything but a lone CR, the start
                // of the final empty line) of at least its bytes so far plus the LF.
                var e = i
                while e < n && p[e] != 10 { e += 1 }
                if e == n {
                    let sofar = n - i
                    let mayBeFinalLine = sofar == 0 || (sofar == 1 && p[i] == 13)
                    if !mayBeFinalLine && trailerBytes + sofar + 1 > maxTrailerBytes { return (i, .error("trailer section too large")) }
                    return (i, .needMore)
                }
                let lineLength = e + 1 - i
                if lineLength == 2 && p[i] == 13 { state = .done; return (e + 1, .end) }
                // A field line: its size counts first (as for a partial line), then its bytes.
                trailerBytes += lineLength
                trailerCount += 1
                if trailerBytes > maxTrailerBytes || trailerCount > maxTrailerCount { return (i, .error("trailer section too large")) }
                if e == i || p[e - 1] != 13 { return (i, .error("bare LF in trailer")) }
                if let problem = ChunkedDecoder.validateFieldLine(p + i, lineLength - 2) { return (i, .error(problem)) }
                return (e + 1, .trailer(offset: i, length: lineLength))
            case .done:
                return (i, .end)
            }
        }
        if state == .done { return (i, .end) }
        return (i, .needMore)
    }

    static func validateFieldLine(_ p: UnsafePointer<UInt8>, _ n: Int) -> String? {
        var i = 0
        while i < n && HTTPParser.isToken(p[i]) { i += 1 }
        if i == 0 || i == n || p[i] != UInt8(ascii: ":") { return "invalid trailer field" }
        i += 1
        while i < n {
            if !HTTPParser.isFieldValueByte(p[i]) { return "invalid byte in trailer field" }
            i += 1
        }
        return nil
    }
}
