import Testing
@testable import TernHTTP1
import TernCore

/// Parses `text` as a request, first fed byte by byte growing (every split point), then whole.
/// Every strict prefix must ask for more bytes or fail with the same error as the whole message.
func parseRequestSplit(_ text: String, limits: HTTPLimits = HTTPLimits()) -> (HeadParseResult, HTTPHead) {
    let bytes = Array(text.utf8)
    let head = HTTPHead()
    var wholeScanned = 0
    let whole = bytes.withUnsafeBufferPointer { HTTPParser.parseRequest($0.baseAddress!, $0.count, limits: limits, head: head, scanned: &wholeScanned) }
    var scanned = 0
    for k in 1..<max(bytes.count, 1) {
        let partHead = HTTPHead()
        let r = bytes.withUnsafeBufferPointer { HTTPParser.parseRequest($0.baseAddress!, k, limits: limits, head: partHead, scanned: &scanned) }
        switch r {
        case .needMore: continue
        case .complete:
            // A complete head before the end is fine only when the rest is body.
            return (whole, head)
        case .error:
            if case .error = whole { return (whole, head) }
            Issue.record("prefix of \(k) bytes failed but the whole message parses: \(r)")
            return (whole, head)
        }
    }
    return (whole, head)
}

func status(_ r: HeadParseResult) -> Int? {
    if case .error(let e) = r { return e.status }
    return nil
}

struct HTTPRequestParserTests {
    @Test(arguments: [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /path?q=1&r=2 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   v  \r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\n\r\n",
        "DELETE /r HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    ])
    func validRequestsParse(text: String) {
        let (r, head) = parseRequestSplit(text)
        #expect(r == .complete, "\(text.debugDescription): \(r)")
        #expect(head.headLength == text.utf8.count)
    }

    @Test func framingAndKeepAliveAreRead() {
        var (r, h) = parseRequestSplit("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\nConnection: close\r\n\r\n")
        #expect(r == .complete)
        #expect(h.framing == .contentLength(42))
        #expect(!h.keepAlive)
        (r, h) = parseRequestSplit("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        #expect(h.framing == .chunked)
        #expect(h.expectContinue)
        (r, h) = parseRequestSplit("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        #expect(h.keepAlive)
        (r, h) = parseRequestSplit("GET / HTTP/1.0\r\n\r\n")
        #expect(!h.keepAlive)
        #expect(h.method == .get)
    }

    @Test func hopByHopAndConnectionNamedFieldsAreDropped() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Foo, keep-alive\r\nX-Foo: 1\r\nKeep-Alive: 1\r\nUpgrade: h2c\r\nTE: trailers\r\nX-Bar: 2\r\n\r\n"
        let (r, h) = parseRequestSplit(text)
        #expect(r == .complete)
        let bytes = Array(text.utf8)
        let kept = h.fields.filter { !$0.dropped }.map { String(decoding: bytes[Int($0.nameStart)..<Int($0.nameStart + $0.nameLength)], as: UTF8.self) }
        #expect(kept == ["Host", "X-Bar"])
    }

    @Test(arguments: [
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX\t: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7f}\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: a\n\n", 400),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/11\r\nHost: a\r\n\r\n", 400),
        ("GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        ("G\u{1}T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("\u{16}\u{3}\u{1}\u{0}\u{a5}\u{1}\u{0}\u{0}\r\n\r\n", 400),
    ])
    func malformedRequestsAreRefused(text: String, expected: Int) {
        let (r, _) = parseRequestSplit(text)
        #expect(status(r) == expected, "\(text.debugDescription): \(r)")
    }

    @Test func limitsGive431() {
        let limits = HTTPLimits(maxHeadBytes: 1024, maxHeaderCount: 5)
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "a", count: 2000) + "\r\n\r\n"
        #expect(status(parseRequestSplit(big, limits: limits).0) == 431)
        let many = "GET / HTTP/1.1\r\nHost: a\r\n" + (0..<6).map { "X\($0): 1\r\n" }.joined() + "\r\n"
        #expect(status(parseRequestSplit(many, limits: limits).0) == 431)
        // A head that never ends is refused once it passes the limit, without waiting for CRLFCRLF.
        let endless = Array(("GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "a", count: 2000)).utf8)
        var scanned = 0
        let r = endless.withUnsafeBufferPointer { HTTPParser.parseRequest($0.baseAddress!, $0.count, limits: limits, head: HTTPHead(), scanned: &scanned) }
        #expect(status(r) == 431)
    }
}

/// Parses `text` (a response head) whole, and fed growing by one byte at a time with the scan
/// position carried over, as the proxy feeds it: every strict prefix must ask for more bytes (or
/// fail as the whole does), and the last step must give the whole message's result and framing.
func parseResponse(_ text: String, method: HTTPHead.Method = .get) -> (HeadParseResult, HTTPHead) {
    let bytes = Array(text.utf8)
    let head = HTTPHead()
    var wholeScanned = 0
    let whole = bytes.withUnsafeBufferPointer { HTTPParser.parseResponse($0.baseAddress!, $0.count, limits: HTTPLimits(), head: head, requestMethod: method, scanned: &wholeScanned) }
    let partHead = HTTPHead()
    var scanned = 0
    for k in 1...bytes.count {
        let r = bytes.withUnsafeBufferPointer { HTTPParser.parseResponse($0.baseAddress!, k, limits: HTTPLimits(), head: partHead, requestMethod: method, scanned: &scanned) }
        if k == bytes.count {
            #expect(r == whole, "fed byte by byte: \(r), whole: \(whole) for \(text.debugDescription)")
            if case .complete = r {
                #expect(partHead.framing == head.framing && partHead.status == head.status && partHead.keepAlive == head.keepAlive,
                        "fed byte by byte, the head differs for \(text.debugDescription)")
            }
            break
        }
        switch r {
        case .needMore: continue
        case .complete:
            Issue.record("a prefix of \(k) of \(bytes.count) bytes parsed as a complete head: \(text.debugDescription)")
        case .error(let e):
            // Failing early is right only for a message that fails whole, with the same status.
            if case .error(let w) = whole { #expect(e.status == w.status) }
            else { Issue.record("a prefix of \(k) bytes failed (\(e.reason)) but the whole parses: \(text.debugDescription)") }
        }
        break
    }
    return (whole, head)
}

struct HTTPResponseParserTests {
    @Test func messageLengthFollowsRFC9112Section6_3() {
        #expect(parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").1.framing == .contentLength(5))
        #expect(parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").1.framing == .chunked)
        let closeDelimited = parseResponse("HTTP/1.1 200 OK\r\n\r\n").1
        #expect(closeDelimited.framing == .untilClose)
        #expect(!closeDelimited.keepAlive)
        let head = parseResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method: .head).1
        #expect(head.framing == .none)
        #expect(head.bodilessContentLength == 5)
        #expect(parseResponse("HTTP/1.1 204 No Content\r\n\r\n").1.framing == .none)
        #expect(parseResponse("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").1.framing == .none)
        #expect(parseResponse("HTTP/1.1 100 Continue\r\n\r\n").1.framing == .none)
        #expect(parseResponse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").0 == .complete)
        #expect(!parseResponse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").1.keepAlive)
        #expect(parseResponse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n").1.keepAlive)
    }

    @Test func repeatedFieldsStayApart() {
        let (r, h) = parseResponse("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n")
        #expect(r == .complete)
        #expect(h.fields.filter { !$0.dropped }.count == 2)
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    ])
    func malformedResponsesBecome502(text: String) {
        #expect(status(parseResponse(text).0) == 502, "\(text.debugDescription)")
    }
}

struct ChunkedDecoderTests {
    /// Decodes `body` fed in pieces of every size from 1 to its length; returns data and trailers.
    func decode(_ body: String, piece: Int, maxTrailerBytes: Int = 16384) -> (data: String, trailers: [String], error: String?) {
        let bytes = Array(body.utf8)
        var decoder = ChunkedDecoder()
        decoder.maxTrailerBytes = maxTrailerBytes
        var data: [UInt8] = [], trailers: [String] = []
        var pending: [UInt8] = []
        var offset = 0
        while true {
            events: while !pending.isEmpty {
                let (consumed, event) = pending.withUnsafeBufferPointer { decoder.next($0.baseAddress!, $0.count) }
                switch event {
                case .data(let o, let n): data += pending[o..<(o + n)]
                case .trailer(let o, let n): trailers.append(String(decoding: pending[o..<(o + n - 2)], as: UTF8.self))
                case .end: return (String(decoding: data, as: UTF8.self), trailers, nil)
                case .error(let e): return ("", [], e)
                case .needMore:
                    pending.removeFirst(consumed)
                    break events
                }
                pending.removeFirst(consumed)
            }
            if offset >= bytes.count { return ("", [], "incomplete") }
            let end = min(offset + piece, bytes.count)
            pending += bytes[offset..<end]
            offset = end
        }
    }

    @Test func decodesAtEverySplit() {
        let body = "5\r\nhello\r\n6;ext=1\r\n world\r\nA \r\n0123456789\r\n0\r\nX-Sum: 42\r\nX-Other: y\r\n\r\n"
        for piece in 1...body.utf8.count {
            let r = decode(body, piece: piece)
            #expect(r.error == nil, "piece \(piece)")
            #expect(r.data == "hello world0123456789", "piece \(piece)")
            #expect(r.trailers == ["X-Sum: 42", "X-Other: y"], "piece \(piece)")
        }
    }

    /// Found by fuzzing: a trailer section exactly at its limit was refused when a read ended
    /// inside the final empty line (the lone CR was counted as a trailer byte).
    @Test func trailerSectionAtItsLimitIsAcceptedAtEverySplit() {
        let body = "3\r\nabc\r\n0\r\nX-Sum: 42\r\nX-B: 1\r\n\r\n"
        let limit = "X-Sum: 42\r\nX-B: 1\r\n".utf8.count
        for piece in 1...body.utf8.count {
            let r = decode(body, piece: piece, maxTrailerBytes: limit)
            #expect(r.error == nil && r.trailers == ["X-Sum: 42", "X-B: 1"], "piece \(piece)")
            #expect(decode(body, piece: piece, maxTrailerBytes: limit - 1).error == "trailer section too large", "piece \(piece)")
        }
    }

    /// Found by fuzzing: an oversized trailer line ending in a bare LF was refused for its size or
    /// for its LF depending on the split; its size is now judged first either way.
    @Test func oversizedTrailerLineFailsTheSameAtEverySplit() {
        let body = "0\r\nX-Long: 0123456789\n\r\n"
        for piece in 1...body.utf8.count {
            #expect(decode(body, piece: piece, maxTrailerBytes: 8).error == "trailer section too large", "piece \(piece)")
        }
    }

    @Test(arguments: [
        "x\r\n", "5\r\nhelloX\r\n", "5\nhello\r\n", "5\r\nhello\n0\r\n\r\n",
        "ffffffffffffffff0\r\n", "0\r\nbad trailer\r\n\r\n", "0\r\nX: a\n\r\n",
        "5;\u{1}\r\nhello\r\n0\r\n\r\n", "-1\r\n",
    ])
    func malformedChunkedBodiesFail(body: String) {
        for piece in [1, 3, body.utf8.count] {
            #expect(decode(body, piece: piece).error != nil, "\(body.debugDescription) piece \(piece)")
        }
    }
}

struct SniffTests {
    @Test func http1SniffAnswersMatchNoMatchOrNeedMore() {
        let p = HTTP1Protocol()
        func sniff(_ s: [UInt8]) -> SniffResult { s.withUnsafeBufferPointer { p.sniff($0.baseAddress!, $0.count) } }
        #expect(sniff(Array("GET / HTTP/1.1\r\n".utf8)) == .match)
        #expect(sniff(Array("GE".utf8)) == .needMoreBytes)
        #expect(sniff(Array("OPTIONS ".utf8)) == .match)
        #expect(sniff([1, 1, 0, 1]) == .noMatch)
        #expect(sniff([2, 1, 1]) == .noMatch)
    }
}

struct ValueCheckTests {
    @Test func wordAtATimeCheckAgreesWithTheByteRule() {
        // Every byte value at every position of a 19-byte value (two words and a tail).
        for bad in 0...255 {
            for position in 0..<19 {
                var value = [UInt8](repeating: UInt8(ascii: "a"), count: 19)
                value[position] = UInt8(bad)
                let expected = HTTPParser.isFieldValueByte(UInt8(bad)) ? nil : position
                let got = value.withUnsafeBufferPointer { HTTPParser.firstInvalidValueByte($0.baseAddress!, from: 0, to: $0.count) }
                #expect(got == expected, "byte \(bad) at \(position)")
            }
        }
    }
}

struct TokenTableTests {
    @Test func tokenMasksMatchRFC9110() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for b in 0...255 { #expect(HTTPParser.isToken(UInt8(b)) == tchar.contains(UInt8(b)), "byte \(b)") }
    }
}
