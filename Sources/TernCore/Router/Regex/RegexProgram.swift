/// A parsed regex compiled into a Thompson NFA program: one instruction per character test,
/// assertion or fork, run by `RouteRegex`'s Pike VM without backtracking.

struct RegexInstruction: Sendable {
    enum Op: UInt8, Sendable {
        case match
        case range        // one character in lo...hi, then `out`
        case set          // one character in classes[arg], then `out`
        case split        // continue at both `out` and `arg`
        case assertion    // RegexAssertion(rawValue: arg) holds here, then `out`
    }
    var op: Op
    var out: UInt16 = 0
    var arg: UInt16 = 0
    var lo: UInt32 = 0
    var hi: UInt32 = 0
}

/// A character class: an ASCII bitmap plus the ranges above 0x7F (in `RegexProgram.setRanges`).
struct RegexCharacterSet: Sendable {
    var asciiLow: UInt64 = 0      // bits for 0...63
    var asciiHigh: UInt64 = 0     // bits for 64...127
    var rangesStart: Int32 = 0    // index of the first lo in setRanges (lo, hi pairs)
    var rangesEnd: Int32 = 0
}

struct RegexProgram: Sendable {
    /// Bounds the program (and so the per-match scratch, 5 × 2 bytes per instruction) whatever the
    /// pattern: `(a{1000}){1000}` is refused rather than compiled into a million instructions.
    static let maxInstructions = 10_000

    /// Bounds the stored class ranges (4 bytes each) the same way.
    static let maxSetRanges = 1 << 16

    private(set) var instructions: [RegexInstruction] = []
    private(set) var sets: [RegexCharacterSet] = []
    private(set) var setRanges: [UInt32] = []
    private(set) var start: UInt16 = 0
    /// Every match starts at offset 0 (`^…`, `\A…`): the machine starts one thread, at 0 only.
    private(set) var anchoredAtStart = false
    /// The pattern matches the empty string at offset 0 (`.*`, `a*`, ``, `^`), so it matches every
    /// input: MOSN's common `.*` header regex costs nothing.
    private(set) var matchesEverything = false
    /// Bytes every match starts with (`/api/` in `^/api/v[0-9]+`) and the instruction after them:
    /// compared directly instead of stepping the machine through them.
    private(set) var literalPrefix: [UInt8] = []
    private(set) var afterPrefix: UInt16 = 0
    private var setIndex: [[UInt32]: UInt16] = [:]   // compile time only

    init(_ root: RegexNode, patternLength: Int) throws(RegexError) {
        let match = try emit(RegexInstruction(op: .match), patternLength)
        start = try compile(root, then: match, patternLength)
        anchoredAtStart = root.anchoredAtStart
        matchesEverything = reachesMatchWithoutInput(from: start)
        findLiteralPrefix()
        setIndex = [:]
    }

    /// Follows forks and `^`/`\A` (true at offset 0, where every search begins) from `pc`.
    private func reachesMatchWithoutInput(from pc: UInt16) -> Bool {
        var seen = [Bool](repeating: false, count: instructions.count)
        var pending = [pc]
        while let pc = pending.popLast() {
            if seen[Int(pc)] { continue }
            seen[Int(pc)] = true
            let instruction = instructions[Int(pc)]
            switch instruction.op {
            case .match: return true
            case .split: pending.append(instruction.out); pending.append(instruction.arg)
            case .assertion where instruction.arg == UInt16(RegexAssertion.beginText.rawValue): pending.append(instruction.out)
            case .assertion, .range, .set: break
            }
        }
        return false
    }

    /// The single characters the program's entry chain tests before its first fork, as UTF-8.
    /// Only an anchored program skips a leading `^`: a search must not take `^a|b`'s… fork-free
    /// chain for a prefix, and a chain without forks is what every match goes through.
    private mutating func findLiteralPrefix() {
        var pc = start
        if anchoredAtStart {
            while instructions[Int(pc)].op == .assertion && instructions[Int(pc)].arg == UInt16(RegexAssertion.beginText.rawValue) {
                pc = instructions[Int(pc)].out
            }
        }
        var prefix: [UInt8] = []
        while prefix.count < 64 {
            let instruction = instructions[Int(pc)]
            // U+FFFD also stands for an invalid input byte, which its UTF-8 bytes would not match.
            guard instruction.op == .range, instruction.lo == instruction.hi, instruction.lo != UTF8Decoding.replacement,
                  let scalar = Unicode.Scalar(instruction.lo) else { break }
            prefix.append(contentsOf: Array(String(Character(scalar)).utf8))
            pc = instruction.out
        }
        literalPrefix = prefix
        afterPrefix = pc
    }

    private mutating func emit(_ instruction: RegexInstruction, _ patternLength: Int) throws(RegexError) -> UInt16 {
        guard instructions.count < RegexProgram.maxInstructions else {
            throw RegexError("expression too large: the compiled program would pass \(RegexProgram.maxInstructions) instructions", at: patternLength)
        }
        instructions.append(instruction)
        return UInt16(instructions.count - 1)
    }

    /// Compiles `node` so that it continues at `then`, and returns its entry. Building back to
    /// front means every jump target already exists; only loops need a patched fork.
    private mutating func compile(_ node: RegexNode, then: UInt16, _ n: Int) throws(RegexError) -> UInt16 {
        switch node {
        case .runes(let set):
            if set.ranges.count == 1, let r = set.ranges.first {
                return try emit(RegexInstruction(op: .range, out: then, lo: r.lo, hi: r.hi), n)
            }
            return try emit(RegexInstruction(op: .set, out: then, arg: try addSet(set, n)), n)
        case .assertion(let a):
            return try emit(RegexInstruction(op: .assertion, out: then, arg: UInt16(a.rawValue)), n)
        case .concat(let nodes):
            var next = then
            for child in nodes.reversed() { next = try compile(child, then: next, n) }
            return next
        case .alternate(let branches):
            guard let lastBranch = branches.last else { return then }
            var entry = try compile(lastBranch, then: then, n)
            for branch in branches.dropLast().reversed() {
                let branchEntry = try compile(branch, then: then, n)
                entry = try emit(RegexInstruction(op: .split, out: branchEntry, arg: entry), n)
            }
            return entry
        case .repetition(let child, let min, let max):
            var entry = then
            if max < 0 {
                // A fork that loops back: min 0 enters at the fork (x*), min ≥ 1 enters at x (x+).
                let fork = try emit(RegexInstruction(op: .split), n)
                let body = try compile(child, then: fork, n)
                instructions[Int(fork)].out = body
                instructions[Int(fork)].arg = then
                entry = min == 0 ? fork : body
                try prepend(child, copies: min - 1, to: &entry, n)
            } else {
                // x{min,max}: max - min nested optional copies, (x(x)?)?, after min required ones.
                for _ in 0..<(max - min) {
                    let body = try compile(child, then: entry, n)
                    entry = try emit(RegexInstruction(op: .split, out: body, arg: then), n)
                }
                try prepend(child, copies: min, to: &entry, n)
            }
            return entry
        }
    }

    /// Required copies of a repeated node. A node that compiles to nothing (`()`, `(){5}`) stops
    /// the loop at once, so `((){1000}){1000}`… costs no time either.
    private mutating func prepend(_ child: RegexNode, copies: Int, to entry: inout UInt16, _ n: Int) throws(RegexError) {
        for _ in 0..<Swift.max(copies, 0) {
            let before = instructions.count
            entry = try compile(child, then: entry, n)
            if instructions.count == before { return }
        }
    }

    /// A class used again (`[^/]+` compiles `[^/]` twice, `[a-z]{50}` fifty times) is stored once,
    /// so the tables grow with the pattern's text, not with its repeat counts.
    private mutating func addSet(_ runes: RuneSet, _ n: Int) throws(RegexError) -> UInt16 {
        let key = runes.ranges.flatMap { [$0.lo, $0.hi] }
        if let known = setIndex[key] { return known }
        guard setRanges.count + key.count <= RegexProgram.maxSetRanges else {
            throw RegexError("expression too large: its character classes hold too many ranges", at: n)
        }
        var set = RegexCharacterSet()
        set.rangesStart = Int32(setRanges.count)
        for r in runes.ranges {
            var c = r.lo
            while c <= r.hi && c < 128 {
                if c < 64 { set.asciiLow |= 1 << UInt64(c) } else { set.asciiHigh |= 1 << UInt64(c - 64) }
                c += 1
            }
            if r.hi >= 128 {
                setRanges.append(Swift.max(r.lo, 128))
                setRanges.append(r.hi)
            }
        }
        set.rangesEnd = Int32(setRanges.count)
        sets.append(set)
        setIndex[key] = UInt16(sets.count - 1)
        return UInt16(sets.count - 1)
    }
}
