import COpenSSL
import Glibc

/// A listener's TLS contexts (MOSN's `tls_context_set`, or one `tls_context`): the first is the
/// default; with more than one, the ClientHello's SNI picks the context whose certificate names
/// it (an exact DNS name first, then a `*.` wildcard covering one label), else the default.
///
/// Every connection's SSL starts from the first context; a ClientHello callback installed on it
/// moves the SSL to the chosen context (`SSL_set_SSL_CTX`: certificate, key, chain, ALPN, client
/// CA list and trust store follow) and copies the settings SSL_new had taken from the first
/// context: the client-certificate mode and the version range. The callback runs before OpenSSL
/// picks the version or looks up a session, and each context has its own session id context, so
/// a session never resumes under another context (a client certificate is never skipped that way).
/// Cipher suites and curves are per listener (the config reader requires them equal).
public final class TLSServerContextSet: @unchecked Sendable {
    public let contexts: [TLSServerContext]
    public var listenerName: String { contexts[0].listenerName }
    var primary: OpaquePointer { contexts[0].ctx }
    /// Per context: lowercased exact DNS names, and wildcard suffixes (".example.com" for
    /// "*.example.com"), read from the leaf certificate's subjectAltName.
    let exactNames: [[[UInt8]]]
    let wildcardSuffixes: [[[UInt8]]]
    private let verifyModes: [Int32]
    private let versionRanges: [(min: Int32, max: Int32)]

    public init(_ contexts: [TLSServerContext]) {
        precondition(!contexts.isEmpty, "a TLS context set needs a context")
        self.contexts = contexts
        var exact: [[[UInt8]]] = []
        var wildcard: [[[UInt8]]] = []
        for c in contexts {
            let names = TLSServerContextSet.dnsNames(c.ctx)
            exact.append(names.filter { $0.first != UInt8(ascii: "*") })
            wildcard.append(names.compactMap { n in
                // Only a whole first label: "*.example.com" (RFC 6125 6.4.3); "f*.x" never matches.
                n.count > 2 && n[0] == UInt8(ascii: "*") && n[1] == UInt8(ascii: ".") ? Array(n.dropFirst()) : nil
            })
        }
        exactNames = exact
        wildcardSuffixes = wildcard
        verifyModes = contexts.map { SSL_CTX_get_verify_mode($0.ctx) }
        versionRanges = contexts.map { (tern_ssl_ctx_get_min_proto_version($0.ctx), tern_ssl_ctx_get_max_proto_version($0.ctx)) }
        if contexts.count > 1 {
            SSL_CTX_set_client_hello_cb(primary, chooseContextByServerName, Unmanaged.passUnretained(self).toOpaque())
        }
    }

    deinit {
        // Were the first context to outlive its set, no callback may point at a freed set.
        if contexts.count > 1 { SSL_CTX_set_client_hello_cb(primary, nil, nil) }
    }

    /// The DNS names of each context's certificate, for config warnings and logs.
    public func names(of index: Int) -> [String] {
        exactNames[index].map { String(decoding: $0, as: UTF8.self) } + wildcardSuffixes[index].map { "*" + String(decoding: $0, as: UTF8.self) }
    }

    /// The context for a server name (any case), or 0 (the default) when none names it.
    public func index(forServerName name: String) -> Int {
        let bytes = Array(name.utf8)
        return bytes.withUnsafeBufferPointer { b in b.baseAddress.map { index(forServerName: $0, count: b.count) } ?? 0 }
    }

    func index(forServerName name: UnsafePointer<UInt8>, count: Int) -> Int {
        guard count > 0 else { return 0 }
        for (i, names) in exactNames.enumerated() {
            for n in names where n.count == count && equalIgnoringCase(n, 0, name, count) { return i }
        }
        for (i, suffixes) in wildcardSuffixes.enumerated() {
            for s in suffixes where count > s.count && equalIgnoringCase(s, 0, name + (count - s.count), s.count) {
                // The wildcard stands for exactly one non-empty label.
                if memchr(name, Int32(UInt8(ascii: ".")), count - s.count) == nil { return i }
            }
        }
        return 0
    }

    /// Moves `ssl` (still in its ClientHello) to context `index`.
    func select(_ index: Int, for ssl: OpaquePointer) {
        guard index != 0 else { return }
        _ = SSL_set_SSL_CTX(ssl, contexts[index].ctx)
        SSL_set_verify(ssl, verifyModes[index], nil)
        _ = tern_ssl_set_min_proto_version(ssl, versionRanges[index].min)
        _ = tern_ssl_set_max_proto_version(ssl, versionRanges[index].max)
    }

    private static func dnsNames(_ ctx: OpaquePointer) -> [[UInt8]] {
        guard let leaf = SSL_CTX_get0_certificate(ctx), let names = tern_x509_alt_names(leaf) else { return [] }
        defer { tern_alt_names_free(names) }
        var result: [[UInt8]] = []
        for i in 0..<tern_alt_names_count(names) {
            var bytes: UnsafePointer<UInt8>?
            let length = tern_alt_name_dns(names, i, &bytes)
            guard length > 0, let bytes else { continue }
            result.append(UnsafeBufferPointer(start: bytes, count: Int(length)).map(asciiLowercase))
        }
        return result
    }
}

@inline(__always) private func asciiLowercase(_ b: UInt8) -> UInt8 {
    b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b | 0x20 : b
}

/// `lowered[from...]` (already lowercase) against `count` bytes of `other`, ASCII case ignored.
private func equalIgnoringCase(_ lowered: [UInt8], _ from: Int, _ other: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    for k in 0..<count where lowered[from + k] != asciiLowercase(other[k]) { return false }
    return true
}

/// The first host_name entry of a server_name extension's bytes (RFC 6066: a 2-byte list length,
/// then entries of a type byte, a 2-byte length and the name), as a range of `count` bytes at `p`;
/// nil when there is none or the list is malformed. Read in place from the client's bytes, so
/// every length is checked against what is there before it is used (fuzzed: the `sni` target).
public func firstHostName(inServerNameExtension p: UnsafePointer<UInt8>, count: Int) -> Range<Int>? {
    guard count >= 2 else { return nil }
    let listEnd = min(count, 2 + (Int(p[0]) << 8 | Int(p[1])))
    var at = 2
    while at + 3 <= listEnd {
        let nameLength = Int(p[at + 1]) << 8 | Int(p[at + 2])
        guard at + 3 + nameLength <= listEnd else { return nil }
        if p[at] == UInt8(TLSEXT_NAMETYPE_host_name) { return (at + 3)..<(at + 3 + nameLength) }
        at += 3 + nameLength
    }
    return nil
}

/// The ClientHello callback of a set's first context: moves the SSL to the context that names
/// the client's server name. No SNI, a malformed list or an unknown name: the default context,
/// as MOSN does.
private func chooseContextByServerName(_ ssl: OpaquePointer?, _ alert: UnsafeMutablePointer<Int32>?, _ argument: UnsafeMutableRawPointer?) -> Int32 {
    guard let ssl, let argument else { return SSL_CLIENT_HELLO_SUCCESS }
    let set = Unmanaged<TLSServerContextSet>.fromOpaque(argument).takeUnretainedValue()
    var data: UnsafePointer<UInt8>?
    var length = 0
    guard SSL_client_hello_get0_ext(ssl, UInt32(TLSEXT_TYPE_server_name), &data, &length) == 1, let data,
          let name = firstHostName(inServerNameExtension: data, count: length) else {
        return SSL_CLIENT_HELLO_SUCCESS
    }
    set.select(set.index(forServerName: data + name.lowerBound, count: name.count), for: ssl)
    return SSL_CLIENT_HELLO_SUCCESS
}
