import TernHTTP1

/// HTTP/1 request and response heads (HTTPParser), as a connection feeds them: pipelined messages
/// one after another through one reused `HTTPHead`, bodies skipped by their framing.
///
/// Control bytes: 0 = where the head is split in two (the second call carries `scanned` from the
/// first), 1 bit 0 = also feed it byte by byte (inputs up to 600 bytes), 2 bit 7 = small limits
/// (head bytes 24 + 4 × bits 0-6, header count bits 0-3 of byte 3), 3 bits 4-7 = the request
/// method a response answers.
///
/// Rules: split and byte-by-byte feeding end in the same kind of result as the whole input, and
/// a complete head is the same head. Two things may differ, both about refusing garbage before
/// the head is complete: an incomplete head refused on the whole input may still wait when split
/// (the early method check runs only on calls that start from the first byte), and a refusal's
/// status may differ (an early bare-LF refusal is 400 where the whole head is refused for, say,
/// its version with 505). A complete head's offsets lie inside it and hold what they claim
/// (token names, clean values, the Host index, the limits).
enum HTTPHeadChecks {
    static func request(_ data: UnsafeRawBufferPointer) throws { try run(data, isRequest: true) }
    static func response(_ data: UnsafeRawBufferPointer) throws { try run(data, isRequest: false) }

    static let methods: [HTTPHead.Method] = [.get, .head, .post, .put, .delete, .connect, .options, .other]

    static func run(_ data: UnsafeRawBufferPointer, isRequest: Bool) throws {
        let input = ControlledInput(data)
        let (c0, c1, c2, c3) = input.control
        let limits = c2 & 0x80 != 0
            ? HTTPLimits(maxHeadBytes: 24 + Int(c2 & 0x7F) * 4, maxHeaderCount: Int(c3 & 0x0F))
            : HTTPLimits()
        let requestMethod = methods[Int(c3 >> 4) % methods.count]
        let payload = input.payload

        func parse(_ bytes: ArraySlice<UInt8>, _ head: HTTPHead, _ scanned: inout Int) -> HeadParseResult {
            Array(bytes).withBytes { p, n in
                isRequest
                    ? HTTPParser.parseRequest(p, n, limits: limits, head: head, scanned: &scanned)
                    : HTTPParser.parseResponse(p, n, limits: limits, head: head, requestMethod: requestMethod, scanned: &scanned)
            }
        }

        let reused = HTTPHead()   // a connection's scratch: stale values must not leak into the next head
        var at = 0
        var message = 0
        while at < payload.count && message < 16 {
            let rest = payload[at...]
            let fresh = HTTPHead()
            var scanned = 0
            let whole = parse(rest, fresh, &scanned)

            // Split in two at a fuzzer-chosen point.
            let cut = rest.startIndex + ControlledInput.cut(c0 &+ UInt8(truncatingIfNeeded: message &* 41), rest.count)
            scanned = 0
            var split = parse(rest[..<cut], reused, &scanned)
            try require(scanned >= 0 && scanned <= cut - rest.startIndex, "scanned \(scanned) outside the \(cut - rest.startIndex) bytes given")
            if split == .needMore { split = parse(rest, reused, &scanned) }
            try require(agree(whole, split), "message \(message): whole input gave \(whole), split at \(cut - rest.startIndex) gave \(split)")
            if case .complete = whole {
                try require(Snapshot(fresh, isRequest) == Snapshot(reused, isRequest), "message \(message): split head differs from whole head")
            }

            if c1 & 1 != 0 && rest.count <= 600 {
                let bytewise = HTTPHead()
                scanned = 0
                var result = HeadParseResult.needMore
                var k = rest.startIndex
                while result == .needMore && k < rest.endIndex {
                    k += 1
                    result = parse(rest[..<k], bytewise, &scanned)
                }
                try require(agree(whole, result), "message \(message): whole input gave \(whole), byte by byte gave \(result)")
                if case .complete = whole {
                    try require(Snapshot(fresh, isRequest) == Snapshot(bytewise, isRequest), "message \(message): byte-by-byte head differs")
                }
            }

            guard case .complete = whole else { return }
            try checkHead(fresh, Array(rest), limits: limits, isRequest: isRequest)
            at += fresh.headLength
            switch fresh.framing {
            case .none: break
            case .contentLength(let length): at += Int(min(length, Int64(payload.count - at)))
            case .chunked:
                guard let bodyLength = ChunkedChecks.wholeBodyLength(payload[at...]) else { return }
                at += bodyLength
            case .untilClose: return
            }
            message += 1
        }
    }

    static func agree(_ whole: HeadParseResult, _ split: HeadParseResult) -> Bool {
        switch (whole, split) {
        case (.complete, .complete), (.needMore, .needMore), (.error, .error), (.error, .needMore): return true
        default: return false
        }
    }

    /// What a parsed head says, for comparing heads parsed different ways.
    struct Snapshot: Equatable {
        struct Field: Equatable { let name: Int32, nameLength: Int32, value: Int32, valueLength: Int32, dropped: Bool }
        var headLength: Int, versionMinor: Int
        var method: [Int] = [], status = 0, reason: [Int] = []
        var fields: [Field]
        var framing: BodyFraming, keepAlive: Bool, expectContinue: Bool, hostIndex: Int, bodilessContentLength: Int64

        init(_ h: HTTPHead, _ isRequest: Bool) {
            headLength = h.headLength; versionMinor = h.versionMinor
            if isRequest { method = [h.methodStart, h.methodLength, h.targetStart, h.targetLength, h.pathLength] }
            else { status = h.status; reason = [h.reasonStart, h.reasonLength] }
            fields = h.fields.map { Field(name: $0.nameStart, nameLength: $0.nameLength, value: $0.valueStart, valueLength: $0.valueLength, dropped: $0.dropped) }
            framing = h.framing; keepAlive = h.keepAlive; expectContinue = h.expectContinue
            hostIndex = h.hostIndex; bodilessContentLength = h.bodilessContentLength
        }
    }

    static func isToken(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }
    static func isFieldValueByte(_ b: UInt8) -> Bool { b == 9 || (b >= 32 && b != 127) }

    static func checkHead(_ h: HTTPHead, _ p: [UInt8], limits: HTTPLimits, isRequest: Bool) throws {
        let end = h.headLength
        try require(end >= 4 && end <= p.count && end <= limits.maxHeadBytes, "head length \(end) of \(p.count) bytes")
        try require(Array(p[(end - 4)..<end]) == [13, 10, 13, 10], "head does not end with CRLFCRLF")
        func inside(_ start: Int, _ length: Int) -> Bool { start >= 0 && length >= 0 && start + length <= end }
        if isRequest {
            try require(inside(h.methodStart, h.methodLength) && h.methodLength > 0, "method range")
            try require(p[h.methodStart..<(h.methodStart + h.methodLength)].allSatisfy(isToken), "method bytes")
            try require(inside(h.targetStart, h.targetLength) && h.targetLength > 0 && h.pathLength <= h.targetLength, "target range")
            try require(p[h.targetStart..<(h.targetStart + h.targetLength)].allSatisfy { $0 > 32 && $0 < 127 }, "target bytes")
        } else {
            try require(h.status >= 100 && h.status <= 999, "status \(h.status)")
            try require(inside(h.reasonStart, h.reasonLength), "reason range")
            try require(p[h.reasonStart..<(h.reasonStart + h.reasonLength)].allSatisfy(isFieldValueByte), "reason bytes")
        }
        try require(h.versionMinor >= 0 && h.versionMinor <= 9, "version")
        try require(h.fields.count <= limits.maxHeaderCount, "\(h.fields.count) fields over the limit")
        for f in h.fields {
            let ns = Int(f.nameStart), nl = Int(f.nameLength), vs = Int(f.valueStart), vl = Int(f.valueLength)
            try require(inside(ns, nl) && nl > 0 && inside(vs, vl), "field range")
            try require(p[ns..<(ns + nl)].allSatisfy(isToken), "field name bytes")
            let value = p[vs..<(vs + vl)]
            try require(value.allSatisfy(isFieldValueByte), "field value bytes")
            try require(value.first.map { $0 != 32 && $0 != 9 } ?? true, "value starts with whitespace")
            try require(value.last.map { $0 != 32 && $0 != 9 } ?? true, "value ends with whitespace")
        }
        if h.hostIndex >= 0 {
            try require(h.hostIndex < h.fields.count, "host index")
            let f = h.fields[h.hostIndex]
            try require(p[Int(f.nameStart)..<Int(f.nameStart + f.nameLength)].map { $0 | 0x20 } == Array("host".utf8), "host index names another field")
        } else {
            try require(h.hostIndex == -1, "host index \(h.hostIndex)")
        }
        if case .contentLength(let length) = h.framing { try require(length >= 0, "negative Content-Length") }
    }
}
