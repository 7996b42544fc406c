import Glibc
import Synchronization
import Testing
@testable import TernServer
@testable import TernCore
import TernTestSupport

/// `flowControlFilter`: MOSN's keys, config errors at their paths, the key each `limit_key_type`
/// matches, and one-second windows whose count holds across threads.
struct FlowControlFilterTests {
    let base = StreamFilterTests()
    let at = "$.servers[0].listeners[0].stream_filters[0].config"

    func flow(_ config: String) -> String { "{\"type\": \"flowControlFilter\", \"config\": {\(config)}}" }

    func filter(_ config: String) throws -> FlowControlFilter {
        let p = try base.plan(flow(config))
        #expect(p.beforeRoute.isEmpty && p.afterRoute.count == 1)   // after routing, as MOSN's
        guard case .flowControl(let f) = try #require(p.afterRoute.first) else { throw CancellationError() }
        return f
    }

    func status(_ f: FlowControlFilter, _ r: FakeRequest, second: UInt32 = 7) -> Int? {
        switch f.decide(r, second: second) {
        case .answer(let a): return a.status
        default: return nil
        }
    }

    @Test func mosnSampleConfigLoadsWithItsDefaults() throws {
        // MOSN's examples/codes/flowcontrol-sample, as written there.
        let f = try filter("""
            "app_name": "sample", "log_path": "/tmp/sentinel", "global_switch": true, "monitor": false,
            "limit_key_type": "PATH", "action": {"status": 500, "body": "blocked"},
            "rules": [{"resource": "/test", "limitApp": "", "grade": 1, "threshold": 1, "strategy": 0}]
            """)
        #expect(f.keyType == .path && f.rules.count == 1 && f.rules[0].threshold == 1)
        #expect(f.limited.status == 500 && f.limited.body == "blocked" && f.limited.code == "flow_limited")
        let defaults = try filter("\"global_switch\": true, \"rules\": [{\"resource\": \"/a\", \"threshold\": 2.9}]")
        #expect(defaults.limited.status == 509 && defaults.limited.body == "current request is limited")   // MOSN's defaults
        #expect(defaults.rules[0].threshold == 2)   // Sentinel compares a count with a float: 2.9 lets 2 through
    }

    @Test func configErrorsNameTheirPath() {
        let r = load(base.withFilters(flow("""
            "global_switch": true, "limit_key_type": "HEADER", "action": {"status": 9, "bodyy": "x"}, "callback_name": "mine",
            "dynamic_data_resources": [{"resource_type": "nacos"}], "rulez": [],
            "rules": [{"threshold": 1}, {"resource": "/a"}, {"resource": "/b", "threshold": -1}, {"resource": "/c", "threshold": 1, "grade": 0},
                      {"resource": "/d", "threshold": 1, "controlBehavior": 1}, {"resource": "/e", "threshold": 1, "statIntervalInMs": 500},
                      {"resource": "/f", "threshold": 1, "warmUpPeriodSec": 10}, {"resource": "", "threshold": 1}]
            """)))
        #expect(r.plan == nil)
        #expect(hasError(r, at: "\(at).limit_key_type", saying: "HEADER", "PATH, ARG or URI"), "\(r.diagnostics.errors)")
        #expect(hasError(r, at: "\(at).action.status"))
        #expect(hasError(r, at: "\(at).action.bodyy", saying: "body"))
        #expect(hasError(r, at: "\(at).callback_name"))
        #expect(hasError(r, at: "\(at).dynamic_data_resources"))
        #expect(hasError(r, at: "\(at).rulez"))
        #expect(hasError(r, at: "\(at).rules[0].resource", saying: "required"))
        #expect(hasError(r, at: "\(at).rules[1].threshold", saying: "required"))
        #expect(hasError(r, at: "\(at).rules[2].threshold"))
        #expect(hasError(r, at: "\(at).rules[3].grade"))
        #expect(hasError(r, at: "\(at).rules[4].controlBehavior"))
        #expect(hasError(r, at: "\(at).rules[5].statIntervalInMs"))
        #expect(hasError(r, at: "\(at).rules[6].warmUpPeriodSec"))
        #expect(hasError(r, at: "\(at).rules[7].resource", saying: "empty"))
    }

    @Test func offOrEmptyIsAWarningAndMonitorStillBlocks() throws {
        for off in ["\"global_switch\": false, \"rules\": [{\"resource\": \"/a\", \"threshold\": 1}]",
                    "\"rules\": [{\"resource\": \"/a\", \"threshold\": 1}]", "\"global_switch\": true"] {
            let r = load(base.withFilters(flow(off)))
            #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
            #expect(!r.diagnostics.warnings.filter { $0.hasPrefix(at) }.isEmpty, "\(r.diagnostics.warnings)")
        }
        // MOSN reads `monitor` and never uses it: blocking goes on, with a warning saying so.
        let r = load(base.withFilters(flow("\"global_switch\": true, \"monitor\": true, \"rules\": [{\"resource\": \"/a\", \"threshold\": 0}]")))
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("\(at).monitor:") })
        let f = try filter("\"global_switch\": true, \"monitor\": true, \"rules\": [{\"resource\": \"/a\", \"threshold\": 0}]")
        #expect(status(f, FakeRequest(path: "/a")) == 509)
    }

    @Test func eachKeyTypeMatchesItsPartOfTheRequest() throws {
        let path = try filter("\"global_switch\": true, \"limit_key_type\": \"PATH\", \"rules\": [{\"resource\": \"/a\", \"threshold\": 0}, {\"resource\": \"com.example.Svc\", \"threshold\": 0}]")
        #expect(status(path, FakeRequest(path: "/a")) == 509)
        var withQuery = FakeRequest(path: "/a"); withQuery.query = "x=1"
        #expect(status(path, withQuery) == 509)                 // the query is not part of PATH
        #expect(status(path, FakeRequest(path: "/ab")) == nil)   // exact, not a prefix
        #expect(status(path, FakeRequest(path: "/A")) == nil)
        // A bolt call (no path) is matched by its service.
        #expect(status(path, FakeRequest(path: "", headers: [("service", "com.example.Svc")])) == 509)
        #expect(status(path, FakeRequest(path: "", headers: [("service", "com.example.Other")])) == nil)

        let arg = try filter("\"global_switch\": true, \"limit_key_type\": \"ARG\", \"rules\": [{\"resource\": \"x=1\", \"threshold\": 0}]")
        #expect(status(arg, withQuery) == 509)
        #expect(status(arg, FakeRequest(path: "/x=1")) == nil)
        #expect(status(arg, FakeRequest(path: "", headers: [("service", "x=1")])) == nil)   // bolt has no query

        let uri = try filter("\"global_switch\": true, \"limit_key_type\": \"URI\", \"rules\": [{\"resource\": \"/a?x=1\", \"threshold\": 0}, {\"resource\": \"/b\", \"threshold\": 0}]")
        #expect(status(uri, withQuery) == 509)
        #expect(status(uri, FakeRequest(path: "/a")) == nil)
        var other = FakeRequest(path: "/a"); other.query = "x=2"
        #expect(status(uri, other) == nil)
        #expect(status(uri, FakeRequest(path: "/b")) == 509)
        var bq = FakeRequest(path: "/b"); bq.query = "y"
        #expect(status(uri, bq) == nil)
    }

    @Test func thresholdRequestsPassPerWindowThenTheWindowResets() throws {
        let f = try filter("\"global_switch\": true, \"rules\": [{\"resource\": \"/a\", \"threshold\": 3}, {\"resource\": \"/b\", \"threshold\": 1}]")
        let a = FakeRequest(path: "/a")
        #expect((0..<5).map { _ in status(f, a, second: 10) } == [nil, nil, nil, 509, 509])
        #expect(status(f, FakeRequest(path: "/b"), second: 10) == nil)   // each rule counts its own resource
        #expect(status(f, FakeRequest(path: "/c"), second: 10) == nil)   // no rule: never limited
        #expect((0..<4).map { _ in status(f, a, second: 11) } == [nil, nil, nil, 509])
    }

    @Test func theCountHoldsAcrossThreads() throws {
        let f = try filter("\"global_switch\": true, \"rules\": [{\"resource\": \"/a\", \"threshold\": 1000}]")
        let rule = f.rules[0]
        let passed = Atomic<Int>(0)
        let threads = 4, attempts = 5_000
        try runOnThreads(threads) { _ in
            var mine = 0
            for _ in 0..<attempts where rule.admit(second: 42) { mine += 1 }
            passed.add(mine, ordering: .relaxed)
        }
        #expect(passed.load(ordering: .relaxed) == 1000)
    }
}

/// Runs `body(i)` on `count` POSIX threads at once and waits for all of them.
func runOnThreads(_ count: Int, _ body: (Int) -> Void) throws {
    final class Box: @unchecked Sendable { let body: (Int) -> Void; let index: Int; init(_ b: @escaping (Int) -> Void, _ i: Int) { body = b; index = i } }
    try withoutActuallyEscaping(body) { escaping in
        var threads: [pthread_t] = []
        for i in 0..<count {
            var t = pthread_t()
            let box = Unmanaged.passRetained(Box(escaping, i)).toOpaque()
            let rc = pthread_create(&t, nil, { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                box.body(box.index)
                return nil
            }, box)
            try #require(rc == 0)
            threads.append(t)
        }
        for t in threads { pthread_join(t, nil) }
    }
}
