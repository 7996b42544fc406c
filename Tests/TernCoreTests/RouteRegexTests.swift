import Testing
import TernTestSupport
@testable import TernCore

func regexMatches(_ regex: RouteRegex, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBufferPointer { regex.matches($0) }
}

func regexMatches(_ pattern: String, _ input: String) throws -> Bool {
    regexMatches(try RouteRegex(pattern), Array(input.utf8))
}

/// The Pike VM's answer, also for programs that match with their automaton.
func regexMatchesStepByStep(_ regex: RouteRegex, _ bytes: [UInt8]) -> Bool {
    var copy = bytes + [0]   // a valid pointer for the empty input too
    return copy.withUnsafeMutableBufferPointer { regex.matchesStepByStep($0.baseAddress!, bytes.count) }
}

/// Patterns × inputs with Go's `regexp.MatchString` answers (each row was checked against Go).
let goMatchTable: [(pattern: String, input: String, matches: Bool)] = [
    // Unanchored search, anchors, empty pattern and empty alternatives.
    ("", "", true), ("", "abc", true),
    ("abc", "xxabcxx", true), ("abc", "ab", false),
    ("[0-9]+", "/a/42/b", true), ("^[0-9]+$", "/a/42/b", false), ("^[0-9]+$", "42", true),
    ("^abc", "abcd", true), ("^abc", "xabc", false), ("abc$", "xabc", true), ("abc$", "abc\n", false),
    ("a|", "x", true), ("|b", "", true), ("^(a|)$", "", true), ("^(|a)$", "a", true),
    ("^(?:)$", "", true), ("^()$", "x", false), ("^a|b$", "xb", true), ("^a|b$", "ba", false),
    // Dot, newline and UTF-8 input.
    (".", "\n", false), (".", "x", true), ("(?s).", "\n", true), ("^.$", "é", true), ("^..$", "é", false),
    ("^.$", "\u{1F600}", true), ("é", "café", true), ("^caf.$", "café", true), ("^[^a]$", "é", true),
    ("日本", "こんにちは日本", true), ("^\\x{65E5}", "日", true), ("^[é-ë]$", "ê", true), ("^[é-ë]$", "e", false),
    // Bracket classes.
    ("^[a-z]+$", "hello", true), ("^[a-z]+$", "Hello", false), ("[^a-z]", "abc", false), ("[^a-z]", "abc1", true),
    ("^[^a]$", "\n", true), ("^[]a]+$", "]a]", true), ("^[^]a]$", "b", true), ("^[a-]+$", "a-a", true),
    ("^[-a]+$", "-", true), ("[a\\-z]", "-", true), ("[a\\-z]", "b", false), ("^[\\d.]+$", "1.2", true),
    ("^[\\w-]+$", "a_b-c", true), ("^[a-c-e]+$", "-e", true), ("^[\\x41-\\x43]+$", "ABC", true),
    ("^[^\\d\\s]+$", "ab", true), ("^[^\\d\\s]+$", "a b", false), ("^[\\D]$", "x", true),
    // POSIX classes.
    ("^[[:alpha:]]+$", "abcXYZ", true), ("[[:alpha:]]", "123", false), ("^[[:^alpha:]]+$", "123", true),
    ("^[[:digit:][:upper:]]+$", "A1", true), ("[[:space:]]", "a b", true), ("^[[:xdigit:]]+$", "0fA9", true),
    ("^[[:xdigit:]]+$", "0g", false), ("^[[:punct:]]+$", "!-/", true), ("^[[:word:]]+$", "a_1", true),
    ("^[[:alnum:]]+$", "a1", true), ("[[:cntrl:]]", "a\tb", true), ("^[[:lower:]]+$", "abC", false),
    ("[[:blank:]]", "a\nb", false), ("^[[:print:]]+$", "a b~", true), ("^[[:graph:]]+$", "a b", false),
    ("^[[:ascii:]]+$", "é", false), ("^[[:upper:][:digit:]_]+$", "A_1", true),
    // Escapes.
    ("\\d", "a1", true), ("\\D", "123", false), ("^\\D+$", "abc", true), ("\\s", "a\tb", true),
    ("\\s", "a\u{0B}b", false), ("\\S", "  ", false), ("^\\w+$", "abc_123", true), ("\\w", "é", false),
    ("\\W", "é", true), ("a\\.b", "a.b", true), ("a\\.b", "axb", false), ("\\x41", "A", true),
    ("\\x{263a}", "☺", true), ("\\101", "A", true), ("\\0", "\u{0}", true), ("\\12", "\n", true),
    ("\\t", "\t", true), ("\\n", "\n", true), ("\\r\\f\\v\\a", "\r\u{0C}\u{0B}\u{07}", true),
    ("\\Qa.b\\E", "a.b", true), ("\\Qa.b\\E", "axb", false), ("^\\Qa*\\E$", "a*", true), ("^\\Qab\\E*$", "abbb", true),
    ("^\\Qab", "ab", true), ("\\$", "$", true), ("\\^", "^", true), ("a\\/b", "a/b", true), ("\\{\\}", "{}", true),
    // \b, \B, \A, \z.
    ("\\bfoo\\b", "a foo b", true), ("\\bfoo\\b", "afoo", false), ("\\Boo\\B", "foods", true), ("\\Bfoo", "foo", false),
    ("\\bé", "é", false), ("\\b", "", false), ("\\B", "", true), ("^\\b$", "", false),
    ("\\Aabc\\z", "abc", true), ("\\Aabc\\z", "abc\n", false), ("a\\z", "ba", true), ("\\Ab", "ab", false),
    // Multi-line.
    ("(?m)^b$", "a\nb\nc", true), ("^b$", "a\nb\nc", false), ("(?m)a$", "a\n", true), ("(?m)^$", "a\n", true),
    ("(?m)^c", "a\nb\nc", true), ("(?m)\\Ab", "a\nb", false), ("(?m)a\\z", "a\n", false),
    // Case-insensitive flag and flag scoping.
    ("(?i)hello", "HeLLo", true), ("hello", "HELLO", false), ("(?i)^[a-c]+$", "ABC", true), ("(?i)[^a]", "A", false),
    ("(?i:a)b", "Ab", true), ("(?i:a)b", "AB", false), ("a(?i)b", "aB", true), ("a(?i)b", "AB", false),
    ("(?i)a(?-i)b", "Ab", true), ("(?i)a(?-i)b", "AB", false), ("(?i)a|b", "B", true),
    ("(a(?i)b)c", "aBC", false), ("(a(?i)b)c", "aBc", true), ("(?i)\\x41", "a", true), ("(?im)^X$", "a\nx", true),
    ("(?s:.)", "\n", true), ("(?s:.).", "\n\n", false), ("(?U)a+", "aa", true), ("(?i)[[:lower:]]", "A", true),
    ("(?i)\\Qab\\E", "AB", true), ("(?)a", "a", true), ("(?i-s:a.)", "A\n", false),
    // Groups.
    ("(?P<name>ab)+c", "ababc", true), ("(?<year>\\d{4})-(?<m>\\d\\d)", "2024-05", true),
    ("^(?:ab)*$", "ababab", true), ("^(?:ab)*$", "aba", false), ("(a)(b)(c)", "abc", true), ("^(?P<n>a)(?P<n>b)$", "ab", true), ("^((a)|b)+$", "abba", true),
    // Quantifiers, greedy and lazy.
    ("^a*$", "", true), ("^a+$", "", false), ("^a?$", "aa", false), ("^a{3}$", "aaa", true), ("^a{3}$", "aa", false),
    ("^a{3}$", "aaaa", false), ("^a{2,}$", "aaaaa", true), ("^a{2,}$", "a", false), ("^a{2,3}$", "aaaa", false),
    ("^a{2,3}$", "aaa", true), ("^a{0}$", "", true), ("^a{0}b$", "b", true), ("^a{0,0}b$", "ab", false),
    ("^a*?$", "aaa", true), ("^a+?b$", "aab", true), ("^a??$", "a", true), ("^a{2,3}?$", "aa", true),
    ("^a{2,}?$", "aaa", true), ("^(ab){2}$", "abab", true), ("^(a|bc){2,}$", "abca", true), ("^(a|bc){2,}$", "bc", false),
    ("^x{1000}$", String(repeating: "x", count: 1000), true), ("^x{1000}$", String(repeating: "x", count: 999), false),
    // A brace that does not make a repeat is a literal.
    ("a{", "a{", true), ("a{,2}", "a{,2}", true), ("^x{1,2$", "x{1,2", true), ("{", "{", true), ("a{01}", "a{01}", true),
    ("}", "}", true), ("^a{x}$", "a{x}", true), ("a{1,2}{", "aa{", true),
    // Alternation.
    ("^(cat|dog)s?$", "dogs", true), ("^(cat|dog)s?$", "cow", false), ("^(?:a|b|c|)$", "", true), ("x(?:|y)z", "xz", true),
    // Empty-width loops and repeated assertions.
    ("^(a*)*$", "aaa", true), ("^(a*)*$", "b", false), ("(a*)+b", "aab", true), ("^(|a)*$", "aa", true),
    ("^(?:a*|b)*c$", "abbac", true), ("^*a", "ba", true), ("(?:^)*a$", "ba", true), ("^(?:$)+$", "", true),
    ("(\\b)+x", "ax", false), ("^(){3}a$", "a", true), ("^(?:(?:)*)*$", "", true),
    // Literal prefixes (compared directly when anchored, a memchr skip when searching).
    ("^(ab)+$", "abab", true), ("(^a){2}", "aa", false), ("xyz", "xxxyxyz", true), ("é+", "cafée", true),
    ("^\\x{FFFD}", "\u{FFFD}x", true), ("ab", "aab", true), ("^abc", "ab", false), ("a+b", "aaac", false),
    ("\\bfoo", "xfoo foo", true), ("^abc$", "abc", true), ("^abc\\b", "abcd", false), ("^/api/", "/api", false),
    ("foo$", "foo foo", true), ("foo\\z", "foofo", false), ("^.*", "", true), ("a*", "bbb", true), ("^$", "", true),
    // MOSN-style route and header patterns.
    ("^/api/v[0-9]+/users/[^/]+$", "/api/v2/users/42", true), ("^/api/v[0-9]+/users/[^/]+$", "/api/v2/users/42/x", false),
    ("com\\.alipay\\..*Service:1\\.0", "com.alipay.test.EchoService:1.0", true), (".*", "anything", true),
    ("^/r/(a+)+$", "/r/aaa", true), ("^/r/(a+)+$", "/r/aaa!", false), ("^/(foo|bar)/\\d{1,5}(/.*)?$", "/bar/123/x", true),
    ("^/static/.*\\.(css|js)$", "/static/app.min.js", true), ("^/static/.*\\.(css|js)$", "/static/app.json", false),
]

struct RouteRegexTests {
    @Test func matchesLikeGoAcrossTheSyntaxTable() throws {
        var automata = 0
        for row in goMatchTable {
            let regex = try RouteRegex(row.pattern)
            let got = regexMatches(regex, Array(row.input.utf8))
            #expect(got == row.matches, "\(row.pattern) on \(row.input.debugDescription): got \(got)")
            let stepped = regexMatchesStepByStep(regex, Array(row.input.utf8))
            #expect(stepped == row.matches, "Pike VM: \(row.pattern) on \(row.input.debugDescription): got \(stepped)")
            if regex.hasDFA { automata += 1 }
        }
        #expect(automata > goMatchTable.count / 2)
    }

    @Test func smallProgramsWithoutLineOrWordAssertionsGetAnAutomaton() throws {
        #expect(try RouteRegex("^/api/v[0-9]+/users/[^/]+$").hasDFA)
        #expect(try RouteRegex("com\\.alipay\\..*Service:1\\.0").hasDFA)
        #expect(try RouteRegex("(?i)^/static/.*\\.(css|js)$").hasDFA)
        #expect(try !RouteRegex("\\bfoo\\b").hasDFA)            // \b needs the VM
        #expect(try !RouteRegex("(?m)^foo$").hasDFA)
        #expect(try !RouteRegex("[a-q][^u-z]{13}x").hasDFA)       // the subset construction passes its bound
        #expect(try !RouteRegex(".{0,300}").hasDFA)               // more instructions than the automaton takes
    }

    @Test func invalidUTF8InputReadsAsOneReplacementCharacterPerBadByte() throws {
        let one = try RouteRegex("^.$"), three = try RouteRegex("^...$"), replacement = try RouteRegex("^\\x{FFFD}$")
        #expect(regexMatches(one, [0xFF]))
        #expect(regexMatches(replacement, [0xFF]))
        #expect(regexMatches(one, [0xC3]))                       // a truncated sequence
        #expect(regexMatches(three, [0xE0, 0x80, 0x80]))         // overlong: three bad bytes
        #expect(!regexMatches(one, [0xE0, 0x80, 0x80]))
        #expect(regexMatches(three, [0xED, 0xA0, 0x80]))         // a surrogate is invalid too
        #expect(regexMatches(one, [0xF4, 0x8F, 0xBF, 0xBF]))     // U+10FFFF
        #expect(regexMatches(try RouteRegex("^[^a]{4}$"), [0xF4, 0x90, 0x80, 0x80]))   // past U+10FFFF
        #expect(regexMatches(try RouteRegex("a.c"), [0x61, 0x80, 0x63]))
        #expect(!regexMatches(try RouteRegex("^a\\x{80}c$"), [0x61, 0x80, 0x63]))
    }

    /// Differences from Go, each documented in docs/behaviour.md.
    @Test func caseFoldingIsASCIIOnly() throws {
        #expect(try regexMatches("(?i)abc", "ABC"))
        #expect(try !regexMatches("(?i)é", "É"))             // Go: true (Unicode simple folding)
        #expect(try !regexMatches("(?i)k", "\u{212A}"))      // Go: true (Kelvin sign)
    }

    @Test(arguments: [
        ("(?=a)", "lookaround"), ("a(?!b)", "lookaround"), ("(?<=a)b", "lookaround"), ("(?<!a)b", "lookaround"),
        ("(a)\\1", "backreferences"), ("(?P<n>a)(?P=n)", "backreferences"), ("\\8", "backreferences"),
        ("\\pL", "Unicode character classes"), ("\\p{Greek}", "Unicode character classes"), ("[\\pL]", "Unicode character classes"),
        ("\\PN", "Unicode character classes"),
        ("a{1001}", "invalid repeat count"), ("a{2,1}", "invalid repeat count"), ("a{1,1001}", "invalid repeat count"),
        ("a{99999999999999999999}", "invalid repeat count"),
        ("a**", "invalid nested repetition operator"), ("a+*", "invalid nested repetition operator"),
        ("a{2}{3}", "invalid nested repetition operator"), ("a*?+", "invalid nested repetition operator"),
        ("a*(?i)*", "invalid nested repetition operator"),
        ("*a", "missing argument to repetition operator"), ("(*)", "missing argument to repetition operator"),
        ("a|*", "missing argument to repetition operator"), ("(?i)*", "missing argument to repetition operator"),
        ("{2}", "missing argument to repetition operator"),
        ("(", "missing closing )"), ("(ab", "missing closing )"), ("(?i", "missing closing )"), ("(?:a", "missing closing )"),
        (")", "unexpected )"), ("ab)", "unexpected )"),
        ("[a", "missing closing ]"), ("[", "missing closing ]"), ("[]", "missing closing ]"), ("[^", "missing closing ]"),
        ("[z-a]", "invalid character class range"), ("[[:foo:]]", "invalid character class range"),
        ("[a-\\d]", "invalid character class range"),
        ("\\", "trailing backslash"), ("a\\", "trailing backslash"),
        ("\\y", "invalid escape sequence"), ("\\Z", "invalid escape sequence"), ("\\G", "invalid escape sequence"),
        ("[\\b]", "invalid escape sequence"), ("\\x{110000}", "invalid escape sequence"), ("\\xZZ", "invalid escape sequence"),
        ("\\x{}", "invalid escape sequence"), ("\\é", "invalid escape sequence"),
        ("\\C", "\\C (any byte) is not supported"),
        ("(?x)a", "invalid or unsupported Perl syntax"), ("(?#c)", "invalid or unsupported Perl syntax"),
        ("(?>a)", "invalid or unsupported Perl syntax"), ("(?i-)a", "invalid or unsupported Perl syntax"),
        ("(?--i)a", "invalid or unsupported Perl syntax"), ("(?-)a", "invalid or unsupported Perl syntax"),
        ("(?P<>a)", "invalid named capture"), ("(?P<a-b>x)", "invalid named capture"), ("(?P<n", "invalid named capture"),
        ("(a{1000}){1000}", "expression too large"), ("(?:(?:a{100}){100}){100}", "expression too large"),
    ])
    func refusedPatternsSayWhy(pattern: String, reason: String) {
        #expect(throws: RegexError.self, "\(pattern)") { try RouteRegex(pattern) }
        do {
            _ = try RouteRegex(pattern)
        } catch {
            #expect(error.message.contains(reason), "\(pattern): \(error)")
        }
    }

    @Test func nestingAndSizeAreBounded() throws {
        let deep = String(repeating: "(", count: RegexParser.maxNesting) + "a" + String(repeating: ")", count: RegexParser.maxNesting)
        #expect(try regexMatches(deep, "a"))
        let tooDeep = "(" + deep + ")"
        #expect(throws: RegexError.self) { try RouteRegex(tooDeep) }
        // Repeats of nothing compile to nothing, however they nest.
        let empties = String(repeating: "(?:", count: 50) + String(repeating: "){1000}", count: 50)
        #expect(try regexMatches(empties, "x"))
        #expect(try RouteRegex(".{0,1000}").programSize <= RegexProgram.maxInstructions)
        // A class repeated a thousand times is stored once.
        let manyRanges = "[" + (0..<1000).map { "\\x{\(String(0x100 + 2 * $0, radix: 16))}" }.joined() + "]"
        let repeated = try RouteRegex("(?:" + manyRanges + "){1000}")
        #expect(repeated.classRangeCount == 2000)
        let distinctClasses = (1...35).map { k in "[" + (0..<1000).map { "\\x{\(String(0x1000 * k + 2 * $0, radix: 16))}" }.joined() + "]" }
        #expect(throws: RegexError.self) { try RouteRegex(distinctClasses.joined()) }
        var invalid: [UInt8] = Array("ab".utf8) + [0xFF]
        let result = invalid.withUnsafeMutableBufferPointer { RouteRegex.compile(UnsafeBufferPointer($0)) }
        guard case .failure(let error) = result else { Issue.record("invalid UTF-8 pattern compiled"); return }
        #expect(error.message == "invalid UTF-8" && error.offset == 2)
        invalid = []
        let empty = invalid.withUnsafeMutableBufferPointer { RouteRegex.compile(UnsafeBufferPointer($0)) }
        guard case .success(let matchesAll) = empty else { Issue.record("empty pattern refused"); return }
        #expect(matchesAll.matches(UnsafeBufferPointer(start: nil, count: 0)))
    }

    /// A backtracking engine takes exponential time here (seconds for 30 characters, forever for
    /// 100 000); the Pike VM is linear.
    @Test func catastrophicPatternsRunInLinearTime() throws {
        let cases: [(String, [UInt8], Bool)] = [
            ("^/r/(a+)+$", Array("/r/".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 100_000) + [UInt8(ascii: "!")], false),
            ("^/r/(a+)+$", Array("/r/".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 100_000), true),
            ("(x+x+)+y", [UInt8](repeating: UInt8(ascii: "x"), count: 100_000), false),
            ("^(a|aa)*$", [UInt8](repeating: UInt8(ascii: "a"), count: 100_000) + [UInt8(ascii: "b")], false),
            ("(.*a){20}", [UInt8](repeating: UInt8(ascii: "a"), count: 19) + [UInt8](repeating: UInt8(ascii: "b"), count: 10_000), false),
        ]
        for (pattern, input, expected) in cases {
            let regex = try RouteRegex(pattern)
            var result = !expected, stepped = !expected
            let elapsed = ContinuousClock().measure { result = regexMatches(regex, input) }
            #expect(result == expected, "\(pattern)")
            #expect(elapsed < .seconds(1), "\(pattern) took \(elapsed)")
            // The Pike VM (patterns without an automaton) is linear too.
            let vmElapsed = ContinuousClock().measure { stepped = regexMatchesStepByStep(regex, input) }
            #expect(stepped == expected, "\(pattern) (Pike VM)")
            #expect(vmElapsed < .seconds(1), "\(pattern) took \(vmElapsed) in the Pike VM")
        }
    }

    /// Config loading is bounded too: the automaton gives up past its bounds, quickly.
    @Test func hostilePatternsCompileQuickly() throws {
        let manyRanges = "[" + (0..<1000).map { "\\x{\(String(0x100 + 2 * $0, radix: 16))}" }.joined() + "]"
        let patterns = [
            "[a-q][^u-z]{13}x", "(?:a|b|c|d|e)*[a-e]{0,60}f", manyRanges + "{5}", "(" + manyRanges + "|[^a])+z",
            "(?:[a-z0-9]|[^x]){0,100}y", String(repeating: "(?:a|ab)", count: 80) + "c", "(.*a){40}",
        ]
        for pattern in patterns {
            var regex: RouteRegex?
            let elapsed = ContinuousClock().measure { regex = try? RouteRegex(pattern) }
            #expect(regex != nil, "\(pattern.prefix(40))")
            #expect(elapsed < .seconds(2), "\(pattern.prefix(40)) took \(elapsed) to compile")
        }
    }

    @Test func routeTableRoutesByAHostileRegexWithoutStalling() throws {
        let regexRoute = Route(path: .regex(try RouteRegex("^/r/(a+)+$")), headers: [], action: direct(200))
        let headerRoute = Route(path: .any, headers: [HeaderMatcher(name: "x-tag", value: "(b+)+c", regex: try RouteRegex("^(b+)+c$"), caseSensitive: true)],
                                action: direct(201))
        let table = RouteTable(name: "t", virtualHosts: [VirtualHost(name: "h", routes: [regexRoute, headerRoute])], domains: [["*"]])
        let hostilePath = "/r/" + String(repeating: "a", count: 50_000) + "!"
        let hostileHeader = String(repeating: "b", count: 50_000) + "!"
        let elapsed = ContinuousClock().measure {
            #expect(statusOf(table.route(FakeRequest(path: hostilePath, headers: [("x-tag", hostileHeader)]))) == nil)
        }
        #expect(elapsed < .seconds(1), "took \(elapsed)")
        #expect(statusOf(table.route(FakeRequest(path: "/r/aaaa"))) == 200)
        #expect(statusOf(table.route(FakeRequest(path: "/x", headers: [("x-tag", "bbbc")]))) == 201)
        #expect(statusOf(table.route(FakeRequest(path: "/x", headers: [("x-tag", "bbb")]))) == nil)
    }

    /// Random patterns from regex punctuation and random inputs: compiling and matching are total
    /// (no trap, no hang) whatever the bytes, as the fuzz harness will check at length.
    @Test func arbitraryBytesNeverTrap() {
        var random = FastRandom(seed: 0x5eed)
        let alphabet = Array("()[]{}|*+?.^$\\-:,0123456789aAbBdDsSwWzZpPQExX<>=!iImsU_é".utf8) + [0xFF, 0xC3, 0x00, 0x0A]
        var compiled = 0
        for _ in 0..<20_000 {
            let length = Int(random.below(24))
            var pattern: [UInt8] = []
            for _ in 0..<length { pattern.append(alphabet[Int(random.below(alphabet.count))]) }
            let result = pattern.withUnsafeBufferPointer { RouteRegex.compile($0) }
            guard case .success(let regex) = result else { continue }
            compiled += 1
            for _ in 0..<4 {
                var input: [UInt8] = []
                for _ in 0..<Int(random.below(16)) { input.append(alphabet[Int(random.below(alphabet.count))]) }
                let byAutomaton = regexMatches(regex, input), byVM = regexMatchesStepByStep(regex, input)
                #expect(byAutomaton == byVM, "\(String(decoding: pattern, as: UTF8.self)) on \(input)")
            }
        }
        #expect(compiled > 1000)
    }
}
