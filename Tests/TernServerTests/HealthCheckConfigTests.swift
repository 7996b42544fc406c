import Testing
@testable import TernServer
import TernCore
import TernHTTP1
import TernBolt

/// Cluster `health_check` (MOSN's keys and defaults) and `outlier_detection` (Envoy's names).
struct HealthCheckConfigTests {
    let at = "$.cluster_manager.clusters[0]"
    func withCluster(_ extra: String) -> ConfigResult {
        load(config(cluster: "\"name\": \"c\", \"type\": \"SIMPLE\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}], \(extra)"))
    }
    func cluster(_ r: ConfigResult) throws -> ClusterConfig {
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        return plan.clusters[0]
    }

    @Test func mosnDefaultsAndTheProbeByProtocol() throws {
        let tcp = try cluster(withCluster("\"health_check\": {}"))
        let check = try #require(tcp.healthCheck)
        #expect(check.probe is TCPConnectProbe)
        #expect(check.timeoutMS == 1000 && check.intervalMS == 15_000 && check.jitterMS == 5)
        #expect(check.healthyThreshold == 1 && check.unhealthyThreshold == 1)
        #expect(tcp.health?.activelyChecked == true && tcp.health?.outlier == nil)
        #expect(try cluster(withCluster("\"health_check\": {\"protocol\": \"bolt\"}")).healthCheck?.probe is BoltHealthProbe)
        // Http1 without http_check_config: MOSN falls back to a TCP connect.
        #expect(try cluster(withCluster("\"health_check\": {\"protocol\": \"Http1\"}")).healthCheck?.probe is TCPConnectProbe)
        let http = try cluster(withCluster("""
            "health_check": {"protocol": "Http1", "interval": "2s", "unhealthy_threshold": 3,
              "check_config": {"http_check_config": {"path": "/ping?x=1", "method": "HEAD", "domain": "svc", "port": 9090, "timeout": "300ms", "codes": [{"start": 200, "end": 204}]}}}
            """)).healthCheck
        let probe = try #require(http?.probe as? HTTP1HealthProbe)
        #expect(probe.method == "HEAD" && probe.path == "/ping?x=1" && probe.domain == "svc" && probe.codes == [200...204])
        #expect(http?.timeoutMS == 300 && http?.intervalMS == 2000 && http?.unhealthyThreshold == 3)
        #expect(http?.addresses?.first?.description == "127.0.0.1:9090")
    }

    @Test func theHTTPProbeReadsOnlyTheStatusLine() {
        let probe = HTTP1HealthProbe(method: "GET", path: "/", domain: nil, codes: [])
        func judge(_ text: String) -> ProbeVerdict { Array(text.utf8).withUnsafeBufferPointer { probe.judge($0.baseAddress!, $0.count) } }
        #expect(judge("HTTP/1.1 200 OK\r\n") == .healthy)
        #expect(judge("HTTP/1.1 20") == .needMore)
        #expect(judge("HTTP/1.0 204 No Content\r\n") == .unhealthy("status 204"))   // MOSN's default: 200 only
        #expect(judge("SSH-2.0-OpenSSH") == .unhealthy("not an HTTP/1 answer"))
        #expect(judge("HTTP/1.1 2x0 OK") == .unhealthy("malformed status line"))
    }

    @Test func errorsNameTheirPath() {
        #expect(hasError(withCluster("\"health_check\": {\"interval\": \"soon\"}"), at: "\(at).health_check.interval"))
        #expect(hasError(withCluster("\"health_check\": {\"protocol\": \"Http1\", \"check_config\": {\"http_check_config\": {\"scheme\": \"https\"}}}"),
                         at: "\(at).health_check.check_config.http_check_config.scheme"))
        #expect(hasError(withCluster("\"health_check\": {\"protocol\": \"Http1\", \"check_config\": {\"http_check_config\": {\"codes\": [{\"start\": 300, \"end\": 200}]}}}"),
                         at: "\(at).health_check.check_config.http_check_config.codes[0]"))
        #expect(hasError(withCluster("\"health_check\": {\"protocol\": \"Http1\", \"check_config\": {\"http_check_config\": {\"path\": \"/a b\"}}}"),
                         at: "\(at).health_check.check_config.http_check_config.path"))
        #expect(hasError(withCluster("\"outlier_detection\": {\"max_ejection_percent\": 101}"), at: "\(at).outlier_detection.max_ejection_percent"))
        #expect(hasError(withCluster("\"outlier_detection\": {\"consecutive_5xx\": 0}"), at: "\(at).outlier_detection.consecutive_5xx"))
        #expect(hasError(withCluster("\"outlier_detection\": {\"base_ejection_time\": \"0s\"}"), at: "\(at).outlier_detection.base_ejection_time"))
    }

    @Test func outlierDefaultsAreEnvoys() throws {
        let c = try cluster(withCluster("\"outlier_detection\": {}"))
        let o = try #require(c.health?.outlier)
        #expect(o.consecutiveFailures == 5 && o.baseEjectionMS == 30_000 && o.maxEjectionMS == 300_000 && o.maxEjectionPercent == 10)
        #expect(c.healthCheck == nil && c.health?.activelyChecked == false)
        #expect(try cluster(withCluster("\"lb_type\": \"LB_RANDOM\"")).health == nil, "no health state without either key")
    }
}

/// `fault_tolerance` (MOSN's send-side stream filter): its camelCase keys, defaults and errors.
struct FaultToleranceConfigTests {
    let at = "$.servers[0].listeners[0].stream_filters[0].config"
    func withFilter(_ config: String) -> ConfigResult {
        load(TernServerTests.config().replacingOccurrences(of: "\"bind_port\": true,",
                                                          with: "\"bind_port\": true, \"stream_filters\": [{\"type\": \"fault_tolerance\", \"config\": \(config)}],"))
    }

    @Test func mosnDefaultsAndTheSendPhase() throws {
        let r = withFilter("{\"enabled\": true}")
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let proxy = try #require(plan.listeners[0].filters.first as? ProxyFilterPlan)
        let filters = try #require(proxy.settings.streamFilters)
        #expect(filters.beforeRoute.isEmpty && filters.afterRoute.isEmpty && filters.response.count == 1)
        guard case .faultTolerance(let f) = filters.response[0] else { Issue.record("not fault_tolerance"); return }
        #expect(f.exceptionStatuses == [502, 503, 504] && f.timeWindowMS == 10_000 && f.leastWindowCount == 10)
        #expect(f.exceptionRateMultiple == 5 && f.maxHostsOut == 1 && f.recoverMS == 900_000)
        // Its clusters get the shared health state it takes hosts out through.
        #expect(plan.clusters[0].health != nil)
    }

    @Test func disabledIsAWarningAndBadValuesAreErrors() {
        let off = withFilter("{\"enabled\": false, \"exceptionTypes\": [500]}")
        #expect(off.diagnostics.errors.isEmpty && off.diagnostics.warnings.contains { $0.hasPrefix("\(at).enabled:") })
        #expect(hasError(withFilter("{\"enabled\": true, \"timeWindow\": 5}"), at: "\(at).timeWindow"))
        #expect(hasError(withFilter("{\"enabled\": true, \"exceptionRateMultiple\": 1}"), at: "\(at).exceptionRateMultiple"))
        #expect(hasError(withFilter("{\"enabled\": true, \"maxIpRatio\": 2}"), at: "\(at).maxIpRatio"))
        #expect(hasError(withFilter("{\"enabled\": true, \"exceptionTypes\": [\"502\"]}"), at: "\(at).exceptionTypes[0]"))
        #expect(hasError(withFilter("{\"enabled\": true, \"recovertime\": 10, \"recoverTme\": 5}"), at: "\(at).recoverTme", saying: "recoverTime"))
    }
}

/// Route `retry_policy` as MOSN reads it.
struct RetryPolicyConfigTests {
    let at = "$.servers[0].routers[0].virtual_hosts[0].routers[0].route.retry_policy"
    func policy(_ json: String?) throws -> RetryPolicy {
        let route = json.map { "{\"cluster_name\": \"c\", \"retry_policy\": \($0)}" } ?? "{\"cluster_name\": \"c\"}"
        let r = load(TernServerTests.config(route: route))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let table = try routeTable(plan)
        guard case .cluster(let c) = table.virtualHosts[0].routes[0].action else { throw TestError() }
        return c.retry
    }
    struct TestError: Error {}

    @Test func mosnsDefaultsAndItsFloorOfThreeRetries() throws {
        let none = try policy(nil)
        #expect(!none.retryOn && none.numRetries == 3 && none.perTryTimeoutMS == 0)
        let on = try policy("{\"retry_on\": true, \"num_retries\": 5, \"retry_timeout\": \"200ms\"}")
        #expect(on.retryOn && on.numRetries == 5 && on.perTryTimeoutMS == 200)
        #expect(try policy("{\"retry_on\": true, \"num_retries\": 1}").numRetries == 3)
    }

    @Test func errorsNameTheirPath() {
        func errors(_ json: String) -> ConfigResult { load(TernServerTests.config(route: "{\"cluster_name\": \"c\", \"retry_policy\": \(json)}")) }
        #expect(hasError(errors("{\"num_retries\": 11}"), at: "\(at).num_retries"))
        #expect(hasError(errors("{\"retry_timeout\": \"soon\"}"), at: "\(at).retry_timeout"))
        #expect(hasError(errors("{\"retryable_status_codes\": [503]}"), at: "\(at).retryable_status_codes"))
        #expect(hasError(errors("{\"retry_on\": \"yes\"}"), at: "\(at).retry_on"))
    }

    @Test func backoffDrawsStayUnderTheDoublingCeiling() {
        var random = FastRandom(seed: 7)
        for n in 1...8 {
            let ceiling = min(RetryPolicy.baseBackoffMS << (n - 1), RetryPolicy.maxBackoffMS)
            let draws = (0..<500).map { _ in RetryPolicy.backoffMS(retry: n, &random) }
            #expect(draws.allSatisfy { $0 >= 0 && $0 <= ceiling })
            #expect(draws.max()! > ceiling * 3 / 4, "full jitter reaches near the ceiling")
        }
    }
}
