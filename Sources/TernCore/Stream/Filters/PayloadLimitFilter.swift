/// MOSN's `payload_limit`: a request body larger than `maxBytes` is answered with the configured
/// status and never reaches an upstream. A length the head announces (Content-Length, a bolt
/// frame's content) is checked here, before routing; a body without one (chunked) is counted by
/// the session as it streams (`StreamFilterChain.streamedBodyLimit`).
public final class PayloadLimitFilter: Sendable {
    public let maxBytes: Int64
    public let answer: LocalAnswer
    public var phase: FilterPhase { .beforeRoute }

    public init(maxBytes: Int64, status: Int) {
        self.maxBytes = maxBytes
        answer = LocalAnswer(status: status, body: "tern: request body larger than \(maxBytes) bytes (payload_limit)\n", code: "payload_too_large")
    }

    public func decide<R: StreamRequest>(_ request: R) -> FilterVerdict {
        if let length = request.contentLength, length > maxBytes { return .answer(answer) }
        return .proceed
    }

    /// Whether a body that has streamed `total` bytes so far is over the limit.
    @inline(__always)
    public func exceeded(by total: Int64) -> Bool { total > maxBytes }
}
