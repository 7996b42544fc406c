import TernCore

/// SOFA bolt frames, v1 (protocol byte 1) and v2 (protocol byte 2), parsed in place.
///
/// v1 request:  proto type cmd(2) ver2 id(4) codec timeout(4) classLen(2) headerLen(2) contentLen(4)  = 22 bytes
/// v1 response: proto type cmd(2) ver2 id(4) codec status(2)  classLen(2) headerLen(2) contentLen(4)  = 20 bytes
/// v2 adds ver1 after proto and a switch byte after codec (24 / 22 bytes); switch bit 0 set means a
/// CRC32 of everything before it follows the content.
/// Then: class name, header map (uint32 length + bytes for each key and value; 0xFFFFFFFF is null), content.
public enum BoltKind: UInt8, Sendable {
    case response = 0
    case request = 1
    case oneway = 2
}

public enum BoltCommand: UInt16, Sendable {
    case heartbeat = 0
    case request = 1
    case response = 2
}

/// Response status codes (sofa-bolt ResponseStatus).
public enum BoltStatus: UInt16, Sendable {
    case success = 0x0000
    case error = 0x0001
    case serverException = 0x0002
    case unknown = 0x0003
    case serverThreadpoolBusy = 0x0004
    case errorComm = 0x0005
    case noProcessor = 0x0006
    case timeout = 0x0007
    case clientSendError = 0x0008
    case codecException = 0x0009
    case connectionClosed = 0x0010
    case serverSerialException = 0x0011
    case serverDeserialException = 0x0012
}

/// The fixed part of one frame, with the offsets of its variable parts.
public struct BoltFrame: Equatable, Sendable {
    public var protocolCode: UInt8
    public var kind: BoltKind
    public var command: BoltCommand
    public var requestID: UInt32
    public var codec: UInt8
    public var switchByte: UInt8 = 0
    public var timeoutMS: Int32 = 0
    public var status: UInt16 = 0
    public var classLength: Int
    public var headerLength: Int
    public var contentLength: Int
    public var fixedLength: Int
    public var hasCRC: Bool

    /// Where the request id sits in the frame (it is rewritten per upstream connection).
    public var requestIDOffset: Int { protocolCode == 1 ? 5 : 6 }
    public var classOffset: Int { fixedLength }
    public var headerOffset: Int { fixedLength + classLength }
    public var contentOffset: Int { fixedLength + classLength + headerLength }
    public var frameLength: Int { fixedLength + classLength + headerLength + contentLength + (hasCRC ? 4 : 0) }
}

public enum BoltDecodeResult: Equatable {
    case needMore
    case frame(BoltFrame)
    case error(String)
}

public enum BoltCodec {
    public static let v1RequestLength = 22, v1ResponseLength = 20
    public static let v2RequestLength = 24, v2ResponseLength = 22

    @inline(__always) static func u16(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt16 { UInt16(p[i]) << 8 | UInt16(p[i + 1]) }
    @inline(__always) static func u32(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt32 {
        UInt32(p[i]) << 24 | UInt32(p[i + 1]) << 16 | UInt32(p[i + 2]) << 8 | UInt32(p[i + 3])
    }

    /// Sniffing for `Auto`: a bolt frame starts with protocol 1 and a kind byte, or protocol 2 and version 1.
    public static func sniff(_ p: UnsafePointer<UInt8>, _ n: Int) -> SniffResult {
        if n < 1 { return .needMoreBytes }
        if p[0] != 1 && p[0] != 2 { return .noMatch }
        if n < 2 { return .needMoreBytes }
        if p[0] == 1 { return p[1] <= 2 ? .match : .noMatch }
        return p[1] == 1 ? .match : .noMatch
    }

    /// Decodes the frame at the start of `p[0..<n]`. Lengths are bounded by `maxFrame` before the
    /// frame is waited for, and the header map is checked against its declared length.
    public static func decode(_ p: UnsafePointer<UInt8>, _ n: Int, maxFrame: Int) -> BoltDecodeResult {
        guard n >= 1 else { return .needMore }
        let proto = p[0]
        guard proto == 1 || proto == 2 else { return .error("unknown bolt protocol byte \(proto)") }
        let v2 = proto == 2
        let base = v2 ? 1 : 0   // v2 has ver1 at byte 1, so everything after shifts by one
        guard n >= 2 + base else { return .needMore }
        if v2 && p[1] != 1 { return .error("unknown bolt v2 version \(p[1])") }
        guard let kind = BoltKind(rawValue: p[1 + base]) else { return .error("unknown bolt command type \(p[1 + base])") }
        let fixed = kind == .response ? (v2 ? v2ResponseLength : v1ResponseLength) : (v2 ? v2RequestLength : v1RequestLength)
        guard n >= fixed else { return .needMore }
        guard let command = BoltCommand(rawValue: u16(p, 2 + base)) else { return .error("unknown bolt command code \(u16(p, 2 + base))") }
        switch (kind, command) {
        case (.response, .response), (.response, .heartbeat), (.request, .request), (.request, .heartbeat), (.oneway, .request): break
        default: return .error("bolt command code \(command.rawValue) does not fit command type \(kind.rawValue)")
        }
        let requestID = u32(p, 5 + base)
        let codec = p[9 + base]
        var at = 10 + base
        var switchByte: UInt8 = 0
        if v2 { switchByte = p[at]; at += 1 }
        var timeout: Int32 = 0, status: UInt16 = 0
        if kind == .response { status = u16(p, at); at += 2 } else { timeout = Int32(bitPattern: u32(p, at)); at += 4 }
        let classLength = Int(u16(p, at)), headerLength = Int(u16(p, at + 2)), contentLength = Int(u32(p, at + 4))
        let hasCRC = v2 && switchByte & 0x01 != 0
        var frame = BoltFrame(protocolCode: proto, kind: kind, command: command, requestID: requestID, codec: codec,
                              classLength: classLength, headerLength: headerLength, contentLength: contentLength,
                              fixedLength: fixed, hasCRC: hasCRC)
        frame.switchByte = switchByte
        frame.timeoutMS = timeout
        frame.status = status
        if frame.frameLength > maxFrame {
            return .error("bolt frame of \(frame.frameLength) bytes exceeds the maximum of \(maxFrame)")
        }
        guard n >= frame.frameLength else { return .needMore }
        if headerLength > 0, let problem = checkHeaderMap(p + frame.headerOffset, headerLength) { return .error(problem) }
        if hasCRC {
            let end = frame.frameLength - 4
            let expected = u32(p, end)
            if CRC32.checksum(p, end) != expected { return .error("bolt v2 CRC32 mismatch") }
        }
        return .frame(frame)
    }

    /// Every key and value length must fit inside the map exactly.
    static func checkHeaderMap(_ p: UnsafePointer<UInt8>, _ n: Int) -> String? {
        var i = 0
        var isKey = true
        while i < n {
            guard i + 4 <= n else { return "bolt header map lengths disagree with its size" }
            let length = u32(p, i)
            i += 4
            if length == 0xFFFF_FFFF { isKey.toggle(); continue }   // null
            guard Int(length) <= n - i else { return "bolt header map lengths disagree with its size" }
            i += Int(length)
            isKey.toggle()
        }
        return isKey ? nil : "bolt header map ends with a key and no value"
    }

    /// Calls `body` with each (key, value) of the header map, in place; stops when it returns true.
    @inline(__always)
    public static func forEachHeader(_ p: UnsafePointer<UInt8>, _ n: Int, _ body: (UnsafePointer<UInt8>, Int, UnsafePointer<UInt8>, Int) -> Bool) {
        var i = 0
        while i + 8 <= n {
            let kl = u32(p, i); i += 4
            let keyStart = i
            let keyLength = kl == 0xFFFF_FFFF ? 0 : Int(kl)
            i += keyLength
            guard i + 4 <= n else { return }
            let vl = u32(p, i); i += 4
            let valueLength = vl == 0xFFFF_FFFF ? 0 : Int(vl)
            if kl != 0xFFFF_FFFF && body(p + keyStart, keyLength, p + i, valueLength) { return }
            i += valueLength
        }
    }

    @inline(__always) static func put16(_ out: ByteBuffer, _ v: UInt16) { out.writeByte(UInt8(v >> 8)); out.writeByte(UInt8(v & 0xFF)) }
    @inline(__always) static func put32(_ out: ByteBuffer, _ v: UInt32) {
        out.writeByte(UInt8(v >> 24)); out.writeByte(UInt8((v >> 16) & 0xFF)); out.writeByte(UInt8((v >> 8) & 0xFF)); out.writeByte(UInt8(v & 0xFF))
    }

    /// Writes an empty response (no class, header or content) in the protocol version of the request.
    public static func writeResponse(_ out: ByteBuffer, protocolCode: UInt8, command: BoltCommand, requestID: UInt32, codec: UInt8, status: BoltStatus) {
        out.writeByte(protocolCode)
        if protocolCode == 2 { out.writeByte(1) }
        out.writeByte(BoltKind.response.rawValue)
        put16(out, command.rawValue)
        out.writeByte(1)        // ver2
        put32(out, requestID)
        out.writeByte(codec)
        if protocolCode == 2 { out.writeByte(0) }   // switch: no CRC
        put16(out, status.rawValue)
        put16(out, 0); put16(out, 0); put32(out, 0)
    }

    /// Writes a heartbeat request (Tern probing an idle upstream connection).
    public static func writeHeartbeat(_ out: ByteBuffer, protocolCode: UInt8, requestID: UInt32) {
        out.writeByte(protocolCode)
        if protocolCode == 2 { out.writeByte(1) }
        out.writeByte(BoltKind.request.rawValue)
        put16(out, BoltCommand.heartbeat.rawValue)
        out.writeByte(1)
        put32(out, requestID)
        out.writeByte(1)
        if protocolCode == 2 { out.writeByte(0) }
        put32(out, 1000)
        put16(out, 0); put16(out, 0); put32(out, 0)
    }

    /// Copies a whole frame with its request id replaced (and its CRC recomputed when it has one).
    public static func copyFrame(_ p: UnsafePointer<UInt8>, _ frame: BoltFrame, newID: UInt32, into out: ByteBuffer) {
        let start = out.writerIndex
        out.write(p, count: frame.frameLength)
        let w = out.base + start + frame.requestIDOffset
        w[0] = UInt8(newID >> 24); w[1] = UInt8((newID >> 16) & 0xFF); w[2] = UInt8((newID >> 8) & 0xFF); w[3] = UInt8(newID & 0xFF)
        if frame.hasCRC {
            let crcAt = start + frame.frameLength - 4
            let crc = CRC32.checksum(UnsafePointer(out.base + start), frame.frameLength - 4)
            let c = out.base + crcAt
            c[0] = UInt8(crc >> 24); c[1] = UInt8((crc >> 16) & 0xFF); c[2] = UInt8((crc >> 8) & 0xFF); c[3] = UInt8(crc & 0xFF)
        }
    }
}

/// CRC-32 (IEEE 802.3, as java.util.zip.CRC32), table-driven.
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for i in 0..<n { c = t[Int((c ^ UInt32(p[i])) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}
