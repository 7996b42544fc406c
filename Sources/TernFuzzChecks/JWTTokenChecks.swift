import TernCore

/// The JWT decoder `jwt_authn` runs on a request's token (`JWTToken.parse`): untrusted bytes of
/// any length. The input is the token's text.
///
/// Rules: a token longer than the limit is refused as such; every base64url part of an accepted
/// token re-encodes to exactly its text (one canonical reading, checked against an independent
/// decoder); its header and payload are JSON objects `JSONParser` reads without a depth limit, and
/// the claims kept (`alg`, `kid`, `iss`, `aud`, `exp`, `nbf`) are what they hold; the signing
/// input ends at the second dot; and the same bytes parse the same at an offset in a larger buffer
/// with bytes after them (nothing past the end is read).
enum JWTTokenChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let bytes = Array(data)
        let result = parse(bytes)
        let padded = Array("Bearer ".utf8) + bytes + Array(".e30.e30".utf8)
        let shifted: Result<JWTToken, JWTToken.Failure> = padded.withUnsafeBufferPointer { p in
            let slice = UnsafeBufferPointer(rebasing: p[7..<(7 + bytes.count)])
            do throws(JWTToken.Failure) { return .success(try JWTToken.parse(slice)) } catch { return .failure(error) }
        }
        try require(describe(shifted) == describe(result), "at an offset \(describe(shifted)), alone \(describe(result))")
        if bytes.count > JWTToken.maxLength {
            try require(describe(result) == "failure(tooLong)", "a token of \(bytes.count) bytes gave \(describe(result))")
            return
        }
        guard case .success(let token) = result else { return }

        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).map(Array.init)
        try require(parts.count == 3, "accepted with \(parts.count) parts")
        try require(token.signingInputLength == parts[0].count + 1 + parts[1].count, "signing input \(token.signingInputLength)")
        var decoded: [[UInt8]] = []
        for part in parts {
            let d = try decodeBase64URL(part)
            try require(encodeBase64URL(d) == part, "part does not re-encode to itself")
            decoded.append(d)
        }
        try require(decoded[2] == token.signature, "signature bytes differ")

        let header = try object(decoded[0]), payload = try object(decoded[1])
        let alg = header["alg"].flatMap(string)
        try require(alg == (token.algorithm == .rs256 ? "RS256" : "ES256"), "alg \(String(describing: alg))")
        try require(header["kid"].flatMap(string) == token.keyID.map { String(decoding: $0, as: UTF8.self) }, "kid")
        try require(payload["iss"].flatMap(string) == token.issuer.map { String(decoding: $0, as: UTF8.self) }, "iss")
        var audiences: [String] = []
        switch payload["aud"] {
        case .string(let s)?: audiences = [s]
        case .array(let items)?: audiences = items.compactMap(string)
        default: break
        }
        try require(audiences == token.audiences.map { String(decoding: $0, as: UTF8.self) }, "aud \(audiences)")
        for (key, value) in [("exp", token.expiresAt), ("nbf", token.notBefore)] {
            guard case .number(let d, _)? = payload[key] else { try require(value == nil, "\(key) without a number"); continue }
            try require(value == Int64(d.rounded(.towardZero)), "\(key) \(String(describing: value)) against \(d)")
        }
    }

    static func parse(_ bytes: [UInt8]) -> Result<JWTToken, JWTToken.Failure> {
        bytes.withUnsafeBufferPointer { p in
            do throws(JWTToken.Failure) { return .success(try JWTToken.parse(p)) } catch { return .failure(error) }
        }
    }

    static func describe(_ r: Result<JWTToken, JWTToken.Failure>) -> String {
        switch r {
        case .success(let t): return "success(\(t.algorithm) \(t.signingInputLength) \(t.signature.count))"
        case .failure(let f): return "failure(\(f))"
        }
    }

    static func object(_ bytes: [UInt8]) throws -> [String: JSONValue] {
        let value = try? JSONParser.parse(String(decoding: bytes, as: UTF8.self))
        guard case .object(let dict)? = value else { throw FuzzCheckFailure(description: "accepted JSON the config parser refuses") }
        return dict
    }

    static func string(_ v: JSONValue) -> String? {
        if case .string(let s) = v { return s }
        return nil
    }

    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// An independent decoder: whole groups of four, then the tail.
    static func decodeBase64URL(_ s: [UInt8]) throws -> [UInt8] {
        var values: [UInt8] = []
        for c in s {
            guard let i = alphabet.firstIndex(of: c) else { throw FuzzCheckFailure(description: "accepted byte \(c) outside base64url") }
            values.append(UInt8(i))
        }
        var out: [UInt8] = []
        var i = 0
        while i < values.count {
            let group = Array(values[i..<min(i + 4, values.count)])
            let n = group.count
            var word: UInt32 = 0
            for k in 0..<4 { word = word << 6 | UInt32(k < n ? group[k] : 0) }
            let produced = [UInt8(word >> 16 & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word & 0xFF)]
            out += produced.prefix(max(0, n - 1))
            i += 4
        }
        return out
    }

    static func encodeBase64URL(_ d: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < d.count {
            let n = min(3, d.count - i)
            var word: UInt32 = 0
            for k in 0..<3 { word = word << 8 | UInt32(k < n ? d[i + k] : 0) }
            for k in 0..<(n + 1) { out.append(alphabet[Int(word >> UInt32(18 - 6 * k) & 0x3F)]) }
            i += 3
        }
        return out
    }
}
