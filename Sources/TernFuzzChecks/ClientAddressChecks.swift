import TernCore

/// The client address `ip_access` reads from a request header (`IPAddressBits.parse`), in place,
/// without making text. The input is the header value's bytes.
///
/// Rules: the address found is the one an independent reading finds (split as Go's
/// SplitHostPort does, then `SocketAddress.parse` and `AddressRange` on strings, as the config
/// reader parses addresses), and the bytes are read the same at an offset in a larger buffer with
/// other bytes after them (nothing past `count` is read).
enum ClientAddressChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let bytes = Array(data)
        let found = bytes.withBytes { IPAddressBits.parse($0, $1) }
        let expected = reference(bytes)
        try require((found == nil) == (expected == nil), "in place \(String(describing: found)), reference \(String(describing: expected))")
        if let found, let expected {
            try require(AddressRangeSet([expected]).contains(found), "in place \(found) is not \(expected)")
        }
        let padded = [UInt8](repeating: 0x31, count: 5) + bytes + Array("1:2:3".utf8)
        let shifted = padded.withBytes { p, _ in IPAddressBits.parse(p + 5, bytes.count) }
        try require(shifted == found, "at an offset \(String(describing: shifted)), alone \(String(describing: found))")
    }

    /// The address as a full-length range (/32 or /128), read through strings.
    static func reference(_ b: [UInt8]) -> AddressRange? {
        // An IP literal is ASCII without NUL (a NUL would end the C string inet_pton reads).
        guard b.allSatisfy({ $0 != 0 && $0 < 0x80 }) else { return nil }
        var text = Substring(String(decoding: b, as: UTF8.self))
        while let f = text.first, f == " " || f == "\t" { text = text.dropFirst() }
        while let l = text.last, l == " " || l == "\t" { text = text.dropLast() }
        func digits(_ s: Substring) -> Bool { !s.isEmpty && s.allSatisfy { $0 >= "0" && $0 <= "9" } }
        var host: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && digits(rest.dropFirst())) else { return nil }
            guard host.contains(":") else { return nil }
        } else {
            let colons = text.filter { $0 == ":" }.count
            if colons == 1 {
                let colon = text.firstIndex(of: ":")!
                guard digits(text[text.index(after: colon)...]) else { return nil }
                host = text[..<colon]
                guard !host.contains(".") || SocketAddress.parse("\(host):0") != nil, !host.isEmpty else { return nil }
            } else {
                host = text
            }
        }
        let v6 = host.contains(":")
        // The config reader's path: an IPv4 literal must not look like IPv6 and the reverse.
        guard !host.isEmpty, host != "localhost", SocketAddress.parse(v6 ? "[\(host)]:0" : "\(host):0") != nil else { return nil }
        return AddressRange(address: String(host), length: v6 ? 128 : 32)
    }
}
