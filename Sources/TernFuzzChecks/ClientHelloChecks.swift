import TernTLS

/// The SNI router's ClientHello walk (`scanClientHello`), read in place from the bytes a client
/// sent before anything is consumed. Input: one control byte (where to cut a prefix), then the
/// connection's first bytes.
///
/// Rules: a server name found lies inside the input; the result is the one an independent walk
/// over a copied array finds (every index checked by the array); a prefix answers `needMore` or
/// the same as the whole (more bytes never change a decision); and the bytes at an offset in a
/// larger buffer give the same answer.
enum ClientHelloChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let control = data.count > 0 ? data[0] : 0
        let bytes = data.count > 1 ? Array(data[1...]) : []
        let whole = bytes.withBytes { scanClientHello($0, count: $1) }
        if case .serverName(let r) = whole {
            try require(r.lowerBound >= 0 && r.upperBound <= bytes.count, "name \(r) outside \(bytes.count) bytes")
        }
        let expected = reference(bytes)
        try require(whole == expected, "in place \(whole), reference \(expected)")
        let cut = ControlledInput.cut(control, bytes.count)
        let prefix = Array(bytes[0..<cut]).withBytes { scanClientHello($0, count: $1) }
        try require(prefix == .needMore || prefix == whole, "prefix of \(cut): \(prefix), whole: \(whole)")
        let padded = [UInt8](repeating: 0x16, count: 7) + bytes
        let shifted = padded.withBytes { p, n in scanClientHello(p + 7, count: n - 7) }
        try require(shifted == whole, "at an offset \(shifted), alone \(whole)")
    }

    /// The record, handshake and ClientHello layout of RFC 8446 over an array.
    static func reference(_ b: [UInt8]) -> ClientHelloScan {
        if b.isEmpty { return .needMore }
        if b[0] != 22 { return .notTLS }
        if b.count < 5 { return .needMore }
        if b[1] != 3 { return .notTLS }
        let recordLength = Int(b[3]) * 256 + Int(b[4])
        if recordLength < 4 || recordLength > 16_384 { return .malformed }
        if b.count < 5 + recordLength { return .needMore }
        let record = Array(b[5..<(5 + recordLength)])
        if record[0] != 1 { return .malformed }
        let declared = Int(record[1]) * 65_536 + Int(record[2]) * 256 + Int(record[3])
        let hello = Array(record[4..<min(record.count, 4 + declared)])
        let fragmented = declared > record.count - 4
        var i = 34
        func skip(_ lengthBytes: Int) -> Bool {
            guard hello.count - i >= lengthBytes else { return false }
            let n = lengthBytes == 1 ? Int(hello[i]) : Int(hello[i]) * 256 + Int(hello[i + 1])
            i += lengthBytes + n
            return true
        }
        guard skip(1), skip(2), skip(1), i <= hello.count else { return .malformed }
        if i == hello.count { return .noServerName }
        guard hello.count - i >= 2 else { return .malformed }
        let extensionsEnd = min(hello.count, i + 2 + Int(hello[i]) * 256 + Int(hello[i + 1]))
        i += 2
        while extensionsEnd - i >= 4 {
            let type = Int(hello[i]) * 256 + Int(hello[i + 1])
            let n = Int(hello[i + 2]) * 256 + Int(hello[i + 3])
            i += 4
            if extensionsEnd - i < n { return fragmented ? .noServerName : .malformed }
            if type == 0 {
                guard let name = ServerNameChecks.reference(Array(hello[i..<(i + n)])) else { return .noServerName }
                return .serverName((5 + 4 + i + name.lowerBound)..<(5 + 4 + i + name.upperBound))
            }
            i += n
        }
        return .noServerName
    }
}
