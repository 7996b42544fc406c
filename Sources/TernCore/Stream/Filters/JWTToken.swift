/// A JSON Web Token (compact form) taken apart: untrusted bytes, so every step is bounded: the
/// token's length (`maxLength`), base64url with no padding or stray bytes, and a JSON reader that
/// only walks objects `maxDepth` deep and keeps the few claims the filter checks.
public struct JWTToken {
    public static let maxLength = 8192
    public static let maxDepth = 16

    public enum Algorithm: Equatable, Sendable { case rs256, es256 }

    public var algorithm: Algorithm
    public var keyID: [UInt8]?
    public var issuer: [UInt8]?
    /// `aud` as a string or a list of strings.
    public var audiences: [[UInt8]] = []
    public var expiresAt: Int64?
    public var notBefore: Int64?
    /// The bytes the signature covers: `header.payload` as sent.
    public var signingInputLength: Int
    public var signature: [UInt8]

    public enum Failure: Error, Equatable {
        case tooLong, notThreeParts, badBase64, badJSON, unsupportedAlgorithm, badClaim
    }

    /// Parses `token` (the text after the header's prefix). `alg` must be RS256 or ES256: `none`
    /// and every other algorithm are refused here, before any key is looked at.
    public static func parse(_ token: UnsafeBufferPointer<UInt8>) throws(Failure) -> JWTToken {
        guard token.count <= maxLength else { throw .tooLong }
        var dots: [Int] = []
        for i in token.indices where token[i] == UInt8(ascii: ".") {
            dots.append(i)
            if dots.count > 2 { throw .notThreeParts }
        }
        guard dots.count == 2, dots[0] > 0, dots[1] > dots[0] + 1, dots[1] + 1 < token.count else { throw .notThreeParts }
        let header = try Base64URL.decode(UnsafeBufferPointer(rebasing: token[0..<dots[0]]))
        let payload = try Base64URL.decode(UnsafeBufferPointer(rebasing: token[(dots[0] + 1)..<dots[1]]))
        let signature = try Base64URL.decode(UnsafeBufferPointer(rebasing: token[(dots[1] + 1)...]))

        var alg: [UInt8]?, kid: [UInt8]?
        try JSONClaims.walk(header) { key, value throws(Failure) in
            if key == "alg" { alg = try value.string() }
            else if key == "kid" { kid = try value.string() }
        }
        let algorithm: Algorithm
        switch alg {
        case Array("RS256".utf8)?: algorithm = .rs256
        case Array("ES256".utf8)?: algorithm = .es256
        default: throw .unsupportedAlgorithm
        }
        var t = JWTToken(algorithm: algorithm, keyID: kid, signingInputLength: dots[1], signature: signature)
        try JSONClaims.walk(payload) { key, value throws(Failure) in
            switch key {
            case "iss": t.issuer = try value.string()
            case "aud": t.audiences = try value.strings()
            case "exp": t.expiresAt = try value.integer()
            case "nbf": t.notBefore = try value.integer()
            default: break
            }
        }
        return t
    }
}

/// base64url (RFC 4648 §5) without padding, as JWTs and JWKs write it. Padding and any byte
/// outside the alphabet are errors.
public enum Base64URL {
    public static func decode(_ s: UnsafeBufferPointer<UInt8>) throws(JWTToken.Failure) -> [UInt8] {
        if s.count % 4 == 1 { throw .badBase64 }
        var out: [UInt8] = []
        out.reserveCapacity(s.count * 3 / 4)
        var accumulator: UInt32 = 0, bits = 0
        for c in s {
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "_"): v = 63
            default: throw .badBase64
            }
            accumulator = accumulator << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        if accumulator != 0 { throw .badBase64 }   // non-canonical: leftover bits must be zero
        return out
    }

    public static func decode(_ s: String) throws(JWTToken.Failure) -> [UInt8] {
        let bytes = Array(s.utf8)
        return try bytes.withUnsafeBufferPointer { p throws(JWTToken.Failure) in try decode(p) }
    }
}

/// A small JSON reader for a JWT's header and payload: the top-level object's members are handed
/// to `visit` one by one; nested values are checked and skipped, at most `JWTToken.maxDepth` deep.
enum JSONClaims {
    struct Value {
        let bytes: [UInt8]
        let start: Int, end: Int

        func string() throws(JWTToken.Failure) -> [UInt8] {
            var r = Reader(bytes: bytes, index: start)
            guard let s = try r.stringIfPresent() else { throw .badClaim }
            return s
        }

        func strings() throws(JWTToken.Failure) -> [[UInt8]] {
            var r = Reader(bytes: bytes, index: start)
            if let s = try r.stringIfPresent() { return [s] }
            guard r.peek() == UInt8(ascii: "[") else { throw .badClaim }
            r.index += 1
            var out: [[UInt8]] = []
            r.skipSpace()
            if r.peek() == UInt8(ascii: "]") { return out }
            while true {
                r.skipSpace()
                guard let s = try r.stringIfPresent() else { throw .badClaim }
                out.append(s)
                r.skipSpace()
                if r.peek() == UInt8(ascii: ",") { r.index += 1; continue }
                if r.peek() == UInt8(ascii: "]") { return out }
                throw .badClaim
            }
        }

        /// A NumericDate: an integer, or a number with a fraction (cut to whole seconds).
        func integer() throws(JWTToken.Failure) -> Int64 {
            var i = start, value: Int64 = 0, digits = 0
            let negative = i < end && bytes[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            while i < end, bytes[i] >= 48, bytes[i] <= 57 {
                guard digits < 15 else { throw .badClaim }
                value = value * 10 + Int64(bytes[i] - 48)
                digits += 1
                i += 1
            }
            guard digits > 0 else { throw .badClaim }
            if i < end, bytes[i] == UInt8(ascii: ".") { i = end }   // fraction: the reader checked its syntax
            guard i == end else { throw .badClaim }   // exponents are not NumericDates anyone sends
            return negative ? -value : value
        }
    }

    static func walk(_ bytes: [UInt8], _ visit: (String, Value) throws(JWTToken.Failure) -> Void) throws(JWTToken.Failure) {
        var r = Reader(bytes: bytes, index: 0)
        r.skipSpace()
        guard r.peek() == UInt8(ascii: "{") else { throw .badJSON }
        r.index += 1
        r.skipSpace()
        if r.peek() == UInt8(ascii: "}") { r.index += 1 }
        else {
            while true {
                r.skipSpace()
                guard let key = try r.stringIfPresent() else { throw .badJSON }
                r.skipSpace()
                guard r.peek() == UInt8(ascii: ":") else { throw .badJSON }
                r.index += 1
                r.skipSpace()
                let start = r.index
                try r.skipValue(depth: 1)
                // Only short ASCII keys are ever claims the filter reads.
                if key.count <= 3 { try visit(String(decoding: key, as: UTF8.self), Value(bytes: bytes, start: start, end: r.index)) }
                r.skipSpace()
                if r.peek() == UInt8(ascii: ",") { r.index += 1; continue }
                guard r.peek() == UInt8(ascii: "}") else { throw .badJSON }
                r.index += 1
                break
            }
        }
        r.skipSpace()
        guard r.index == bytes.count else { throw .badJSON }
    }

    struct Reader {
        let bytes: [UInt8]
        var index: Int

        func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpace() {
            while let c = peek(), c == 32 || c == 9 || c == 10 || c == 13 { index += 1 }
        }

        /// A string's bytes (escapes decoded for ASCII, `\u` kept only below 0x80), or nil when no
        /// string starts here.
        mutating func stringIfPresent() throws(JWTToken.Failure) -> [UInt8]? {
            guard peek() == UInt8(ascii: "\"") else { return nil }
            index += 1
            var out: [UInt8] = []
            while let c = peek() {
                index += 1
                switch c {
                case UInt8(ascii: "\""): return out
                case UInt8(ascii: "\\"):
                    guard let e = peek() else { throw .badJSON }
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(8)
                    case UInt8(ascii: "f"): out.append(12)
                    case UInt8(ascii: "n"): out.append(10)
                    case UInt8(ascii: "r"): out.append(13)
                    case UInt8(ascii: "t"): out.append(9)
                    case UInt8(ascii: "u"):
                        guard index + 4 <= bytes.count else { throw .badJSON }
                        var v: UInt32 = 0
                        for _ in 0..<4 {
                            guard let h = hexValue(bytes[index]) else { throw .badJSON }
                            v = v << 4 | UInt32(h)
                            index += 1
                        }
                        // Non-ASCII escapes: kept as the UTF-8 of the scalar (surrogates as U+FFFD).
                        out.append(contentsOf: Array(String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8))
                    default: throw .badJSON
                    }
                case 0..<32: throw .badJSON
                default: out.append(c)
                }
            }
            throw .badJSON
        }

        func hexValue(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }

        mutating func skipValue(depth: Int) throws(JWTToken.Failure) {
            guard depth <= JWTToken.maxDepth else { throw .badJSON }
            guard let c = peek() else { throw .badJSON }
            switch c {
            case UInt8(ascii: "\""): _ = try stringIfPresent()
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
                index += 1
                skipSpace()
                if peek() == close { index += 1; return }
                while true {
                    skipSpace()
                    if c == UInt8(ascii: "{") {
                        guard try stringIfPresent() != nil else { throw .badJSON }
                        skipSpace()
                        guard peek() == UInt8(ascii: ":") else { throw .badJSON }
                        index += 1
                        skipSpace()
                    }
                    try skipValue(depth: depth + 1)
                    skipSpace()
                    if peek() == UInt8(ascii: ",") { index += 1; continue }
                    guard peek() == close else { throw .badJSON }
                    index += 1
                    return
                }
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            default: try number()
            }
        }

        mutating func literal(_ word: StaticString) throws(JWTToken.Failure) {
            let n = word.utf8CodeUnitCount
            guard index + n <= bytes.count else { throw .badJSON }
            for i in 0..<n where bytes[index + i] != word.utf8Start[i] { throw .badJSON }
            index += n
        }

        mutating func number() throws(JWTToken.Failure) {
            let start = index
            if peek() == UInt8(ascii: "-") { index += 1 }
            var digits = 0
            while let c = peek(), c >= 48, c <= 57 { index += 1; digits += 1 }
            guard digits > 0 else { throw .badJSON }
            if peek() == UInt8(ascii: ".") {
                index += 1
                var fraction = 0
                while let c = peek(), c >= 48, c <= 57 { index += 1; fraction += 1 }
                guard fraction > 0 else { throw .badJSON }
            }
            if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
                index += 1
                if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { index += 1 }
                var exponent = 0
                while let c = peek(), c >= 48, c <= 57 { index += 1; exponent += 1 }
                guard exponent > 0 else { throw .badJSON }
            }
            guard index > start else { throw .badJSON }
        }
    }
}
