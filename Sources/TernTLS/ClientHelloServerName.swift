/// What the first bytes of a connection say about the server name it wants, read in place
/// without OpenSSL (the SNI router forwards the bytes unread, so no SSL ever sees them).
public enum ClientHelloScan: Equatable {
    /// A TLS record has begun but the ClientHello is not all there yet.
    case needMore
    /// The first byte is not a TLS handshake record (plain text, or anything else).
    case notTLS
    /// A handshake record that is not a well-formed ClientHello.
    case malformed
    /// A ClientHello without a host_name in server_name (or whose extensions lie beyond the first
    /// record: a ClientHello fragmented over several records, which no common client sends).
    case noServerName
    /// The host name's bytes, as a range of the input.
    case serverName(Range<Int>)
}

/// The largest TLS record plaintext (RFC 8446 5.1): a ClientHello is looked for in the first
/// record only, so this plus its 5-byte header bounds the peek.
public let maxTLSRecordPayload = 16_384
public let tlsRecordHeaderBytes = 5

/// Reads the server name of the ClientHello at the start of `count` bytes at `p`: record header
/// (type 22, version 3.x, length), handshake header (type 1, 3-byte length), then the ClientHello
/// body (version, random, session id, cipher suites, compression methods, extensions), every
/// length checked against what is there before it is used, and the server_name extension's list
/// read by `firstHostName`. Fuzzed with the `sni` target's bytes wrapped in a ClientHello.
public func scanClientHello(_ p: UnsafePointer<UInt8>, count: Int) -> ClientHelloScan {
    guard count >= 1 else { return .needMore }
    guard p[0] == 0x16 else { return .notTLS }
    guard count >= tlsRecordHeaderBytes else { return .needMore }
    guard p[1] == 3 else { return .notTLS }
    let recordLength = Int(p[3]) << 8 | Int(p[4])
    guard recordLength >= 4, recordLength <= maxTLSRecordPayload else { return .malformed }
    guard count >= tlsRecordHeaderBytes + recordLength else { return .needMore }
    let h = p + tlsRecordHeaderBytes
    guard h[0] == 1 else { return .malformed }
    let helloLength = Int(h[1]) << 16 | Int(h[2]) << 8 | Int(h[3])
    // Fragmented over records: only what the first record holds is read.
    let end = min(4 + helloLength, recordLength)
    var at = 4 + 2 + 32   // version, random
    guard at + 1 <= end else { return .malformed }
    at += 1 + Int(h[at])                          // session id
    guard at + 2 <= end else { return .malformed }
    at += 2 + (Int(h[at]) << 8 | Int(h[at + 1]))  // cipher suites
    guard at + 1 <= end else { return .malformed }
    at += 1 + Int(h[at])                          // compression methods
    guard at <= end else { return .malformed }
    if at == end { return .noServerName }   // no extensions
    guard at + 2 <= end else { return .malformed }
    let extensionsEnd = min(end, at + 2 + (Int(h[at]) << 8 | Int(h[at + 1])))
    at += 2
    while at + 4 <= extensionsEnd {
        let type = Int(h[at]) << 8 | Int(h[at + 1])
        let length = Int(h[at + 2]) << 8 | Int(h[at + 3])
        at += 4
        guard at + length <= extensionsEnd else { return helloLength > recordLength - 4 ? .noServerName : .malformed }
        if type == 0 {
            guard let name = firstHostName(inServerNameExtension: h + at, count: length) else { return .noServerName }
            let offset = tlsRecordHeaderBytes + at
            return .serverName((offset + name.lowerBound)..<(offset + name.upperBound))
        }
        at += length
    }
    return .noServerName
}
