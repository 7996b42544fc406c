/// A deterministic automaton built from a small program when the config loads, so matching is one
/// table lookup per character instead of stepping every live thread.
///
/// States are sets of program instructions (subset construction). Characters are grouped into
/// classes that no instruction tells apart. Only `^`/`\A` and `$`/`\z` are supported: the first
/// holds in the start state only, the second is a per-state flag read when the text ends.
/// Programs with `\b`, `\B` or `(?m)` anchors, and programs whose automaton would pass the size
/// bounds, keep the Pike VM — which gives the same answers, only slower.
final class RegexDFA: Sendable {
    static let maxInstructions = 500
    static let maxTableEntries = 16_384   // 64 KiB of UInt32 at most
    static let maxIntervals = 4096

    static let acceptsHere: UInt8 = 1        // a match ends at this point: the answer is yes
    static let acceptsAtEnd: UInt8 = 2       // a match ends here if the text ends here
    static let dead: UInt16 = 0              // no thread left (anchored programs only)

    /// One flat table, so a match touches one array:
    /// - `[0, 128)`: the character class of each ASCII character;
    /// - `[128, 128 + u)`: starts of the intervals above U+007F (the first is 128), then
    ///   `[128 + u, 128 + 2u)`: their classes;
    /// - from `transitionsBase`, per state, one entry per class: the next state's offset in this
    ///   table (`transitionsBase + state × classCount`) with the next state's flags in the top bits.
    let table: [UInt32]
    let upperCount: Int
    let transitionsBase: Int
    /// Offsets and flags of the start, dead and idle states. `idle` is the state of a search with
    /// no thread but the one starting here (or `UInt32.max`): while in it, the matcher may jump
    /// to the next occurrence of the program's first byte.
    let startOffset: UInt32
    let startFlags: UInt32
    let deadOffset: UInt32
    let idleOffset: UInt32

    static let acceptsHereBit: UInt32 = 1 << 31
    static let acceptsAtEndBit: UInt32 = 1 << 30
    static let offsetMask: UInt32 = (1 << 30) - 1

    init?(_ program: RegexProgram) {
        let instructions = program.instructions
        guard instructions.count <= RegexDFA.maxInstructions else { return nil }
        for instruction in instructions where instruction.op == .assertion {
            let kind = RegexAssertion(rawValue: UInt32(instruction.arg))
            guard kind == .beginText || kind == .endText else { return nil }
        }

        // Character classes: cut 0…0x10FFFF wherever some instruction's answer may change, then
        // merge the intervals that every instruction answers alike.
        var cuts: Set<UInt32> = [0, 128, 0x110000]
        for instruction in instructions {
            switch instruction.op {
            case .range:
                cuts.insert(instruction.lo)
                cuts.insert(instruction.hi + 1)
            case .set:
                for rune in UInt32(1)..<128 where program.accepts(instruction, rune) != program.accepts(instruction, rune - 1) {
                    cuts.insert(rune)
                }
                let set = program.sets[Int(instruction.arg)]
                for k in stride(from: Int(set.rangesStart), to: Int(set.rangesEnd) - 1, by: 2) {
                    cuts.insert(program.setRanges[k])
                    cuts.insert(program.setRanges[k + 1] + 1)
                }
            case .match, .split, .assertion:
                break
            }
        }
        let starts = cuts.sorted().filter { $0 <= RuneSet.maxRune }
        guard starts.count <= RegexDFA.maxIntervals else { return nil }
        let consuming = instructions.indices.filter { instructions[$0].op == .range || instructions[$0].op == .set }
        // Bounds the construction's work too (a hostile config must not stall loading): testing one
        // character against every instruction costs about this much.
        let costPerCharacter = consuming.count + program.setRanges.count / 2 + 1
        guard starts.count * costPerCharacter <= 1 << 20, RegexDFA.maxTableEntries * costPerCharacter <= 1 << 24 else { return nil }
        var classOfSignature: [[Bool]: Int] = [:]
        var representative: [UInt32] = []   // one character of each class
        var intervalClass: [Int] = []
        for start in starts {
            let signature = consuming.map { program.accepts(instructions[$0], start) }
            if let known = classOfSignature[signature] {
                intervalClass.append(known)
            } else {
                guard representative.count < 256 else { return nil }
                classOfSignature[signature] = representative.count
                intervalClass.append(representative.count)
                representative.append(start)
            }
        }
        var asciiClass = [UInt8](repeating: 0, count: 128)
        var upperStarts: [UInt32] = [], upperClass: [UInt8] = []
        for (k, start) in starts.enumerated() {
            let end = k + 1 < starts.count ? starts[k + 1] : RuneSet.maxRune + 1
            if start < 128 {
                for rune in start..<min(end, 128) { asciiClass[Int(rune)] = UInt8(intervalClass[k]) }
            } else {
                upperStarts.append(start)
                upperClass.append(UInt8(intervalClass[k]))
            }
        }
        let classCount = representative.count

        // Subset construction. A state is keyed by its kernel: the instructions reached right
        // after a character (plus the search's fresh start thread).
        let searching = !program.anchoredAtStart
        var stateOfKernel: [[UInt16]: UInt16] = [:]
        var threads: [[UInt16]] = []       // per state: its character-testing instructions
        var flags: [UInt8] = []
        var transitions: [UInt16] = []
        func addState(_ kernel: [UInt16], atStart: Bool) -> UInt16? {
            guard (threads.count + 1) * classCount <= RegexDFA.maxTableEntries, threads.count < Int(UInt16.max) else { return nil }
            let here = program.closure(kernel, atStart: atStart, atEnd: false)
            let atEnd = program.closure(kernel, atStart: atStart, atEnd: true)
            threads.append(here.threads)
            flags.append((here.reachesMatch ? RegexDFA.acceptsHere : 0) | (atEnd.reachesMatch ? RegexDFA.acceptsAtEnd : 0))
            transitions.append(contentsOf: repeatElement(0, count: classCount))
            return UInt16(threads.count - 1)
        }
        guard addState([], atStart: false) == RegexDFA.dead else { return nil }
        stateOfKernel[[]] = RegexDFA.dead
        guard let start = addState([program.start], atStart: true) else { return nil }
        var state = 1
        while state < threads.count {
            // An accepting state ends the match; it needs no way out.
            if flags[state] & RegexDFA.acceptsHere == 0 {
                for (c, rune) in representative.enumerated() {
                    var kernel = Set<UInt16>()
                    for pc in threads[state] where program.accepts(instructions[Int(pc)], rune) {
                        kernel.insert(instructions[Int(pc)].out)
                    }
                    if searching { kernel.insert(program.start) }
                    let key = kernel.sorted()
                    let target: UInt16
                    if let known = stateOfKernel[key] {
                        target = known
                    } else {
                        guard let added = addState(key, atStart: false) else { return nil }
                        stateOfKernel[key] = added
                        target = added
                    }
                    transitions[state * classCount + c] = target
                }
            }
            state += 1
        }
        // Flatten: classes, interval starts, then transitions as offsets with the target's flags.
        var table = asciiClass.map(UInt32.init)
        table.append(contentsOf: upperStarts)
        table.append(contentsOf: upperClass.map(UInt32.init))
        let transitionsBase = table.count
        func offset(_ state: Int) -> UInt32 { UInt32(transitionsBase + state * classCount) }
        func flagBits(_ state: Int) -> UInt32 {
            (flags[state] & RegexDFA.acceptsHere != 0 ? RegexDFA.acceptsHereBit : 0)
                | (flags[state] & RegexDFA.acceptsAtEnd != 0 ? RegexDFA.acceptsAtEndBit : 0)
        }
        for target in transitions { table.append(offset(Int(target)) | flagBits(Int(target))) }
        self.table = table
        upperCount = upperStarts.count
        self.transitionsBase = transitionsBase
        startOffset = offset(Int(start))
        startFlags = flagBits(Int(start))
        deadOffset = offset(Int(RegexDFA.dead))
        idleOffset = searching ? stateOfKernel[[program.start]].map { offset(Int($0)) } ?? UInt32.max : UInt32.max
    }
}

extension RegexProgram {
    /// Whether a character-testing instruction accepts `rune` (config-time twin of the matchers).
    func accepts(_ instruction: RegexInstruction, _ rune: UInt32) -> Bool {
        switch instruction.op {
        case .range:
            return rune >= instruction.lo && rune <= instruction.hi
        case .set:
            let set = sets[Int(instruction.arg)]
            if rune < 64 { return set.asciiLow & (1 << UInt64(rune)) != 0 }
            if rune < 128 { return set.asciiHigh & (1 << UInt64(rune - 64)) != 0 }
            for k in stride(from: Int(set.rangesStart), to: Int(set.rangesEnd) - 1, by: 2)
            where rune >= setRanges[k] && rune <= setRanges[k + 1] {
                return true
            }
            return false
        case .match, .split, .assertion:
            return false
        }
    }

    /// The character-testing instructions reachable from `kernel` without reading, and whether
    /// `match` is, where only `^`/`\A` (at the start) and `$`/`\z` (at the end) can hold.
    func closure(_ kernel: [UInt16], atStart: Bool, atEnd: Bool) -> (threads: [UInt16], reachesMatch: Bool) {
        var seen = [Bool](repeating: false, count: instructions.count)
        var pending = kernel
        var threads: [UInt16] = []
        var reachesMatch = false
        while let pc = pending.popLast() {
            if seen[Int(pc)] { continue }
            seen[Int(pc)] = true
            let instruction = instructions[Int(pc)]
            switch instruction.op {
            case .match: reachesMatch = true
            case .range, .set: threads.append(pc)
            case .split: pending.append(instruction.out); pending.append(instruction.arg)
            case .assertion:
                switch RegexAssertion(rawValue: UInt32(instruction.arg)) {
                case .beginText: if atStart { pending.append(instruction.out) }
                case .endText: if atEnd { pending.append(instruction.out) }
                default: break
                }
            }
        }
        return (threads.sorted(), reachesMatch)
    }
}
