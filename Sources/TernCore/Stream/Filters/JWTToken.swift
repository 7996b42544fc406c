/// A JSON Web Token (compact form) taken apart: untrusted bytes, so every step is bounded: the
/// token's length (`maxLength`), base64url with no padding or stray bytes, and the config's strict
/// JSON parser limited to `maxDepth` levels; only the few claims the filter checks are kept.
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
        case tooLong, notThreeParts, badBase64, badJSON, unsupportedAlgorithm, badClaim, criticalExtension
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

        let head = try claims(header)
        // RFC 7515 §4.1.11: a token naming extensions it must not be accepted without is refused,
        // since Tern understands none.
        if head["crit"] != nil { throw .criticalExtension }
        let algorithm: Algorithm
        switch head["alg"] {
        case .string("RS256")?: algorithm = .rs256
        case .string("ES256")?: algorithm = .es256
        default: throw .unsupportedAlgorithm
        }
        var t = JWTToken(algorithm: algorithm, keyID: try string(head["kid"]), signingInputLength: dots[1], signature: signature)
        let body = try claims(payload)
        t.issuer = try string(body["iss"])
        switch body["aud"] {
        case nil: break
        case .string(let s)?: t.audiences = [Array(s.utf8)]
        case .array(let items)?:
            for item in items {
                guard case .string(let s) = item else { throw .badClaim }
                t.audiences.append(Array(s.utf8))
            }
        default: throw .badClaim
        }
        t.expiresAt = try numericDate(body["exp"])
        t.notBefore = try numericDate(body["nbf"])
        return t
    }

    static func claims(_ bytes: [UInt8]) throws(Failure) -> [String: JSONValue] {
        guard case .object(let members)? = try? JSONParser.parse(bytes: bytes, maxDepth: maxDepth) else { throw .badJSON }
        return members
    }

    static func string(_ v: JSONValue?) throws(Failure) -> [UInt8]? {
        switch v {
        case nil: return nil
        case .string(let s)?: return Array(s.utf8)
        default: throw .badClaim
        }
    }

    /// A NumericDate: seconds, a fraction cut off; beyond ±10^15 is no date.
    static func numericDate(_ v: JSONValue?) throws(Failure) -> Int64? {
        switch v {
        case nil: return nil
        case .number(let d, _)? where abs(d) < 1e15: return Int64(d.rounded(.towardZero))
        default: throw .badClaim
        }
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

