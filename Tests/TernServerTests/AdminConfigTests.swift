import Testing
@testable import TernServer
import TernCore

/// `admin` and `metrics.sinks` (MOSN's keys): read into the plan, or errors naming their JSON path.
struct AdminConfigTests {
    func hasError(_ r: ConfigResult, at path: String, saying text: String = "") -> Bool {
        r.diagnostics.errors.contains { $0.hasPrefix(path + ":") && $0.contains(text) }
    }

    @Test func adminAndPrometheusAreRead() throws {
        let r = load(config(extra: """
            , "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 34901}}},
              "metrics": {"sinks": [{"type": "prometheus", "config": {"port": 34902, "endpoint": "/stats/prometheus"}}], "shm_zone": "x"}
            """))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        #expect(plan.admin.address == SocketAddress.parse("127.0.0.1:34901"))
        #expect(plan.admin.prometheus?.address == SocketAddress.parse("0.0.0.0:34902"))
        #expect(plan.admin.prometheus?.endpoint == "/stats/prometheus")
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("$.metrics.shm_zone:") })
        // The loaded config is kept for config_dump.
        guard case .object(let root) = plan.admin.loadedConfig else { Issue.record("no config kept"); return }
        #expect(root["admin"] != nil && root["servers"] != nil)
    }

    @Test func prometheusEndpointDefaultsToMetrics() throws {
        let r = load(config(extra: ", \"metrics\": {\"sinks\": [{\"type\": \"prometheus\", \"config\": {\"port\": 9100}}]}"))
        #expect(try #require(r.plan).admin.prometheus?.endpoint == "/metrics")
    }

    @Test func noAdminKeyMeansNoAdminThread() throws {
        #expect(try #require(load(config()).plan).admin.isEnabled == false)
    }

    @Test(arguments: [
        (#""admin": {}"#, "$.admin.address", "required"),
        (#""admin": {"address": {}}"#, "$.admin.address.socket_address", "required"),
        (#""admin": {"address": {"socket_address": {"address": "0.0.0.0"}}}"#, "$.admin.address.socket_address.port_value", "required"),
        (#""admin": {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 70000}}}"#, "$.admin.address.socket_address.port_value", "between"),
        (#""admin": {"address": {"socket_address": {"address": "example.com", "port_value": 1}}}"#, "$.admin.address.socket_address.address", "not an IP address"),
        (#""admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 2045}}}"#, "$.admin", "listener l"),
        (#""metrics": {"sinks": [{"type": "prometheus", "config": {}}]}"#, "$.metrics.sinks[0].config.port", "required"),
        (#""metrics": {"sinks": [{"type": "prometheus", "config": {"port": 0}}]}"#, "$.metrics.sinks[0].config.port", "between"),
        (#""metrics": {"sinks": [{"type": "prometheus", "config": {"port": 9100, "endpoint": "metrics"}}]}"#, "$.metrics.sinks[0].config.endpoint", "must start with /"),
        (#""metrics": {"sinks": [{"type": "prometheus", "config": {"port": 9100, "export_url": "http://gw:9091"}}]}"#, "$.metrics.sinks[0].config.export_url", "push gateway"),
        (#""metrics": {"sinks": [{"type": "prometheus"}]}"#, "$.metrics.sinks[0].config", "required"),
        (#""metrics": {"sinks": [{"config": {"port": 9100}}]}"#, "$.metrics.sinks[0].type", "required"),
        (#""metrics": {"sinks": [{"type": "prometheus", "config": {"port": 2045}}]}"#, "$.metrics", "listener l"),
        (#""admin": {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 9100}}}, "metrics": {"sinks": [{"type": "prometheus", "config": {"port": 9100}}]}"#,
         "$.metrics.sinks", "admin API"),
    ])
    func badAdminAndMetricsKeysAreErrorsWithTheirJSONPath(json: String, path: String, text: String) {
        let r = load(config(extra: ", " + json))
        #expect(r.plan == nil)
        #expect(hasError(r, at: path, saying: text), "\(r.diagnostics.errors)")
    }

    @Test func otherSinksAreWarnedAndIgnored() throws {
        let r = load(config(extra: ", \"metrics\": {\"sinks\": [{\"type\": \"console\", \"config\": {}}]}"))
        #expect(try #require(r.plan).admin.prometheus == nil)
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("$.metrics.sinks[0].type:") && $0.contains("console") })
    }

    @Test func configDumpHidesInlinePrivateKeysOnly() {
        let v: JSONValue = .object(["tls_context": .object(["private_key": .string("-----BEGIN PRIVATE KEY-----\nabc"), "cert_chain": .string("c.pem")]),
                                    "other": .array([.object(["private_key": .string("key.pem")])])])
        let out = JSONText.render(AdminAPI.redactingKeys(v))
        #expect(out.contains("[redacted]") && !out.contains("BEGIN") && out.contains("key.pem") && out.contains("c.pem"))
    }

    @Test func jsonTextEscapesAndRoundTrips() throws {
        let v: JSONValue = .object(["a\"b": .string("line\nnext\u{1}"), "n": .number(3, isInteger: true), "f": .number(1.5, isInteger: false),
                                    "l": .array([.bool(true), .null])])
        #expect(try JSONParser.parse(JSONText.render(v)) == v)
    }

    @Test func logLevelNamesAreMOSNsExactly() {
        #expect(AdminAPI.mosnLevel("DEBUG") == .debug)
        #expect(AdminAPI.mosnLevel("debug") == nil)
        #expect(AdminAPI.mosnLevel("WARNING") == nil)
    }
}
