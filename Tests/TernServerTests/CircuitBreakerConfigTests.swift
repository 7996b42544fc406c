import Testing
@testable import TernServer
import TernCore

/// `circuit_breakers` as the config compiler reads it (MOSN's list of thresholds).
struct CircuitBreakerConfigTests {
    static func cluster(_ breakers: String) -> String {
        #""name": "c", "lb_type": "LB_RANDOM", "circuit_breakers": \#(breakers), "hosts": [{"address": "127.0.0.1:8080"}, {"address": "127.0.0.1:8081"}]"#
    }
    static let path = "$.cluster_manager.clusters[0].circuit_breakers"

    @Test func theFirstEntrySetsTheLimitsAndZeroMeansNone() throws {
        let r = load(config(cluster: Self.cluster(#"[{"max_connections": 10, "max_pending_requests": 5, "max_requests": 100, "max_retries": 3}]"#)))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let b = try #require(r.plan?.clusters[0].circuitBreaker)
        #expect(b.maxConnectionsPerHost == 10 && b.maxPendingRequests == 5 && b.maxRequests == 100 && b.maxRetries == 3)
        // All zero (MOSN's "no limit"), or an empty list: no breaker, nothing counted per request.
        for none in [#"[{"max_connections": 0}]"#, "[]", #"[{"max_retries": 2}]"#] {
            let n = load(config(cluster: Self.cluster(none)))
            #expect(n.diagnostics.errors.isEmpty, "\(none): \(n.diagnostics.errors)")
            #expect(n.plan?.clusters[0].circuitBreaker == nil, "\(none)")
        }
    }

    @Test func badValuesAreErrorsNamingTheirPath() {
        let cases: [(String, String)] = [
            (#"[{"max_requests": -1}]"#, Self.path + "[0].max_requests"),
            (#"[{"max_requests": "10"}]"#, Self.path + "[0].max_requests"),
            (#"[{"max_requests": 1}, {"max_requests": 2}]"#, Self.path + "[1]"),
            (#"[{"max_request": 1}]"#, Self.path + "[0].max_request"),
            (#"{"max_requests": 1}"#, Self.path),
            (#"[{"max_connections": 4294967296}]"#, Self.path + "[0].max_connections"),
        ]
        for (breakers, path) in cases {
            let r = load(config(cluster: Self.cluster(breakers)))
            #expect(r.diagnostics.errors.contains { $0.contains(path) }, "\(breakers): \(r.diagnostics.errors)")
        }
    }
}
