/// MOSN's `fault`: for requests routed to `clusterIndex` (any cluster when -1) whose headers
/// match, delay by `delayMS` in `delayPercent` % of them, then abort with `abortStatus` in
/// `abortPercent` % (each a fresh draw, as in MOSN). The delay is a timer on the worker's event
/// loop held by the session; the worker serves other requests meanwhile.
public final class FaultFilter: Sendable {
    public let delayMS: Int64
    public let delayPercent: Int
    public let abortPercent: Int
    public let abort: LocalAnswer?
    public let clusterIndex: Int
    public let headers: [HeaderMatcher]
    public var phase: FilterPhase { .afterRoute }

    public init(delayMS: Int64, delayPercent: Int, abortStatus: Int?, abortPercent: Int, clusterIndex: Int, headers: [HeaderMatcher]) {
        self.delayMS = delayMS
        self.delayPercent = delayPercent
        self.abortPercent = abortPercent
        abort = abortStatus.map { LocalAnswer(status: $0, body: "tern: fault injected\n", code: "fault_injected") }
        self.clusterIndex = clusterIndex
        self.headers = headers
    }

    public func decide<R: StreamRequest>(_ request: R, _ input: FilterInput, _ random: inout FastRandom, delayDone: Bool) -> FilterVerdict {
        if clusterIndex >= 0 && input.clusterIndex != clusterIndex { return .proceed }
        for h in headers where !h.matches(request) { return .proceed }
        if !delayDone && delayMS > 0 && delayPercent > 0 && random.below(100) < delayPercent {
            return .delay(ms: delayMS, resumeAt: 0)   // the chain fills in this filter's index
        }
        if let abort, abortPercent > 0 && random.below(100) < abortPercent { return .answer(abort) }
        return .proceed
    }
}
