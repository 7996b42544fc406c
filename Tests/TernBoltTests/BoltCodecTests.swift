import Testing
@testable import TernBolt
import TernCore

func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
func headerMap(_ kv: [(String, String)]) -> [UInt8] { kv.flatMap { be32($0.0.utf8.count) + Array($0.0.utf8) + be32($0.1.utf8.count) + Array($0.1.utf8) } }

/// Builds a frame byte by byte from the field layout (independent of the codec's encoder).
func frame(v2: Bool = false, kind: UInt8, cmd: Int, id: Int, timeoutOrStatus: Int, className: String = "", headers: [UInt8] = [], content: [UInt8] = [], crc: Bool = false) -> [UInt8] {
    var b: [UInt8] = [v2 ? 2 : 1]
    if v2 { b.append(1) }
    b.append(kind)
    b += be16(cmd)
    b.append(1)
    b += be32(id)
    b.append(1)
    if v2 { b.append(crc ? 1 : 0) }
    b += kind == 0 ? be16(timeoutOrStatus) : be32(timeoutOrStatus)
    b += be16(className.utf8.count) + be16(headers.count) + be32(content.count)
    b += Array(className.utf8) + headers + content
    if crc { b += be32(Int(b.withUnsafeBufferPointer { CRC32.checksum($0.baseAddress!, $0.count) })) }
    return b
}

func decodeSplit(_ bytes: [UInt8], max: Int = 1 << 24) -> BoltDecodeResult {
    // Every strict prefix must ask for more (or fail the same way the whole frame does).
    let whole = bytes.withUnsafeBufferPointer { BoltCodec.decode($0.baseAddress!, $0.count, maxFrame: max) }
    for k in 0..<bytes.count {
        let r = bytes.withUnsafeBufferPointer { BoltCodec.decode($0.baseAddress!, k, maxFrame: max) }
        if case .needMore = r { continue }
        if case .error = r, case .error = whole { return whole }
        Issue.record("prefix of \(k) bytes gave \(r), whole gives \(whole)")
    }
    return whole
}

struct BoltCodecTests {
    let headers = headerMap([("service", "com.alipay.test.TestService:1.0"), ("sofa_head_method_name", "echo")])

    @Test func v1RequestGoldenBytesDecodeAtEverySplit() throws {
        let bytes = frame(kind: 1, cmd: 1, id: 0x01020304, timeoutOrStatus: 3000, className: "com.alipay.sofa.rpc.core.request.SofaRequest", headers: headers, content: Array("hello".utf8))
        #expect(Array(bytes[0..<22]) == [1, 1, 0, 1, 1, 1, 2, 3, 4, 1, 0, 0, 0x0b, 0xb8, 0, 44] + be16(headers.count) + [0, 0, 0, 5])
        guard case .frame(let f) = decodeSplit(bytes) else { Issue.record("no frame"); return }
        #expect(f.kind == .request && f.command == .request && f.requestID == 0x01020304 && f.timeoutMS == 3000)
        #expect(f.classLength == 44 && f.headerLength == headers.count && f.contentLength == 5 && f.frameLength == bytes.count)
        #expect(f.fixedLength == 22 && !f.hasCRC)
    }

    @Test func v1ResponseOnewayAndHeartbeats() {
        let response = frame(kind: 0, cmd: 2, id: 7, timeoutOrStatus: 0x10, content: [1, 2, 3])
        guard case .frame(let r) = decodeSplit(response) else { Issue.record("no response"); return }
        #expect(r.kind == .response && r.status == 0x10 && r.fixedLength == 20 && r.frameLength == 23)
        guard case .frame(let o) = decodeSplit(frame(kind: 2, cmd: 1, id: 8, timeoutOrStatus: 0)) else { Issue.record("no oneway"); return }
        #expect(o.kind == .oneway)
        guard case .frame(let hb) = decodeSplit(frame(kind: 1, cmd: 0, id: 9, timeoutOrStatus: 1000)) else { Issue.record("no heartbeat"); return }
        #expect(hb.command == .heartbeat && hb.kind == .request)
        guard case .frame(let ack) = decodeSplit(frame(kind: 0, cmd: 0, id: 9, timeoutOrStatus: 0)) else { Issue.record("no ack"); return }
        #expect(ack.command == .heartbeat && ack.kind == .response)
    }

    @Test func v2FramesWithAndWithoutCRC() {
        for crc in [false, true] {
            let req = frame(v2: true, kind: 1, cmd: 1, id: 42, timeoutOrStatus: 500, className: "C", headers: headers, content: [9, 9], crc: crc)
            guard case .frame(let f) = decodeSplit(req) else { Issue.record("v2 request crc \(crc)"); continue }
            #expect(f.protocolCode == 2 && f.fixedLength == 24 && f.hasCRC == crc && f.frameLength == req.count && f.requestIDOffset == 6)
            let resp = frame(v2: true, kind: 0, cmd: 2, id: 42, timeoutOrStatus: 0, content: [1], crc: crc)
            guard case .frame(let r) = decodeSplit(resp) else { Issue.record("v2 response crc \(crc)"); continue }
            #expect(r.fixedLength == 22 && r.frameLength == resp.count)
        }
        var corrupted = frame(v2: true, kind: 1, cmd: 1, id: 42, timeoutOrStatus: 500, content: [1, 2, 3], crc: true)
        corrupted[corrupted.count - 6] ^= 0xFF
        guard case .error(let why) = corrupted.withUnsafeBufferPointer({ BoltCodec.decode($0.baseAddress!, $0.count, maxFrame: 1 << 24) }) else { Issue.record("bad CRC accepted"); return }
        #expect(why.contains("CRC"))
    }

    @Test func encoderWritesGoldenResponsesAndHeartbeats() {
        let out = ByteBuffer()
        BoltCodec.writeResponse(out, protocolCode: 1, command: .response, requestID: 5, codec: 1, status: .noProcessor)
        #expect(out.readableArray() == frame(kind: 0, cmd: 2, id: 5, timeoutOrStatus: 6))
        out.clear()
        BoltCodec.writeResponse(out, protocolCode: 2, command: .response, requestID: 5, codec: 1, status: .timeout)
        #expect(out.readableArray() == frame(v2: true, kind: 0, cmd: 2, id: 5, timeoutOrStatus: 7))
        out.clear()
        BoltCodec.writeHeartbeat(out, protocolCode: 1, requestID: 77)
        #expect(out.readableArray() == frame(kind: 1, cmd: 0, id: 77, timeoutOrStatus: 1000))
    }

    @Test func copyFrameRewritesTheIdAndTheCRC() {
        for (v2, crc) in [(false, false), (true, false), (true, true)] {
            let original = frame(v2: v2, kind: 1, cmd: 1, id: 1, timeoutOrStatus: 100, headers: headers, content: [5], crc: crc)
            guard case .frame(let f) = original.withUnsafeBufferPointer({ BoltCodec.decode($0.baseAddress!, $0.count, maxFrame: 1 << 24) }) else { continue }
            let out = ByteBuffer()
            original.withUnsafeBufferPointer { BoltCodec.copyFrame($0.baseAddress!, f, newID: 0xAABBCCDD, into: out) }
            #expect(out.readableArray() == frame(v2: v2, kind: 1, cmd: 1, id: 0xAABBCCDD, timeoutOrStatus: 100, headers: headers, content: [5], crc: crc))
        }
    }

    @Test(arguments: [
        ([UInt8]([9, 1, 0, 1]), "protocol byte"),
        ([UInt8]([2, 7, 1]), "version"),
        ([UInt8]([1, 5]) + [UInt8](repeating: 0, count: 30), "command type"),
        (frame(kind: 1, cmd: 9, id: 1, timeoutOrStatus: 0), "command code"),
        (frame(kind: 1, cmd: 2, id: 1, timeoutOrStatus: 0), "does not fit"),
        (frame(kind: 0, cmd: 1, id: 1, timeoutOrStatus: 0), "does not fit"),
        (frame(kind: 1, cmd: 1, id: 1, timeoutOrStatus: 0, headers: be32(100) + [1, 2]), "header map"),
        (frame(kind: 1, cmd: 1, id: 1, timeoutOrStatus: 0, headers: be32(1) + [65]), "header map"),
    ])
    func malformedFramesAreErrors(bytes: [UInt8], expected: String) {
        guard case .error(let why) = decodeSplit(bytes) else { Issue.record("accepted: \(bytes)"); return }
        #expect(why.contains(expected), "\(why)")
    }

    @Test func manyFramesInOneReadDecodeOneAfterAnother() {
        let frames = [frame(kind: 1, cmd: 1, id: 1, timeoutOrStatus: 0, headers: headers, content: [1]),
                      frame(v2: true, kind: 1, cmd: 1, id: 2, timeoutOrStatus: 0, content: [2, 2], crc: true),
                      frame(kind: 2, cmd: 1, id: 3, timeoutOrStatus: 0),
                      frame(kind: 1, cmd: 0, id: 4, timeoutOrStatus: 0)]
        let joined = frames.flatMap { $0 }
        var offset = 0
        var ids: [UInt32] = []
        joined.withUnsafeBufferPointer { b in
            while offset < b.count, case .frame(let f) = BoltCodec.decode(b.baseAddress! + offset, b.count - offset, maxFrame: 1 << 20) {
                ids.append(f.requestID)
                offset += f.frameLength
            }
        }
        #expect(ids == [1, 2, 3, 4])
        #expect(offset == joined.count)
    }

    @Test func framesPastTheMaximumAreRefusedBeforeTheyArrive() {
        // Only the 22-byte fixed part is present: the declared 100 MB content is refused at once.
        var head = frame(kind: 1, cmd: 1, id: 1, timeoutOrStatus: 0)
        head.replaceSubrange(18..<22, with: be32(100_000_000))
        guard case .error(let why) = head.withUnsafeBufferPointer({ BoltCodec.decode($0.baseAddress!, $0.count, maxFrame: 16 << 20) }) else { Issue.record("accepted"); return }
        #expect(why.contains("exceeds the maximum"))
    }

    @Test func headersAreReadInPlaceForRouting() {
        let map = headerMap([("service", "a.b.C:1.0"), ("sofa_head_method_name", "echo")])
        let view = map.withUnsafeBufferPointer { p in
            BoltRequestView(headers: p.baseAddress!, headerLength: p.count).withHeader(lowercasedName: Array("sofa_head_method_name".utf8)) { Bytes.string($0, $1) }
        }
        #expect(view == "echo")
    }

    @Test func sniffing() {
        func sniff(_ b: [UInt8]) -> SniffResult { b.withUnsafeBufferPointer { BoltCodec.sniff($0.baseAddress!, $0.count) } }
        #expect(sniff([1, 1]) == .match)
        #expect(sniff([2, 1]) == .match)
        #expect(sniff([1]) == .needMoreBytes)
        #expect(sniff(Array("GET ".utf8)) == .noMatch)
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        let data = Array("123456789".utf8)
        #expect(data.withUnsafeBufferPointer { CRC32.checksum($0.baseAddress!, $0.count) } == 0xCBF43926)
    }
}
