import TernBolt
import TernCore

/// Bolt v1/v2 frames (BoltCodec), decoded one after another as a session does.
///
/// Control bytes: 0 bit 7 = a small frame limit (4 × bits 0-6 bytes, else 16 MiB), 1 = where a
/// prefix of each frame is cut, 2-3 = the new request id's low bytes for the copy.
///
/// Rules: a prefix of a decoded frame asks for more; a prefix of a refused input asks for more or
/// is refused the same way; a frame's parts lie inside it; the header walk matches an independent
/// walk of the map; a copy with a new id decodes to the same frame with that id and the same bytes
/// elsewhere (CRC recomputed), and copying it back gives the original bytes; the answers and
/// heartbeats Tern writes for a frame decode as what they claim to be.
enum BoltChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let input = ControlledInput(data)
        let (c0, c1, c2, c3) = input.control
        let maxFrame = c0 & 0x80 != 0 ? Int(c0 & 0x7F) * 4 : 16 << 20
        let newID = 0xA5A5_0000 | UInt32(c2) << 8 | UInt32(c3)
        let payload = input.payload
        var at = 0
        var frames = 0
        while at < payload.count && frames < 32 {
            let rest = Array(payload[at...])
            let whole = decode(rest, rest.count, maxFrame)
            let cut = ControlledInput.cut(c1, rest.count)
            let prefix = decode(rest, cut, maxFrame)
            switch whole {
            case .needMore:
                try require(prefix == .needMore, "prefix of \(cut) bytes gave \(prefix), the whole \(rest.count) need more")
                return
            case .error:
                try require(prefix == .needMore || prefix == whole, "prefix of \(cut) bytes gave \(prefix), the whole gave \(whole)")
                return
            case .frame(let frame):
                try require(cut >= frame.frameLength ? prefix == whole : prefix == .needMore,
                            "prefix of \(cut) bytes gave \(prefix) for a frame of \(frame.frameLength)")
                try checkFrame(frame, Array(rest[..<frame.frameLength]), maxFrame: maxFrame, newID: newID)
                at += frame.frameLength
            }
            frames += 1
        }
    }

    static func decode(_ bytes: [UInt8], _ count: Int, _ maxFrame: Int) -> BoltDecodeResult {
        bytes.withBytes { p, _ in BoltCodec.decode(p, count, maxFrame: maxFrame) }
    }

    static func checkFrame(_ frame: BoltFrame, _ bytes: [UInt8], maxFrame: Int, newID: UInt32) throws {
        try require(frame.frameLength <= maxFrame && frame.frameLength == bytes.count, "frame length \(frame.frameLength)")
        try require(frame.fixedLength <= frame.classOffset && frame.classOffset <= frame.headerOffset
                    && frame.headerOffset <= frame.contentOffset && frame.contentOffset + frame.contentLength <= frame.frameLength,
                    "frame parts out of order")
        try require(frame.protocolCode == bytes[0] && (frame.protocolCode == 1 || frame.protocolCode == 2), "protocol byte")

        // The header walk against an independent one.
        let map = Array(bytes[frame.headerOffset..<(frame.headerOffset + frame.headerLength)])
        var walked: [[UInt8]] = []
        map.withBytes { p, n in
            BoltCodec.forEachHeader(p, n) { k, kl, v, vl in
                walked.append(Array(UnsafeBufferPointer(start: k, count: kl)))
                walked.append(Array(UnsafeBufferPointer(start: v, count: vl)))
                return false
            }
        }
        try require(walked == headerPairs(map), "header walk differs from the map's layout")

        // A copy with a new id, then back with the old one.
        let copy = ByteBuffer(capacity: 64)
        bytes.withBytes { p, _ in BoltCodec.copyFrame(p, frame, newID: newID, into: copy) }
        let copied = copy.readableArray()
        var expected = frame
        expected.requestID = newID
        let redecoded = decode(copied, copied.count, maxFrame)
        try require(redecoded == .frame(expected), "the copy decodes to \(redecoded)")
        let idRange = frame.requestIDOffset..<(frame.requestIDOffset + 4)
        let crcRange = frame.hasCRC ? (frame.frameLength - 4)..<frame.frameLength : frame.frameLength..<frame.frameLength
        for i in 0..<bytes.count where !idRange.contains(i) && !crcRange.contains(i) {
            try require(copied[i] == bytes[i], "the copy changed byte \(i)")
        }
        let back = ByteBuffer(capacity: 64)
        copied.withBytes { p, _ in BoltCodec.copyFrame(p, expected, newID: frame.requestID, into: back) }
        try require(back.readableArray() == bytes, "copying back does not restore the frame")

        // What Tern writes in answer to this frame.
        let answer = ByteBuffer(capacity: 64)
        BoltCodec.writeResponse(answer, protocolCode: frame.protocolCode, command: frame.command == .heartbeat ? .heartbeat : .response,
                                requestID: frame.requestID, codec: frame.codec, status: .serverException)
        let answered = answer.readableArray()
        guard case .frame(let a) = decode(answered, answered.count, 1 << 24) else { throw FuzzCheckFailure(description: "Tern's answer does not decode") }
        try require(a.kind == .response && a.requestID == frame.requestID && a.protocolCode == frame.protocolCode
                    && a.status == BoltStatus.serverException.rawValue && a.frameLength == answered.count, "Tern's answer decodes wrongly: \(a)")
        let heartbeat = ByteBuffer(capacity: 64)
        BoltCodec.writeHeartbeat(heartbeat, protocolCode: frame.protocolCode, requestID: newID)
        let beat = heartbeat.readableArray()
        guard case .frame(let h) = decode(beat, beat.count, 1 << 24) else { throw FuzzCheckFailure(description: "Tern's heartbeat does not decode") }
        try require(h.kind == .request && h.command == .heartbeat && h.requestID == newID && h.frameLength == beat.count, "Tern's heartbeat decodes wrongly")
    }

    /// Keys and values of a valid header map, alternating, pairs with a null key left out and a
    /// null value read as empty.
    static func headerPairs(_ map: [UInt8]) -> [[UInt8]] {
        var items: [[UInt8]?] = []
        var i = 0
        while i + 4 <= map.count {
            let length = map[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) }
            i += 4
            if length == 0xFFFF_FFFF { items.append(nil); continue }
            items.append(Array(map[i..<min(i + length, map.count)]))
            i += length
        }
        var pairs: [[UInt8]] = []
        var k = 0
        while k + 1 < items.count {
            if let key = items[k] { pairs.append(key); pairs.append(items[k + 1] ?? []) }
            k += 2
        }
        return pairs
    }
}
