import Testing
@testable import TernServer

/// Found by fuzzing the config reader: a duration past Int64 nanoseconds trapped the process.
struct DurationRangeTests {
    @Test func durationsPastGoRangeAreErrorsNotCrashes() {
        #expect(parseGoDuration("9999999999999h") == nil)
        #expect(parseGoDuration("1" + String(repeating: "0", count: 400) + "s") == nil)   // Double is infinite
        #expect(parseGoDuration("2562047h").map { $0 >= 9_223_369_200_000 } == true)     // just inside
        let r = load(#"{"servers": [{"graceful_timeout": "9999999999999h", "listeners": []}]}"#)
        #expect(r.plan == nil)
        #expect(r.diagnostics.errors.contains { $0.hasPrefix("$.servers[0].graceful_timeout: invalid duration") }, "\(r.diagnostics.errors)")
    }
}
