import TernCore

/// Route regexes (RouteRegex): a pattern and a subject, split at the input's first zero byte.
///
/// Rules: compiling any bytes either succeeds or returns an error whose offset lies inside the
/// pattern (never a trap, however hostile); a compiled pattern answers any subject, and its fast
/// path (the DFA, prefix skips) agrees with the Pike VM on it.
enum RegexChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let bytes = Array(data)
        let split = bytes.firstIndex(of: 0) ?? bytes.count
        let pattern = Array(bytes[..<split])
        let subject = split < bytes.count ? Array(bytes[(split + 1)...]) : []
        let compiled = pattern.withUnsafeBufferPointer { RouteRegex.compile($0) }
        switch compiled {
        case .failure(let error):
            try require(error.offset >= 0 && error.offset <= pattern.count, "error offset \(error.offset) outside a \(pattern.count)-byte pattern")
        case .success(let regex):
            let (fast, stepByStep) = subject.withBytes { p, n in (regex.matches(p, n), regex.matchesStepByStep(p, n)) }
            try require(fast == stepByStep, "the fast path said \(fast), the Pike VM \(stepByStep)")
        }
    }
}
