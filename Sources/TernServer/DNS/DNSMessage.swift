/// DNS messages (RFC 1035) as the STRICT_DNS resolver needs them: one A or AAAA question out, the
/// address records of the answer back. The answer is untrusted bytes from the network: every count
/// and length is checked against what is left of the message before it is used, names are walked
/// with a bounded number of compression jumps, and a malformed message is a failure, never a trap.
public enum DNSRecordType: UInt16, Sendable {
    case a = 1
    case aaaa = 28

    var addressLength: Int { self == .a ? 4 : 16 }
}

/// What one answer said.
public enum DNSAnswer: Equatable, Sendable {
    /// The addresses (4 or 16 bytes each) with their TTLs in seconds; empty: the name exists but
    /// has no record of the type asked (NODATA).
    case addresses([DNSAddressRecord])
    /// NXDOMAIN: the server says the name does not exist.
    case noSuchName
    /// Anything else: SERVFAIL, REFUSED, a truncated or malformed message, a reply to another query.
    case failure(String)
}

public struct DNSAddressRecord: Equatable, Sendable {
    public let address: [UInt8]
    public let ttl: UInt32
}

public enum DNSMessage {
    /// The largest answer read: EDNS0 asks for at most this much, and more is not read.
    public static let maxAnswerBytes = 4096
    /// EDNS0 payload size offered (the DNS flag day's 1232: no IP fragmentation).
    static let ednsPayloadSize: UInt16 = 1232

    /// A standard recursive query for `name` (dots between labels; a trailing dot allowed) with an
    /// EDNS0 OPT record; nil when the name is not a valid DNS name (label over 63 bytes, name over
    /// 255, an empty label).
    public static func query(id: UInt16, name: String, type: DNSRecordType) -> [UInt8]? {
        guard let encoded = encodeName(name) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(12 + encoded.count + 4 + 11)
        appendUInt16(&out, id)
        appendUInt16(&out, 0x0100)            // QR=0, opcode QUERY, RD=1
        appendUInt16(&out, 1)                 // QDCOUNT
        appendUInt16(&out, 0)                 // ANCOUNT
        appendUInt16(&out, 0)                 // NSCOUNT
        appendUInt16(&out, 1)                 // ARCOUNT: the OPT record
        out += encoded
        appendUInt16(&out, type.rawValue)
        appendUInt16(&out, 1)                 // class IN
        out.append(0)                         // OPT: root name
        appendUInt16(&out, 41)                // type OPT
        appendUInt16(&out, ednsPayloadSize)   // class: UDP payload size
        out += [0, 0, 0, 0]                   // extended rcode, version, flags
        appendUInt16(&out, 0)                 // no options
        return out
    }

    /// The name in wire form (length-prefixed labels, then a zero byte); nil when invalid.
    static func encodeName(_ name: String) -> [UInt8]? {
        var text = Array(name.utf8)
        if text.last == UInt8(ascii: ".") { text.removeLast() }
        guard !text.isEmpty, text.count <= 253 else { return nil }
        var out: [UInt8] = []
        for label in text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63 else { return nil }
            out.append(UInt8(label.count))
            out += label
        }
        out.append(0)
        return out
    }

    /// Reads the answer to the query `id` for `name`/`type`: the address records of the answer
    /// section (CNAMEs in front of them are followed as the server already did: every record of
    /// the asked type and class IN in the answer is taken, as MOSN does).
    public static func parseAnswer(_ message: [UInt8], id: UInt16, name: String, type: DNSRecordType) -> DNSAnswer {
        var reader = Reader(bytes: message)
        guard let header = reader.header() else { return .failure("shorter than a DNS header (\(message.count) bytes)") }
        guard header.id == id else { return .failure("answer to another query (id \(header.id), sent \(id))") }
        guard header.flags & 0x8000 != 0 else { return .failure("not a response (QR bit clear)") }
        guard (header.flags >> 11) & 0xF == 0 else { return .failure("not an answer to a standard query (opcode \((header.flags >> 11) & 0xF))") }
        switch header.flags & 0xF {
        case 0: break
        case 3: return .noSuchName
        case 2: return .failure("server failure (SERVFAIL)")
        case 5: return .failure("query refused (REFUSED)")
        case let code: return .failure("error rcode \(code)")
        }
        guard header.questions == 1 else { return .failure("\(header.questions) questions in the answer, expected 1") }
        guard let asked = encodeName(name), let echoed = reader.name() else { return .failure("malformed question") }
        guard equalIgnoringCase(asked, echoed) else { return .failure("answer for another name") }
        guard let qtype = reader.uint16(), let qclass = reader.uint16(), qtype == type.rawValue, qclass == 1 else {
            return .failure("answer for another question type")
        }
        // Every record takes at least 11 bytes (root name, type, class, TTL, length): a count
        // that cannot fit in what is left is a lie, refused before the loop trusts it.
        guard Int(header.answers) * 11 <= reader.remaining else { return .failure("answer count \(header.answers) does not fit in the message") }
        var records: [DNSAddressRecord] = []
        for _ in 0..<header.answers {
            guard reader.skipName(), let rtype = reader.uint16(), let rclass = reader.uint16(),
                  let ttl = reader.uint32(), let length = reader.uint16() else { return .failure("malformed answer record") }
            guard let data = reader.take(Int(length)) else { return .failure("answer record longer than the message") }
            if rtype == type.rawValue && rclass == 1 {
                guard data.count == type.addressLength else { return .failure("address record of \(data.count) bytes") }
                // RFC 2181 §8: a TTL with the top bit set is taken as zero.
                records.append(DNSAddressRecord(address: Array(data), ttl: ttl & 0x8000_0000 != 0 ? 0 : ttl))
            }
        }
        if records.isEmpty && header.flags & 0x0200 != 0 {
            return .failure("truncated answer with no complete address record")
        }
        return .addresses(records)
    }

    static func equalIgnoringCase(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        for i in a.indices where lower(a[i]) != lower(b[i]) { return false }
        return true
    }

    @inline(__always) static func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c | 0x20 : c }

    static func appendUInt16(_ out: inout [UInt8], _ v: UInt16) {
        out.append(UInt8(v >> 8)); out.append(UInt8(v & 0xFF))
    }

    struct Header { let id: UInt16, flags: UInt16, questions: UInt16, answers: UInt16 }

    /// A cursor over the message; every read returns nil instead of running past the end.
    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var remaining: Int { bytes.count - offset }

        mutating func uint16() -> UInt16? {
            guard remaining >= 2 else { return nil }
            defer { offset += 2 }
            return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        }

        mutating func uint32() -> UInt32? {
            guard let high = uint16(), let low = uint16() else { return nil }
            return UInt32(high) << 16 | UInt32(low)
        }

        mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, remaining >= n else { return nil }
            defer { offset += n }
            return bytes[offset..<(offset + n)]
        }

        mutating func header() -> Header? {
            guard let id = uint16(), let flags = uint16(), let qd = uint16(), let an = uint16(), uint16() != nil, uint16() != nil else { return nil }
            return Header(id: id, flags: flags, questions: qd, answers: an)
        }

        /// Steps over a name in place (labels, ending at a zero byte or a compression pointer).
        mutating func skipName() -> Bool {
            var labels = 0
            while remaining >= 1 {
                let length = bytes[offset]
                if length == 0 { offset += 1; return true }
                if length & 0xC0 == 0xC0 { guard remaining >= 2 else { return false }; offset += 2; return true }
                if length & 0xC0 != 0 { return false }   // the reserved label types
                labels += 1
                guard labels <= 127, remaining >= 1 + Int(length) else { return false }
                offset += 1 + Int(length)
            }
            return false
        }

        /// The name at the cursor in wire form, compression pointers followed (each must point
        /// backwards, at most 32 of them, the whole name at most 255 bytes); the cursor ends after
        /// the name's own bytes.
        mutating func name() -> [UInt8]? {
            var out: [UInt8] = []
            var position = offset
            var end: Int? = nil
            var jumps = 0
            while true {
                guard position < bytes.count else { return nil }
                let length = Int(bytes[position])
                if length == 0 {
                    out.append(0)
                    offset = end ?? (position + 1)
                    return out.count <= 255 ? out : nil
                }
                if length & 0xC0 == 0xC0 {
                    guard position + 1 < bytes.count else { return nil }
                    let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                    jumps += 1
                    guard jumps <= 32, target < position else { return nil }
                    if end == nil { end = position + 2 }
                    position = target
                    continue
                }
                guard length & 0xC0 == 0, position + 1 + length <= bytes.count else { return nil }
                out.append(UInt8(length))
                out += bytes[(position + 1)...(position + length)]
                guard out.count <= 255 else { return nil }
                position += 1 + length
            }
        }
    }
}
