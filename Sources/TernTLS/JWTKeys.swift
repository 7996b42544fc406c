import COpenSSL
import TernCore

/// A JWKS public key as OpenSSL's EVP_PKEY, built once at config load from the key's numbers
/// (RSA `n`/`e`, EC P-256 `x`/`y`) through a DER SubjectPublicKeyInfo, and checked with
/// EVP_DigestVerify (SHA-256) per token.
public final class OpenSSLJWTKey: JWTVerificationKey, @unchecked Sendable {
    public let algorithm: JWTToken.Algorithm
    public let keyID: [UInt8]?
    let key: OpaquePointer

    init?(algorithm: JWTToken.Algorithm, keyID: String?, subjectPublicKeyInfo der: [UInt8]) {
        var p: UnsafePointer<UInt8>? = nil
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { b in
            p = b.baseAddress
            return d2i_PUBKEY(nil, &p, b.count)
        }
        guard let parsed else { return nil }
        self.algorithm = algorithm
        self.keyID = keyID.map { Array($0.utf8) }
        key = parsed
    }

    deinit { EVP_PKEY_free(key) }

    /// An RSA key from its modulus and exponent (big-endian bytes); nil when OpenSSL refuses it
    /// or it is shorter than 2048 bits.
    public static func rsa(modulus n: [UInt8], exponent e: [UInt8], keyID: String?) -> OpenSSLJWTKey? {
        let modulus = DER.unsignedInteger(n), exponent = DER.unsignedInteger(e)
        guard n.drop(while: { $0 == 0 }).count >= 256 else { return nil }
        let rsaPublicKey = DER.sequence(modulus + exponent)
        let algorithm = DER.sequence(DER.objectID([0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]) + [0x05, 0x00])
        return OpenSSLJWTKey(algorithm: .rs256, keyID: keyID, subjectPublicKeyInfo: DER.sequence(algorithm + DER.bitString(rsaPublicKey)))
    }

    /// A P-256 key from its coordinates (32 bytes each); nil when the point is not on the curve.
    public static func p256(x: [UInt8], y: [UInt8], keyID: String?) -> OpenSSLJWTKey? {
        guard x.count == 32, y.count == 32 else { return nil }
        let algorithm = DER.sequence(DER.objectID([0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]) +      // id-ecPublicKey
                                     DER.objectID([0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]))  // prime256v1
        return OpenSSLJWTKey(algorithm: .es256, keyID: keyID, subjectPublicKeyInfo: DER.sequence(algorithm + DER.bitString([0x04] + x + y)))
    }

    public func verify(signingInput: UnsafeBufferPointer<UInt8>, signature: [UInt8]) -> Bool {
        var sig = signature
        if algorithm == .es256 {
            // JWS carries r||s (32 bytes each); OpenSSL wants ECDSA-Sig-Value in DER.
            guard signature.count == 64 else { return false }
            sig = DER.sequence(DER.unsignedInteger(Array(signature[0..<32])) + DER.unsignedInteger(Array(signature[32..<64])))
        }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, EVP_sha256(), nil, key) == 1 else { return false }
        return sig.withUnsafeBufferPointer { s in
            EVP_DigestVerify(context, s.baseAddress, s.count, signingInput.baseAddress, signingInput.count) == 1
        }
    }
}

/// The few DER encodings a public key and an ECDSA signature need.
enum DER {
    static func length(_ n: Int) -> [UInt8] {
        if n < 0x80 { return [UInt8(n)] }
        var bytes: [UInt8] = []
        var v = n
        while v > 0 { bytes.insert(UInt8(v & 0xFF), at: 0); v >>= 8 }
        return [0x80 | UInt8(bytes.count)] + bytes
    }
    static func tagged(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] { [tag] + length(content.count) + content }
    static func sequence(_ content: [UInt8]) -> [UInt8] { tagged(0x30, content) }
    static func objectID(_ encoded: [UInt8]) -> [UInt8] { tagged(0x06, encoded) }
    static func bitString(_ content: [UInt8]) -> [UInt8] { tagged(0x03, [0] + content) }
    /// A non-negative INTEGER from big-endian bytes: leading zeros dropped, one added when the
    /// top bit is set.
    static func unsignedInteger(_ bytes: [UInt8]) -> [UInt8] {
        var v = Array(bytes.drop(while: { $0 == 0 }))
        if v.isEmpty { v = [0] }
        if v[0] & 0x80 != 0 { v.insert(0, at: 0) }
        return tagged(0x02, v)
    }
}
