import Testing
@testable import TernServer
import TernCore

/// Transparent interception keys: `use_original_dst`, `listener_filters`, `bind_port: false`.
struct ConfigCaptureTests {
    /// The test config with `keys` added to its listener, and `more` listeners after it.
    func capturing(_ keys: String, more: String = "") -> ConfigResult {
        load(config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \(keys),")
            .replacingOccurrences(of: "}] }] }] }],", with: "}] }] }\(more)] }],"))
    }

    let handOffListener = """
        , { "name": "app", "address": "10.0.0.9:8080", "bind_port": false,
            "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "router_config_name": "r" } }] }] }
        """

    @Test func useOriginalDstAloneCapturesByRedirect() throws {
        let r = capturing("\"use_original_dst\": true", more: handOffListener)
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let plan = try #require(r.plan)
        #expect(plan.listeners.count == 2)
        #expect(plan.listeners[0].capture?.mode == .redirect)
        #expect(plan.listeners[1].bindPort == false && plan.listeners[1].capture == nil)
        #expect(r.diagnostics.warnings.isEmpty, "\(r.diagnostics.warnings)")
    }

    @Test func theOriginalDstFilterPicksTheMode() throws {
        let tproxy = capturing("\"use_original_dst\": true, \"listener_filters\": [{\"type\": \"original_dst\", \"config\": {\"type\": \"tproxy\", \"fallback_to_local\": true}}]")
        #expect(tproxy.diagnostics.errors.isEmpty, "\(tproxy.diagnostics.errors)")
        #expect(tproxy.plan?.listeners[0].capture?.mode == .tproxy)
        #expect(tproxy.plan?.listeners[0].capture?.fallbackToLocal == true)
        // The filter alone captures too (MOSN derives use_original_dst from it); its type defaults to redirect.
        let filterOnly = capturing("\"listener_filters\": [{\"type\": \"original_dst\"}]")
        #expect(filterOnly.plan?.listeners[0].capture?.mode == .redirect, "\(filterOnly.diagnostics.errors)")
        #expect(capturing("\"use_original_dst\": false").plan?.listeners[0].capture == nil)
    }

    @Test(arguments: [
        ("\"listener_filters\": [{\"type\": \"proxy_protocol\"}]", "$.servers[0].listeners[0].listener_filters[0].type", "unknown"),
        ("\"listener_filters\": [{\"type\": \"original_dst\", \"config\": {\"type\": \"divert\"}}]",
         "$.servers[0].listeners[0].listener_filters[0].config.type", "redirect, tproxy"),
        ("\"listener_filters\": [{\"type\": \"original_dst\"}, {\"type\": \"original_dst\"}]", "$.servers[0].listeners[0].listener_filters[1]", "twice"),
        ("\"listener_filters\": [{\"config\": {}}]", "$.servers[0].listeners[0].listener_filters[0].type", "required"),
        ("\"use_original_dst\": \"redirect\"", "$.servers[0].listeners[0].use_original_dst", "true or false"),
    ])
    func badCaptureKeysAreErrorsNamingTheirPath(keys: String, path: String, words: String) {
        let r = capturing(keys)
        #expect(r.plan == nil)
        #expect(hasError(r, at: path, saying: words), "\(r.diagnostics.errors)")
    }

    @Test func unixListenersCannotCapture() {
        let r = load(config().replacingOccurrences(of: "\"address\": \"127.0.0.1:2045\", \"bind_port\": true,",
                                                   with: "\"address\": \"/tmp/tern-capture.sock\", \"network\": \"unix\", \"bind_port\": true, \"use_original_dst\": true,"))
        #expect(hasError(r, at: "$.servers[0].listeners[0].use_original_dst", saying: "TCP listener"), "\(r.diagnostics.errors)")
    }

    @Test func handOffListenersWithoutACaptureAreWarnedAndDuplicatesRefused() {
        let idle = capturing("\"use_original_dst\": false", more: handOffListener)
        #expect(idle.diagnostics.errors.isEmpty)
        #expect(idle.diagnostics.warnings.contains { $0.hasPrefix("$.servers:") && $0.contains("receive nothing") })
        let twice = capturing("\"use_original_dst\": true", more: handOffListener + handOffListener.replacingOccurrences(of: "\"app\"", with: "\"app2\""))
        #expect(hasError(twice, at: "$.servers", saying: "both own 10.0.0.9:8080"), "\(twice.diagnostics.errors)")
    }

    @Test func portFallbackListenersAreTheWildcardOrWithFallbackToLocalTheLoopback() {
        let any4 = SocketAddress.parse("0.0.0.0:80")!, any6 = SocketAddress.parse("[::]:80")!
        let lo4 = SocketAddress.parse("127.0.0.1:80")!, lo6 = SocketAddress.parse("[::1]:80")!, other = SocketAddress.parse("10.0.0.1:80")!
        #expect(isPortFallback(any4, toLocal: false) && isPortFallback(any6, toLocal: false))
        #expect(!isPortFallback(lo4, toLocal: false) && !isPortFallback(other, toLocal: false))
        #expect(isPortFallback(lo4, toLocal: true) && isPortFallback(lo6, toLocal: true))
        #expect(!isPortFallback(any4, toLocal: true) && !isPortFallback(other, toLocal: true))
    }
}
