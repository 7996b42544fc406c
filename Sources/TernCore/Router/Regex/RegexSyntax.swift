/// RE2 syntax (as Go's `regexp` reads it with its default Perl flags) parsed into a tree.
///
/// Everything RE2 refuses is refused here with a message: backreferences, lookaround, atomic
/// groups, `\C`, repeat counts over 1000, stacked repetition operators (`a**`). Unicode classes
/// (`\pL`, `\p{Greek}`) are refused too: Tern carries no Unicode tables. The parser never traps on
/// any input: every byte access is bounds-checked and nesting depth is bounded.

/// Why a pattern was refused, with the byte offset in the pattern where the problem was found.
public struct RegexError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public init(_ message: String, at offset: Int) { self.message = message; self.offset = offset }
    public var description: String { "\(message) (at byte \(offset))" }
}

/// A set of Unicode scalar values: sorted, disjoint, non-adjacent closed ranges once normalised.
struct RuneSet: Equatable {
    static let maxRune: UInt32 = 0x10FFFF
    private(set) var ranges: [(lo: UInt32, hi: UInt32)] = []

    static func == (a: RuneSet, b: RuneSet) -> Bool {
        a.ranges.count == b.ranges.count && zip(a.ranges, b.ranges).allSatisfy { $0.lo == $1.lo && $0.hi == $1.hi }
    }

    init() {}
    init(_ lo: UInt32, _ hi: UInt32) { ranges = [(lo, hi)] }

    mutating func add(_ lo: UInt32, _ hi: UInt32) { ranges.append((lo, hi)) }
    mutating func add(_ other: RuneSet) { ranges.append(contentsOf: other.ranges) }

    /// Sorted and merged.
    func normalized() -> RuneSet {
        let sorted = ranges.sorted { $0.lo < $1.lo }
        var out = RuneSet()
        for r in sorted {
            if let last = out.ranges.last, r.lo <= last.hi || r.lo == last.hi + 1 {
                out.ranges[out.ranges.count - 1].hi = max(last.hi, r.hi)
            } else {
                out.ranges.append(r)
            }
        }
        return out
    }

    /// The complement within 0...0x10FFFF (of a normalised set).
    func negated() -> RuneSet {
        var out = RuneSet()
        var next: UInt32 = 0
        for r in ranges {
            if r.lo > next { out.add(next, r.lo - 1) }
            next = r.hi + 1
        }
        if next <= RuneSet.maxRune { out.add(next, RuneSet.maxRune) }
        return out
    }

    /// ASCII letters in both cases (Go folds all of Unicode; see docs/behaviour.md).
    func caseFolded() -> RuneSet {
        var out = self
        for r in ranges {
            for (from, to) in [(UInt32(65), UInt32(90)), (UInt32(97), UInt32(122))] {
                let lo = max(r.lo, from), hi = min(r.hi, to)
                if lo <= hi { out.add(lo ^ 0x20, hi ^ 0x20) }
            }
        }
        return out.normalized()
    }

    static let digits = RuneSet(48, 57)
    static let space: RuneSet = { var s = RuneSet(9, 10); s.add(12, 13); s.add(32, 32); return s }()
    static let word: RuneSet = { var s = RuneSet(48, 57); s.add(65, 90); s.add(95, 95); s.add(97, 122); return s.normalized() }()
    static let anyButNewline: RuneSet = { var s = RuneSet(0, 9); s.add(11, maxRune); return s }()
    static let any = RuneSet(0, maxRune)

    /// `[[:name:]]` classes (ASCII, as in Go).
    static func posix(_ name: String) -> RuneSet? {
        var s = RuneSet()
        switch name {
        case "alnum": s.add(48, 57); s.add(65, 90); s.add(97, 122)
        case "alpha": s.add(65, 90); s.add(97, 122)
        case "ascii": s.add(0, 127)
        case "blank": s.add(9, 9); s.add(32, 32)
        case "cntrl": s.add(0, 31); s.add(127, 127)
        case "digit": s.add(48, 57)
        case "graph": s.add(33, 126)
        case "lower": s.add(97, 122)
        case "print": s.add(32, 126)
        case "punct": s.add(33, 47); s.add(58, 64); s.add(91, 96); s.add(123, 126)
        case "space": s.add(9, 13); s.add(32, 32)
        case "upper": s.add(65, 90)
        case "word": return word
        case "xdigit": s.add(48, 57); s.add(65, 70); s.add(97, 102)
        default: return nil
        }
        return s.normalized()
    }
}

enum RegexAssertion: UInt32 {
    case beginText, endText, beginLine, endLine, wordBoundary, notWordBoundary
}

indirect enum RegexNode {
    case runes(RuneSet)                       // one character from the set
    case assertion(RegexAssertion)
    case concat([RegexNode])                  // empty: matches the empty string
    case alternate([RegexNode])
    case repetition(RegexNode, min: Int, max: Int)   // max < 0: unbounded

    /// True when every match must start at the beginning of the text (`^…` without `(?m)`, `\A…`).
    var anchoredAtStart: Bool {
        switch self {
        case .assertion(let a): return a == .beginText
        case .concat(let nodes): return nodes.first?.anchoredAtStart ?? false
        case .alternate(let nodes): return !nodes.isEmpty && nodes.allSatisfy(\.anchoredAtStart)
        case .repetition(let node, let min, _): return min > 0 && node.anchoredAtStart
        case .runes: return false
        }
    }
}

struct RegexParser {
    /// RE2's and Go's bound on `{n,m}`.
    static let maxRepeat = 1000
    /// Go allows 1000 levels; 100 keeps the recursive parser and compiler well inside a worker's
    /// 1 MiB stack, and no route regex nests that deep.
    static let maxNesting = 100

    private struct Flags {
        var caseInsensitive = false
        var dotMatchesNewline = false
        var multiLine = false
    }

    private let p: [UInt8]
    private var i = 0

    init(_ pattern: [UInt8]) { p = pattern }

    static func parse(_ pattern: [UInt8]) throws(RegexError) -> RegexNode {
        var parser = RegexParser(pattern)
        return try parser.parseAll()
    }

    private mutating func parseAll() throws(RegexError) -> RegexNode {
        if let bad = RegexParser.firstInvalidUTF8(p) { throw RegexError("invalid UTF-8", at: bad) }
        var flags = Flags()
        let node = try parseAlternation(depth: 0, flags: &flags)
        if i < p.count { throw RegexError("unexpected )", at: i) }
        return node
    }

    private func peek(_ offset: Int = 0) -> UInt8? {
        let k = i + offset
        return k >= 0 && k < p.count ? p[k] : nil
    }

    private func fragment(_ from: Int, _ to: Int) -> String {
        let lo = max(0, min(from, p.count)), hi = max(lo, min(to, p.count))
        return "`" + String(decoding: p[lo..<hi], as: UTF8.self) + "`"
    }

    // MARK: alternation, concatenation, repetition

    private mutating func parseAlternation(depth: Int, flags: inout Flags) throws(RegexError) -> RegexNode {
        var branches: [RegexNode] = []
        var items: [RegexNode] = []
        var lastRepeatStart: Int? = nil   // start of the repetition operator just applied, if the last token was one
        while let c = peek(), c != UInt8(ascii: ")") {
            let start = i
            switch c {
            case UInt8(ascii: "|"):
                i += 1
                branches.append(.concat(items))
                items = []
                lastRepeatStart = nil
            case UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "?"):
                i += 1
                let bounds = c == UInt8(ascii: "*") ? (0, -1) : c == UInt8(ascii: "+") ? (1, -1) : (0, 1)
                try applyRepeat(&items, min: bounds.0, max: bounds.1, start: start, lastRepeatStart: &lastRepeatStart)
            case UInt8(ascii: "{"):
                if let bounds = try parseBraces() {
                    try applyRepeat(&items, min: bounds.min, max: bounds.max, start: start, lastRepeatStart: &lastRepeatStart)
                } else {
                    // Not a repeat: `{` is a literal, as in Go.
                    i += 1
                    items.append(literal(UInt32(c), flags))
                    lastRepeatStart = nil
                }
            default:
                try parseAtom(into: &items, depth: depth, flags: &flags)
                lastRepeatStart = nil
            }
        }
        if branches.isEmpty { return .concat(items) }
        branches.append(.concat(items))
        return .alternate(branches)
    }

    private mutating func applyRepeat(_ items: inout [RegexNode], min: Int, max: Int, start: Int,
                                      lastRepeatStart: inout Int?) throws(RegexError) {
        if peek() == UInt8(ascii: "?") { i += 1 }   // lazy: same answer for a yes/no match
        if let previous = lastRepeatStart {
            throw RegexError("invalid nested repetition operator \(fragment(previous, i))", at: previous)
        }
        guard let last = items.popLast() else {
            throw RegexError("missing argument to repetition operator \(fragment(start, i))", at: start)
        }
        // `a*(?i)*` stacks too (Go accepts it); refusing it keeps the tree's height bounded by groups.
        if case .repetition = last {
            throw RegexError("invalid nested repetition operator \(fragment(start, i))", at: start)
        }
        items.append(.repetition(last, min: min, max: max))
        lastRepeatStart = start
    }

    /// `{n}`, `{n,}`, `{n,m}` at `i`; nil (and `i` unchanged) when the text is not a repeat.
    private mutating func parseBraces() throws(RegexError) -> (min: Int, max: Int)? {
        let start = i
        var j = i + 1
        func number(_ j: inout Int) -> Int? {
            let first = j
            var value = 0
            while j < p.count, p[j] >= 48, p[j] <= 57 {
                value = Swift.min(value * 10 + Int(p[j] - 48), 1_000_000)   // saturates: anything above 1000 is refused
                j += 1
            }
            if j == first || (j - first > 1 && p[first] == 48) { return nil }   // no digits, or a leading zero
            return value
        }
        guard let min = number(&j), j < p.count else { return nil }
        var max = min
        if p[j] == UInt8(ascii: ",") {
            j += 1
            guard j < p.count else { return nil }
            if p[j] == UInt8(ascii: "}") {
                max = -1
            } else {
                guard let m = number(&j) else { return nil }
                max = m
            }
        }
        guard j < p.count, p[j] == UInt8(ascii: "}") else { return nil }
        j += 1
        if min > RegexParser.maxRepeat || max > RegexParser.maxRepeat || (max >= 0 && min > max) {
            throw RegexError("invalid repeat count \(fragment(start, j)) (RE2 allows at most \(RegexParser.maxRepeat))", at: start)
        }
        i = j
        return (min, max)
    }

    // MARK: atoms

    private func literal(_ rune: UInt32, _ flags: Flags) -> RegexNode {
        let set = RuneSet(rune, rune)
        return .runes(flags.caseInsensitive ? set.caseFolded() : set)
    }

    private mutating func parseAtom(into items: inout [RegexNode], depth: Int, flags: inout Flags) throws(RegexError) {
        guard let c = peek() else { return }
        switch c {
        case UInt8(ascii: "("):
            if let group = try parseGroup(depth: depth, flags: &flags) { items.append(group) }
        case UInt8(ascii: "["):
            items.append(.runes(try parseClass(flags)))
        case UInt8(ascii: "."):
            i += 1
            items.append(.runes(flags.dotMatchesNewline ? .any : .anyButNewline))
        case UInt8(ascii: "^"):
            i += 1
            items.append(.assertion(flags.multiLine ? .beginLine : .beginText))
        case UInt8(ascii: "$"):
            i += 1
            items.append(.assertion(flags.multiLine ? .endLine : .endText))
        case UInt8(ascii: "\\"):
            let start = i
            if peek(1) == UInt8(ascii: "Q") {
                // \Q…\E: literal text, each character its own item as in Go (so `\Qab\E*` repeats `b`).
                i += 2
                while i < p.count {
                    if p[i] == UInt8(ascii: "\\"), peek(1) == UInt8(ascii: "E") { i += 2; return }
                    items.append(literal(decodeRune(), flags))
                }
                return
            }
            switch try parseEscape(inClass: false) {
            case .rune(let r): items.append(literal(r, flags))
            case .set(let s): items.append(.runes(flags.caseInsensitive ? s.caseFolded() : s))
            case .assertion(let a): items.append(.assertion(a))
            case nil: throw RegexError("invalid escape sequence \(fragment(start, i))", at: start)
            }
        default:
            items.append(literal(decodeRune(), flags))
        }
    }

    /// Decodes the (already validated) UTF-8 character at `i` and moves past it.
    private mutating func decodeRune() -> UInt32 {
        guard i < p.count else { i += 1; return 0 }
        let (rune, width) = p.withUnsafeBufferPointer { b in
            UTF8Decoding.decode(b.baseAddress.unsafelyUnwrapped + i, b.count - i)
        }
        i += width
        return rune
    }

    private mutating func parseGroup(depth: Int, flags: inout Flags) throws(RegexError) -> RegexNode? {
        let start = i
        if depth >= RegexParser.maxNesting {
            throw RegexError("expression nests too deeply (more than \(RegexParser.maxNesting) groups)", at: start)
        }
        i += 1
        var inner = flags
        if peek() == UInt8(ascii: "?") {
            let rest = Array(p[min(i + 1, p.count)..<min(i + 4, p.count)])
            if rest.starts(with: Array("=".utf8)) || rest.starts(with: Array("!".utf8))
                || rest.starts(with: Array("<=".utf8)) || rest.starts(with: Array("<!".utf8)) {
                throw RegexError("lookaround assertions are not supported (RE2 syntax) \(fragment(start, i + 3))", at: start)
            }
            if rest.starts(with: Array("P=".utf8)) || rest.starts(with: Array("P>".utf8)) {
                throw RegexError("backreferences are not supported (RE2 syntax) \(fragment(start, i + 3))", at: start)
            }
            if rest.starts(with: Array("P<".utf8)) || rest.starts(with: Array("<".utf8)) {
                i += rest.first == UInt8(ascii: "P") ? 3 : 2
                let nameStart = i
                while let c = peek(), c != UInt8(ascii: ">") {
                    guard RegexParser.isWordByte(c) else { throw RegexError("invalid named capture \(fragment(start, i + 1))", at: start) }
                    i += 1
                }
                guard peek() == UInt8(ascii: ">"), i > nameStart else {
                    throw RegexError("invalid named capture \(fragment(start, i + 1))", at: start)
                }
                i += 1   // names are only checked: a yes/no match captures nothing (Go accepts duplicates too)
            } else {
                // Flags: (?i) (?-s) (?im-s) for the rest of the group, or (?i:…) for a sub-expression.
                i += 1
                var negate = false, sawFlag = false
                while true {
                    guard let c = peek() else { throw RegexError("missing closing ) \(fragment(start, i))", at: start) }
                    i += 1
                    switch c {
                    case UInt8(ascii: "i"): inner.caseInsensitive = !negate; sawFlag = true
                    case UInt8(ascii: "s"): inner.dotMatchesNewline = !negate; sawFlag = true
                    case UInt8(ascii: "m"): inner.multiLine = !negate; sawFlag = true
                    case UInt8(ascii: "U"): sawFlag = true   // ungreedy: same answer for a yes/no match
                    case UInt8(ascii: "-") where !negate:
                        negate = true; sawFlag = false
                    case UInt8(ascii: ")") where !negate || sawFlag:
                        flags = inner
                        return nil
                    case UInt8(ascii: ":") where !negate || sawFlag:
                        return try parseGroupBody(start: start, depth: depth, flags: &inner)
                    default:
                        throw RegexError("invalid or unsupported Perl syntax \(fragment(start, i))", at: start)
                    }
                }
            }
        }
        return try parseGroupBody(start: start, depth: depth, flags: &inner)
    }

    private mutating func parseGroupBody(start: Int, depth: Int, flags: inout Flags) throws(RegexError) -> RegexNode {
        let body = try parseAlternation(depth: depth + 1, flags: &flags)
        guard peek() == UInt8(ascii: ")") else { throw RegexError("missing closing ) \(fragment(start, i))", at: start) }
        i += 1
        return body
    }

    // MARK: escapes and classes

    private enum Escape {
        case rune(UInt32)
        case set(RuneSet)
        case assertion(RegexAssertion)
    }

    /// The escape at `i` (a backslash); nil for an unknown escape. Moves past what it read.
    private mutating func parseEscape(inClass: Bool) throws(RegexError) -> Escape? {
        let start = i
        i += 1
        guard let c = peek() else { throw RegexError("trailing backslash at end of expression", at: start) }
        i += 1
        switch c {
        case UInt8(ascii: "d"): return .set(.digits)
        case UInt8(ascii: "D"): return .set(RuneSet.digits.negated())
        case UInt8(ascii: "s"): return .set(.space)
        case UInt8(ascii: "S"): return .set(RuneSet.space.negated())
        case UInt8(ascii: "w"): return .set(.word)
        case UInt8(ascii: "W"): return .set(RuneSet.word.negated())
        case UInt8(ascii: "p"), UInt8(ascii: "P"):
            throw RegexError("Unicode character classes \(fragment(start, i)) are not supported", at: start)
        case UInt8(ascii: "a"): return .rune(7)
        case UInt8(ascii: "f"): return .rune(12)
        case UInt8(ascii: "t"): return .rune(9)
        case UInt8(ascii: "n"): return .rune(10)
        case UInt8(ascii: "r"): return .rune(13)
        case UInt8(ascii: "v"): return .rune(11)
        case UInt8(ascii: "A") where !inClass: return .assertion(.beginText)
        case UInt8(ascii: "z") where !inClass: return .assertion(.endText)
        case UInt8(ascii: "b") where !inClass: return .assertion(.wordBoundary)
        case UInt8(ascii: "B") where !inClass: return .assertion(.notWordBoundary)
        case UInt8(ascii: "C"):
            throw RegexError("\\C (any byte) is not supported", at: start)
        case UInt8(ascii: "1")...UInt8(ascii: "7") where !(peek().map { $0 >= 48 && $0 <= 55 } ?? false),
             UInt8(ascii: "8"), UInt8(ascii: "9"):
            throw RegexError("backreferences are not supported (RE2 syntax) \(fragment(start, i))", at: start)
        case UInt8(ascii: "0")...UInt8(ascii: "7"):
            // Octal: \0, \012, \12 (up to three digits in all).
            var value = UInt32(c - 48)
            for _ in 0..<2 {
                guard let d = peek(), d >= 48, d <= 55 else { break }
                value = value * 8 + UInt32(d - 48)
                i += 1
            }
            return .rune(value)
        case UInt8(ascii: "x"):
            guard let next = peek() else { return nil }
            if next == UInt8(ascii: "{") {
                i += 1
                var value: UInt32 = 0, digits = 0
                while let d = peek(), let h = RegexParser.hexValue(d) {
                    value = value * 16 + h
                    digits += 1
                    i += 1
                    if value > RuneSet.maxRune { return nil }
                }
                guard digits > 0, peek() == UInt8(ascii: "}") else { return nil }
                i += 1
                return .rune(value)
            }
            guard let h1 = RegexParser.hexValue(next), let second = peek(1), let h2 = RegexParser.hexValue(second) else { return nil }
            i += 2
            return .rune(h1 * 16 + h2)
        default:
            // Any ASCII punctuation may be escaped.
            if c < 0x80 && !RegexParser.isWordByte(c) { return .rune(UInt32(c)) }
            return nil
        }
    }

    private mutating func parseClass(_ flags: Flags) throws(RegexError) -> RuneSet {
        let start = i
        i += 1
        var set = RuneSet()
        let negated = peek() == UInt8(ascii: "^")
        if negated { i += 1 }
        var first = true
        while true {
            guard let c = peek() else { throw RegexError("missing closing ] \(fragment(start, i))", at: start) }
            if c == UInt8(ascii: "]") && !first { i += 1; break }
            first = false
            if c == UInt8(ascii: "["), peek(1) == UInt8(ascii: ":"), let posix = try parsePosixClass() {
                set.add(posix)
                continue
            }
            let itemStart = i
            let lo: UInt32
            switch try classAtom() {
            case .set(let s): set.add(s); continue
            case .rune(let r): lo = r
            }
            var hi = lo
            if peek() == UInt8(ascii: "-"), let after = peek(1), after != UInt8(ascii: "]") {
                i += 1
                guard case .rune(let r) = try classAtom() else {
                    throw RegexError("invalid character class range \(fragment(itemStart, i))", at: itemStart)
                }
                hi = r
                if hi < lo { throw RegexError("invalid character class range \(fragment(itemStart, i))", at: itemStart) }
            }
            set.add(lo, hi)
        }
        var result = set.normalized()
        if flags.caseInsensitive { result = result.caseFolded() }
        return negated ? result.negated() : result
    }

    private enum ClassAtom { case rune(UInt32), set(RuneSet) }

    private mutating func classAtom() throws(RegexError) -> ClassAtom {
        guard peek() == UInt8(ascii: "\\") else { return .rune(decodeRune()) }
        let start = i
        switch try parseEscape(inClass: true) {
        case .rune(let r): return .rune(r)
        case .set(let s): return .set(s)
        case .assertion, nil: throw RegexError("invalid escape sequence \(fragment(start, i))", at: start)
        }
    }

    /// `[:alpha:]` or `[:^alpha:]` at `i`; nil (and `i` unchanged) when the text is not of that form.
    private mutating func parsePosixClass() throws(RegexError) -> RuneSet? {
        let start = i
        var j = i + 2
        while j + 1 < p.count, !(p[j] == UInt8(ascii: ":") && p[j + 1] == UInt8(ascii: "]")) { j += 1 }
        guard j + 1 < p.count else { return nil }
        var name = Array(p[(i + 2)..<j])
        let negated = name.first == UInt8(ascii: "^")
        if negated { name.removeFirst() }
        guard let set = RuneSet.posix(String(decoding: name, as: UTF8.self)) else {
            throw RegexError("invalid character class range \(fragment(start, j + 2))", at: start)
        }
        i = j + 2
        return negated ? set.negated() : set
    }

    // MARK: byte helpers

    static func isWordByte(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95
    }

    static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 48...57: return UInt32(c - 48)
        case 65...70: return UInt32(c - 55)
        case 97...102: return UInt32(c - 87)
        default: return nil
        }
    }

    static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBufferPointer { b -> Int? in
            guard let base = b.baseAddress else { return nil }
            var k = 0
            while k < b.count {
                let width = UTF8Decoding.decode(base + k, b.count - k).width
                if width == 1 && base[k] >= 0x80 { return k }   // a lone or malformed sequence byte
                k += width
            }
            return nil
        }
    }
}
