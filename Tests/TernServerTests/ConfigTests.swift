import Foundation
import Testing
@testable import TernServer
import TernCore

func load(_ json: String) -> ConfigResult { ConfigLoader.load(text: json) }

func config(proxy: String = "\"downstream_protocol\": \"Http1\", \"upstream_protocol\": \"Http1\", \"router_config_name\": \"r\"",
            route: String = "{\"cluster_name\": \"c\"}", cluster: String = "\"name\": \"c\", \"type\": \"SIMPLE\", \"lb_type\": \"LB_RANDOM\", \"hosts\": [{\"address\": \"127.0.0.1:8080\"}]",
            extra: String = "") -> String {
    """
    { "servers": [{ "default_log_level": "WARN",
        "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
           "routers": [{ "match": {"prefix": "/"}, "route": \(route) }] }] }],
        "listeners": [{ "name": "l", "address": "127.0.0.1:2045", "bind_port": true,
           "filter_chains": [{ "filters": [{ "type": "proxy", "config": { \(proxy) } }] }] }] }],
      "cluster_manager": { "clusters": [{ \(cluster) }] } \(extra) }
    """
}

struct ConfigTests {
    @Test func validConfigCompiles() throws {
        let r = load(config())
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        #expect(plan.listeners.count == 1)
        #expect(plan.clusters[0].connectTimeoutMS == 3000)
        #expect(plan.logLevel == .warn)
    }

    @Test func olderXSpellingWithSubProtocolIsUnderstood() {
        let r = load(config(proxy: "\"downstream_protocol\": \"X\", \"upstream_protocol\": \"X\", \"router_config_name\": \"r\", \"extend_config\": {\"sub_protocol\": \"bolt\"}"))
        #expect(r.plan != nil, "\(r.diagnostics.errors)")
        let missing = load(config(proxy: "\"downstream_protocol\": \"X\", \"router_config_name\": \"r\""))
        #expect(missing.diagnostics.errors.contains { $0.contains("config.extend_config.sub_protocol") })
        let unknown = load(config(proxy: "\"downstream_protocol\": \"X\", \"router_config_name\": \"r\", \"extend_config\": {\"sub_protocol\": \"dubbo\"}"))
        #expect(unknown.diagnostics.errors.contains { $0.contains("config.downstream_protocol") && $0.contains("dubbo") })
    }

    @Test func boltProtocolNamesAreAccepted() {
        for name in ["bolt", "boltv2"] {
            let r = load(config(proxy: "\"downstream_protocol\": \"\(name)\", \"upstream_protocol\": \"\(name)\", \"router_config_name\": \"r\", \"heartbeat_interval\": \"5s\""))
            #expect(r.plan != nil, "\(name): \(r.diagnostics.errors)")
        }
    }

    @Test func autoIsAccepted() {
        #expect(load(config(proxy: "\"downstream_protocol\": \"Auto\", \"upstream_protocol\": \"Auto\", \"router_config_name\": \"r\"")).plan != nil)
    }

    @Test(arguments: [
        (config(proxy: "\"downstream_protocol\": \"Http2\", \"router_config_name\": \"r\""), "filters[0].config.downstream_protocol"),
        (config(proxy: "\"downstream_protocol\": \"Http1\", \"router_config_name\": \"nope\""), "filters[0].config.router_config_name"),
        (config(route: "{\"cluster_name\": \"missing\"}"), "routers[0].route.cluster_name"),
        (config(route: "{\"cluster_name\": \"c\", \"timeout\": \"5 seconds\"}"), "routers[0].route.timeout"),
        (config(route: "{\"weighted_clusters\": [{\"cluster\": {\"name\": \"zz\", \"weight\": 1}}]}"), "route.weighted_clusters[0].cluster.name"),
        (config(cluster: "\"name\": \"c\", \"lb_type\": \"LB_FANCY\", \"hosts\": []"), "$.cluster_manager.clusters[0].lb_type"),
        (config(cluster: "\"name\": \"c\", \"type\": \"EDS\", \"hosts\": []"), "$.cluster_manager.clusters[0].type"),
        (config(cluster: "\"name\": \"c\", \"hosts\": [{\"address\": \"nohost\"}]"), "$.cluster_manager.clusters[0].hosts[0].address"),
        (config(cluster: "\"name\": \"c\", \"hosts\": [], \"max_request_per_conn\": \"many\""), "$.cluster_manager.clusters[0].max_request_per_conn"),
        (config(cluster: "\"name\": \"c\", \"hosts\": [], \"connect_timeout\": 3"), "$.cluster_manager.clusters[0].connect_timeout"),
        (config().replacingOccurrences(of: "\"type\": \"proxy\"", with: "\"type\": \"magic\""), "filters[0].type"),
        (config().replacingOccurrences(of: "127.0.0.1:2045", with: "2045"), "$.servers[0].listeners[0].address"),
        (config().replacingOccurrences(of: "\"bind_port\": true", with: "\"bind_port\": \"yes\""), "$.servers[0].listeners[0].bind_port"),
        (config().replacingOccurrences(of: "\"WARN\"", with: "\"LOUD\""), "$.servers[0].default_log_level"),
        ("{ \"servers\": 5 }", "$.servers"),
        ("{ not json", "$"),
    ])
    func invalidValuesAreErrorsWithTheirJSONPath(json: String, path: String) {
        let r = load(json)
        #expect(r.plan == nil)
        #expect(r.diagnostics.errors.contains { $0.contains(path) }, "errors: \(r.diagnostics.errors)")
    }

    @Test func refusedRegexesAreErrorsWithTheirJSONPathAndReason() {
        func withMatch(_ match: String) -> String {
            config().replacingOccurrences(of: "\"match\": {\"prefix\": \"/\"}", with: "\"match\": \(match)")
        }
        let cases = [
            (withMatch("{\"regex\": \"^/a(?=b)\"}"), "virtual_hosts[0].routers[0].match.regex", "lookaround"),
            (withMatch("{\"regex\": \"(a)\\\\1\"}"), "virtual_hosts[0].routers[0].match.regex", "backreferences"),
            (withMatch("{\"regex\": \"a{1001}\"}"), "virtual_hosts[0].routers[0].match.regex", "invalid repeat count"),
            (withMatch("{\"prefix\": \"/\", \"headers\": [{\"name\": \"x\", \"value\": \"\\\\pL\", \"regex\": true}]}"),
             "routers[0].match.headers[0].value", "Unicode character classes"),
        ]
        for (json, path, reason) in cases {
            let r = load(json)
            #expect(r.plan == nil)
            #expect(r.diagnostics.errors.contains { $0.contains(path) && $0.contains(reason) }, "errors: \(r.diagnostics.errors)")
        }
        let fine = load(withMatch("{\"regex\": \"^/r/(a+)+$\", \"headers\": [{\"name\": \"service\", \"value\": \"com\\\\.a\\\\..*\", \"regex\": true}]}"))
        #expect(fine.plan != nil, "\(fine.diagnostics.errors)")
    }

    @Test func unsupportedKeysAreWarningsWithTheirJSONPath() {
        let r = load(config(extra: ", \"pprof\": {}, \"tracing\": {\"enable\": true}"))
        #expect(r.plan != nil)
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("$.pprof:") })
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix("$.tracing:") })
        let s = load(config(cluster: "\"name\": \"c\", \"hosts\": [], \"slow_start\": {}, \"frobnicate\": 1"))
        #expect(s.diagnostics.warnings.contains { $0.hasPrefix("$.cluster_manager.clusters[0].slow_start:") })
        #expect(s.diagnostics.warnings.contains { $0.hasPrefix("$.cluster_manager.clusters[0].frobnicate:") })
    }

    @Test func olderMOSNShapesAreAccepted() throws {
        // Routes inside a `connection_manager` filter, a capitalised key (Go's JSON decoding
        // ignores case) and the old `SofaRpc` protocol name, all as older MOSN configs have them.
        let json = """
        { "servers": [{ "listeners": [{ "name": "l", "address": "127.0.0.1:2046", "bind_port": true,
            "filter_chains": [{ "filters": [
              { "type": "proxy", "config": { "downstream_protocol": "SofaRpc", "upstream_protocol": "SofaRpc", "router_config_name": "legacy" } },
              { "type": "connection_manager", "config": { "router_config_name": "legacy", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                  "routers": [{ "match": {"headers": [{"name": "service", "value": ".*"}]}, "route": {"cluster_name": "c"} }] }] } } ] }] }] }],
          "cluster_manager": { "clusters": [{ "Name": "c", "Type": "SIMPLE", "LB_Type": "LB_RANDOM", "hosts": [{"Address": "127.0.0.1:8080"}] }] } }
        """
        let r = load(json)
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        #expect(plan.clusters.first?.name == "c" && plan.clusters.first?.hosts.count == 1)
        #expect(!r.diagnostics.warnings.contains { $0.contains("Name") })
    }

    @Test func goDurationsParse() {
        #expect(parseGoDuration("1s") == 1000)
        #expect(parseGoDuration("250ms") == 250)
        #expect(parseGoDuration("1m30s") == 90_000)
        #expect(parseGoDuration("1.5h") == 5_400_000)
        #expect(parseGoDuration("100us") == 1)
        #expect(parseGoDuration("0") == 0)
        #expect(parseGoDuration("5") == nil)
        #expect(parseGoDuration("") == nil)
        #expect(parseGoDuration("1d") == nil)
    }

    @Test func examplesInTheRepositoryValidate() throws {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        let examples = url.appendingPathComponent("examples")
        var found = 0
        for dir in try FileManager.default.contentsOfDirectory(atPath: examples.path) {
            let d = examples.appendingPathComponent(dir)
            // Examples with TLS name certificates their make-certs.sh writes to certs/ (ignored by
            // git): a clean checkout has none until the script runs.
            let makeCerts = d.appendingPathComponent("make-certs.sh").path
            if FileManager.default.fileExists(atPath: makeCerts) && !FileManager.default.fileExists(atPath: d.appendingPathComponent("certs").path) {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/bin/sh")
                p.arguments = [makeCerts]
                p.standardOutput = FileHandle.nullDevice
                try p.run()
                p.waitUntilExit()
                #expect(p.terminationStatus == 0, "\(dir)/make-certs.sh failed")
            }
            for f in (try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? [] where f.hasSuffix(".json") {
                let r = ConfigLoader.load(path: d.appendingPathComponent(f).path)
                #expect(r.plan != nil, "\(dir)/\(f): \(r.diagnostics.errors)")
                found += 1
            }
        }
        #expect(found >= 1)
    }
}
