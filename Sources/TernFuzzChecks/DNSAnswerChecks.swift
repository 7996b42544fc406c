import TernServer

/// A DNS answer as the STRICT_DNS resolver reads it off UDP (`DNSMessage.parseAnswer`): untrusted
/// bytes from the network. The input is the whole message; the query id is its first two bytes and
/// the name asked is the question's own (read here with labels only), so the fuzzer gets past the
/// checks that a reply belongs to its query and explores the answer records.
///
/// Rules: the same bytes give the same result; every address is 4 bytes for A and 16 for AAAA and
/// every TTL is below 2^31; and bytes after a complete answer change nothing (nothing past the
/// counts is read).
enum DNSAnswerChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let bytes = Array(data)
        let id = bytes.count >= 2 ? UInt16(bytes[0]) << 8 | UInt16(bytes[1]) : 0
        let name = questionName(bytes) ?? "a."
        for type in [DNSRecordType.a, .aaaa] {
            let result = DNSMessage.parseAnswer(bytes, id: id, name: name, type: type)
            try require(DNSMessage.parseAnswer(bytes, id: id, name: name, type: type) == result, "two readings differ")
            guard case .addresses(let records) = result else { continue }
            for r in records {
                try require(r.address.count == (type == .a ? 4 : 16), "address of \(r.address.count) bytes for \(type)")
                try require(r.ttl < 0x8000_0000, "TTL \(r.ttl)")
            }
            let extended = DNSMessage.parseAnswer(bytes + [0xC0, 0x0C, 0xFF, 0], id: id, name: name, type: type)
            try require(extended == result, "trailing bytes changed \(result) into \(extended)")
        }
    }

    /// The question's name at offset 12 when it is plain labels (no pointer), as text with a dot.
    static func questionName(_ b: [UInt8]) -> String? {
        var i = 12
        var labels: [String] = []
        while i < b.count {
            let n = Int(b[i])
            if n == 0 { return labels.isEmpty ? nil : labels.joined(separator: ".") + "." }
            guard n <= 63, i + 1 + n <= b.count else { return nil }
            let label = b[(i + 1)...(i + n)]
            guard !label.contains(UInt8(ascii: ".")) else { return nil }
            labels.append(String(decoding: label, as: UTF8.self))
            i += 1 + n
        }
        return nil
    }
}
