import Glibc

/// Route and header regexes: RE2 syntax, matched in time linear in input length × program size.
///
/// `matches` is Go's `MatchString` (MOSN's semantics): true when the pattern matches anywhere in
/// the bytes; `^…$` anchors a whole match. Input is read as UTF-8 the way Go reads it: a byte that
/// does not start a valid sequence is one U+FFFD character.
///
/// The machine is a Pike VM without captures (Thompson's NFA simulation): every thread advances
/// one character at a time and two threads at the same instruction are merged, so no input can
/// make it backtrack. This file holds the regex engine's unsafe pointer code: matching reads the
/// caller's bytes in place and keeps its thread lists in stack scratch, with no heap allocation.
public final class RouteRegex: Sendable {
    public let pattern: String
    private let program: RegexProgram
    private let dfa: RegexDFA?

    /// Compiles `pattern`; a `RegexError` says what is refused and where.
    public init(_ pattern: String) throws(RegexError) {
        self.pattern = pattern
        let bytes = Array(pattern.utf8)
        program = try RegexProgram(RegexParser.parse(bytes), patternLength: bytes.count)
        dfa = RegexDFA(program)
    }

    private init(pattern: String, program: RegexProgram) {
        self.pattern = pattern
        self.program = program
        dfa = RegexDFA(program)
    }

    /// Compiles arbitrary bytes (a fuzzer's input): never traps; invalid UTF-8 is an error.
    public static func compile(_ pattern: UnsafeBufferPointer<UInt8>) -> Result<RouteRegex, RegexError> {
        let bytes = Array(pattern)
        do {
            let program = try RegexProgram(RegexParser.parse(bytes), patternLength: bytes.count)
            return .success(RouteRegex(pattern: String(decoding: bytes, as: UTF8.self), program: program))
        } catch {
            return .failure(error)
        }
    }

    /// Instructions in the compiled program (for tests and limits).
    var programSize: Int { program.instructions.count }
    /// Stored class ranges (for tests and limits).
    var classRangeCount: Int { program.setRanges.count }
    /// Whether matching uses the automaton (for tests).
    var hasDFA: Bool { dfa != nil }

    /// Whether the pattern matches somewhere in `bytes` (an empty or nil buffer is the empty text).
    public func matches(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else {
            var empty: UInt8 = 0
            return withUnsafePointer(to: &empty) { matches($0, 0) }
        }
        return matches(base, bytes.count)
    }

    /// Whether the pattern matches somewhere in the `count` bytes at `input`.
    public func matches(_ input: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        let count = max(count, 0)
        if program.matchesEverything { return true }
        if let dfa {
            let firstByte = program.literalPrefix.first.map(Int32.init) ?? -1
            return dfa.table.withUnsafeBufferPointer { table in
                DFAMachine(table: table, upperCount: dfa.upperCount, idleOffset: dfa.idleOffset, deadOffset: dfa.deadOffset,
                           firstByte: firstByte)
                    .run(from: dfa.startOffset, flags: dfa.startFlags, input, count)
            }
        }
        return matchesStepByStep(input, count)
    }

    /// The Pike VM, also for programs that have an automaton (tests compare the two).
    /// Public for the fuzz check, which holds the DFA and the Pike VM to the same answers.
    public func matchesStepByStep(_ input: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        let count = max(count, 0)
        if program.matchesEverything { return true }
        var entry = program.start, from = 0, firstByte: Int32 = -1
        if program.anchoredAtStart {
            // Only offset 0 can start a match: check the literal part there and step from after it.
            if !Bytes.hasPrefix(input, count, program.literalPrefix) { return false }
            entry = program.afterPrefix
            from = program.literalPrefix.count
        } else if let first = program.literalPrefix.first {
            firstByte = Int32(first)
        }
        let size = program.instructions.count
        return program.instructions.withUnsafeBufferPointer { instructions in
            program.sets.withUnsafeBufferPointer { sets in
                program.setRanges.withUnsafeBufferPointer { setRanges in
                    // Two sparse sets (dense + sparse arrays) and a stack, each one entry per instruction.
                    withUnsafeTemporaryAllocation(of: UInt16.self, capacity: 5 * size) { scratch in
                        guard let base = scratch.baseAddress else { return false }
                        base.initialize(repeating: 0, count: 5 * size)
                        var machine = PikeMachine(
                            instructions: instructions.baseAddress.unsafelyUnwrapped, sets: sets, setRanges: setRanges,
                            input: input, count: count,
                            current: ThreadList(dense: base, sparse: base + size),
                            next: ThreadList(dense: base + 2 * size, sparse: base + 3 * size),
                            stack: base + 4 * size)
                        return machine.run(start: entry, from: from, anchored: program.anchoredAtStart, firstByte: firstByte)
                    }
                }
            }
        }
    }
}

/// Runs a `RegexDFA`: one class lookup and one transition per character.
private struct DFAMachine {
    let table: UnsafeBufferPointer<UInt32>
    let upperCount: Int
    let idleOffset: UInt32
    let deadOffset: UInt32
    let firstByte: Int32

    func run(from start: UInt32, flags startFlags: UInt32, _ input: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        if startFlags & RegexDFA.acceptsHereBit != 0 { return true }
        var state = start, flags = startFlags
        var position = 0
        while position < count {
            if state == idleOffset && firstByte >= 0 {
                // Nothing but the search's start thread: skip to where a match can begin.
                guard let found = memchr(input + position, firstByte, count - position) else { break }
                position = UnsafeRawPointer(found) - UnsafeRawPointer(input)
            }
            let byte = input[position]
            let characterClass: UInt32
            if byte < 0x80 {
                characterClass = table[Int(byte)]
                position += 1
            } else {
                let (rune, width) = UTF8Decoding.decode(input + position, count - position)
                characterClass = table[128 + upperCount + lastInterval(atOrBelow: rune)]
                position += width
            }
            let next = table[Int(state + characterClass)]
            if next & RegexDFA.acceptsHereBit != 0 { return true }
            state = next & RegexDFA.offsetMask
            flags = next
            if state == deadOffset { return false }
        }
        return flags & RegexDFA.acceptsAtEndBit != 0
    }

    /// Index of the last interval starting at or below `rune` (≥ 128; the first starts at 128).
    @inline(__always) private func lastInterval(atOrBelow rune: UInt32) -> Int {
        var lo = 0, hi = upperCount - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if table[128 + mid] <= rune { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }
}

/// Instruction indexes as a sparse set: insert, membership and clear in constant time.
private struct ThreadList {
    let dense: UnsafeMutablePointer<UInt16>
    let sparse: UnsafeMutablePointer<UInt16>
    var count = 0

    init(dense: UnsafeMutablePointer<UInt16>, sparse: UnsafeMutablePointer<UInt16>) {
        self.dense = dense
        self.sparse = sparse
    }

    @inline(__always) func contains(_ pc: UInt16) -> Bool {
        let slot = Int(sparse[Int(pc)])
        return slot < count && dense[slot] == pc
    }

    @inline(__always) mutating func insert(_ pc: UInt16) {
        sparse[Int(pc)] = UInt16(truncatingIfNeeded: count)
        dense[count] = pc
        count += 1
    }
}

private struct PikeMachine {
    let instructions: UnsafePointer<RegexInstruction>
    let sets: UnsafeBufferPointer<RegexCharacterSet>
    let setRanges: UnsafeBufferPointer<UInt32>
    let input: UnsafePointer<UInt8>
    let count: Int
    var current: ThreadList
    var next: ThreadList
    let stack: UnsafeMutablePointer<UInt16>

    /// Steps all threads from `from`; a search adds a thread at `start` at every offset, an
    /// anchored run only at `from`. `firstByte` (≥ 0) is a byte every match starts with: while no
    /// thread is alive the search jumps to its next occurrence (memchr) instead of stepping.
    mutating func run(start: UInt16, from: Int, anchored: Bool, firstByte: Int32) -> Bool {
        var position = from
        while true {
            if !anchored || position == from {
                if firstByte >= 0 && current.count == 0 && position < count {
                    guard let found = memchr(input + position, firstByte, count - position) else { return false }
                    position = UnsafeRawPointer(found) - UnsafeRawPointer(input)
                }
                if addThread(to: &current, start, at: position) { return true }
            } else if current.count == 0 {
                return false   // anchored and every thread has died
            }
            if position >= count { return false }
            let (rune, width) = UTF8Decoding.decode(input + position, count - position)
            let after = position + width
            next.count = 0
            for k in 0..<current.count {
                let pc = current.dense[k]
                let instruction = instructions[Int(pc)]
                let accepted: Bool
                switch instruction.op {
                case .range: accepted = rune >= instruction.lo && rune <= instruction.hi
                case .set: accepted = contains(sets[Int(instruction.arg)], rune)
                case .match, .split, .assertion: accepted = false
                }
                if accepted && addThread(to: &next, instruction.out, at: after) { return true }
            }
            swap(&current, &next)
            position = after
        }
    }

    /// Adds `pc` and everything reachable from it without reading a character; true when that
    /// reaches `match` (a yes/no answer needs nothing more).
    @inline(__always)
    private func addThread(to list: inout ThreadList, _ pc: UInt16, at position: Int) -> Bool {
        if list.contains(pc) { return false }
        list.insert(pc)
        let op = instructions[Int(pc)].op
        if op == .range || op == .set { return false }   // the common step: straight to the next character test
        stack[0] = pc
        var top = 1   // each instruction enters the list, and so the stack, at most once
        @inline(__always) func push(_ target: UInt16) {
            if list.contains(target) { return }
            list.insert(target)
            stack[top] = target
            top += 1
        }
        while top > 0 {
            top -= 1
            let instruction = instructions[Int(stack[top])]
            switch instruction.op {
            case .match:
                return true
            case .split:
                push(instruction.arg)
                push(instruction.out)
            case .assertion:
                if holds(instruction.arg, at: position) { push(instruction.out) }
            case .range, .set:
                break   // waits in the list for the next character
            }
        }
        return false
    }

    @inline(__always)
    private func holds(_ assertion: UInt16, at position: Int) -> Bool {
        switch RegexAssertion(rawValue: UInt32(assertion)) {
        case .beginText: return position == 0
        case .endText: return position == count
        case .beginLine: return position == 0 || input[position - 1] == 10
        case .endLine: return position == count || input[position] == 10
        case .wordBoundary: return isWordBefore(position) != isWordAt(position)
        case .notWordBoundary: return isWordBefore(position) == isWordAt(position)
        case nil: return false
        }
    }

    // Go's \b is ASCII: a byte of a multi-byte character is never a word character.
    @inline(__always) private func isWordBefore(_ position: Int) -> Bool {
        position > 0 && RegexParser.isWordByte(input[position - 1])
    }
    @inline(__always) private func isWordAt(_ position: Int) -> Bool {
        position < count && RegexParser.isWordByte(input[position])
    }

    @inline(__always)
    private func contains(_ set: RegexCharacterSet, _ rune: UInt32) -> Bool {
        if rune < 64 { return set.asciiLow & (1 << UInt64(rune)) != 0 }
        if rune < 128 { return set.asciiHigh & (1 << UInt64(rune - 64)) != 0 }
        var k = Int(set.rangesStart)
        while k + 1 < Int(set.rangesEnd) {
            if rune < setRanges[k] { return false }   // ranges are sorted
            if rune <= setRanges[k + 1] { return true }
            k += 2
        }
        return false
    }
}

/// UTF-8 decoding as Go's `utf8.DecodeRune` does it: overlong forms, surrogates and values past
/// U+10FFFF are invalid, and an invalid sequence is U+FFFD one byte wide.
enum UTF8Decoding {
    static let replacement: UInt32 = 0xFFFD

    /// The character at `p` and its width in bytes; `count` must be at least 1.
    @inline(__always)
    static func decode(_ p: UnsafePointer<UInt8>, _ count: Int) -> (rune: UInt32, width: Int) {
        let b0 = p[0]
        if b0 < 0x80 { return (UInt32(b0), 1) }
        @inline(__always) func continuation(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> UInt32? {
            guard k < count, p[k] >= lo, p[k] <= hi else { return nil }
            return UInt32(p[k] & 0x3F)
        }
        switch b0 {
        case 0xC2...0xDF:
            guard let c1 = continuation(1) else { break }
            return (UInt32(b0 & 0x1F) << 6 | c1, 2)
        case 0xE0...0xEF:
            let lo: UInt8 = b0 == 0xE0 ? 0xA0 : 0x80, hi: UInt8 = b0 == 0xED ? 0x9F : 0xBF
            guard let c1 = continuation(1, lo, hi), let c2 = continuation(2) else { break }
            return (UInt32(b0 & 0x0F) << 12 | c1 << 6 | c2, 3)
        case 0xF0...0xF4:
            let lo: UInt8 = b0 == 0xF0 ? 0x90 : 0x80, hi: UInt8 = b0 == 0xF4 ? 0x8F : 0xBF
            guard let c1 = continuation(1, lo, hi), let c2 = continuation(2), let c3 = continuation(3) else { break }
            return (UInt32(b0 & 0x07) << 18 | c1 << 12 | c2 << 6 | c3, 4)
        default:
            break
        }
        return (replacement, 1)
    }
}
