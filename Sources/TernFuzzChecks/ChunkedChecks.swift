import TernHTTP1

/// The chunked body decoder, fed as HTTP1Session feeds it: the bytes it did not consume stay in
/// front of the next read.
///
/// Control bytes: 0 and 1 = two cut points (three reads), 2 bit 7 = small limits (trailer section
/// bits 0-6 bytes, extension bits 0-3 of byte 3 × 4 bytes, trailer count bits 4-7 of byte 3),
/// 3 bit 7 = also feed it byte by byte (inputs up to 2 KiB).
///
/// Rules: however the body is split, the same data bytes, trailer lines and ending (end or error,
/// at the same stream offset, with the same reason) come out; every event's offsets lie inside
/// what was given; every call makes progress or waits.
enum ChunkedChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let input = ControlledInput(data)
        let (c0, c1, c2, c3) = input.control
        var decoder = ChunkedDecoder()
        if c2 & 0x80 != 0 {
            decoder.maxTrailerBytes = Int(c2 & 0x7F)
            decoder.maxExtensionBytes = Int(c3 & 0x0F) * 4
            decoder.maxTrailerCount = Int(c3 >> 4 & 0x07)
        }
        let body = input.payload
        let whole = try decode(body, cuts: [], decoder)
        let cuts = [ControlledInput.cut(c0, body.count), ControlledInput.cut(c1, body.count)].sorted()
        let split = try decode(body, cuts: cuts, decoder)
        try require(whole == split, "split at \(cuts): \(split) but whole: \(whole)")
        if c3 & 0x80 != 0 && body.count <= 2048 {
            let bytewise = try decode(body, cuts: Array(0..<body.count), decoder)
            try require(whole == bytewise, "byte by byte: \(bytewise) but whole: \(whole)")
        }
    }

    struct Outcome: Equatable, CustomStringConvertible {
        enum Ending: Equatable { case end(at: Int), error(String, at: Int), incomplete }
        var data: [UInt8] = []
        var trailers: [[UInt8]] = []
        var ending = Ending.incomplete
        var description: String { "\(data.count) data bytes, \(trailers.count) trailers, \(ending)" }
    }

    /// Feeds `body` in reads cut at `cuts` (sorted offsets) to a copy of `configured`.
    static func decode(_ body: [UInt8], cuts: [Int], _ configured: ChunkedDecoder) throws -> Outcome {
        var decoder = configured
        var outcome = Outcome()
        var pending: [UInt8] = []
        var pendingStart = 0   // stream offset of pending[0]
        var fed = 0
        for end in cuts + [body.count] where end > fed {
            pending += body[fed..<end]
            fed = end
            reads: while !pending.isEmpty {
                let (consumed, event) = pending.withBytes { decoder.next($0, $1) }
                try require(consumed >= 0 && consumed <= pending.count, "consumed \(consumed) of \(pending.count)")
                switch event {
                case .needMore:
                    pending.removeFirst(consumed); pendingStart += consumed
                    break reads
                case .data(let offset, let length):
                    try require(length > 0 && offset >= 0 && offset + length == consumed, "data \(offset)+\(length), consumed \(consumed)")
                    outcome.data += pending[offset..<(offset + length)]
                case .trailer(let offset, let length):
                    try require(length > 2 && offset >= 0 && offset + length == consumed, "trailer \(offset)+\(length), consumed \(consumed)")
                    let line = Array(pending[offset..<(offset + length)])
                    try require(line.suffix(2) == [13, 10], "trailer line without CRLF")
                    outcome.trailers.append(line)
                case .end:
                    outcome.ending = .end(at: pendingStart + consumed)
                    return outcome
                case .error(let reason):
                    outcome.ending = .error(reason, at: pendingStart + consumed)
                    return outcome
                }
                pending.removeFirst(consumed); pendingStart += consumed
            }
        }
        return outcome
    }

    /// The length of the chunked body at the start of `bytes` with default limits, or nil when it
    /// does not end there (for skipping bodies of pipelined messages).
    static func wholeBodyLength(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard let outcome = try? decode(Array(bytes), cuts: [], ChunkedDecoder()), case .end(let at) = outcome.ending else { return nil }
        return at
    }
}
