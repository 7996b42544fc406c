import TernTLS

/// The server_name extension of a TLS ClientHello (`firstHostName`), read in place in the
/// ClientHello callback that picks a `tls_context_set` certificate. The input is the extension's
/// bytes as the client sent them.
///
/// Rules: the name found lies inside the input; it is the one a plain reading of RFC 6066 over a
/// copied array finds (an independent walk with checked indexing); and it is found the same when
/// the bytes sit at the end of a larger buffer.
enum ServerNameChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let bytes = Array(data)
        let found = bytes.withBytes { firstHostName(inServerNameExtension: $0, count: $1) }
        if let found {
            try require(found.lowerBound >= 0 && found.upperBound <= bytes.count, "name \(found) outside \(bytes.count) bytes")
        }
        try require(found == reference(bytes), "in place \(String(describing: found)), reference \(String(describing: reference(bytes)))")
        let padded = [UInt8](repeating: 0xAA, count: 7) + bytes
        let shifted = padded.withBytes { p, n in firstHostName(inServerNameExtension: p + 7, count: n - 7) }
        try require(shifted == found, "at an offset \(String(describing: shifted)), alone \(String(describing: found))")
    }

    /// RFC 6066's list over an array, every index checked by the array itself.
    static func reference(_ b: [UInt8]) -> Range<Int>? {
        guard b.count >= 2 else { return nil }
        let end = min(b.count, 2 + Int(b[0]) * 256 + Int(b[1]))
        var i = 2
        while end - i >= 3 {
            let n = Int(b[i + 1]) * 256 + Int(b[i + 2])
            if end - (i + 3) < n { return nil }
            if b[i] == 0 { return (i + 3)..<(i + 3 + n) }
            i += 3 + n
        }
        return nil
    }
}
