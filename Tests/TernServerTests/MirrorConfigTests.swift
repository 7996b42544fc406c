import Testing
@testable import TernServer
import TernCore

/// The `mirror` stream filter and routes' `request_mirror_policies`: what is read, and errors at
/// their JSON paths.
struct MirrorConfigTests {
    let filters = "$.servers[0].listeners[0].stream_filters"
    let policy = "$.servers[0].routers[0].virtual_hosts[0].routers[0].request_mirror_policies"

    func withMirror(filter: String = "{\"type\": \"mirror\", \"config\": {}}", policy: String) -> String {
        config(route: "{\"cluster_name\": \"c\"}, \"request_mirror_policies\": \(policy)")
            .replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"stream_filters\": [\(filter)],")
    }

    func firstClusterRoute(_ r: ConfigResult) throws -> ClusterRoute {
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let table = try routeTable(plan)
        let route = try #require(table.virtualHosts.first?.routes.first)
        guard case .cluster(let c) = route.action else { throw TestFailure() }
        return c
    }
    struct TestFailure: Error {}

    @Test func aPolicyAndTheFilterAreRead() throws {
        let r = load(withMirror(filter: "{\"type\": \"mirror\", \"config\": {\"amplification\": 3, \"broadcast\": true}}",
                                policy: "{\"cluster\": \"c\", \"percent\": 30}"))
        #expect(r.diagnostics.errors.isEmpty, "\(r.diagnostics.errors)")
        let mirror = try #require(try firstClusterRoute(r).mirror)
        #expect(mirror.clusterIndex == 0 && mirror.percent == 30)
        let server = try #require(r.plan)
        let proxy = try #require(server.listeners[0].filters.first as? ProxyFilterPlan)
        let plan = try #require(proxy.settings.streamFilters)
        let filter = try #require(plan.mirror)
        #expect(filter.amplification == 3 && filter.broadcast)
        // The filter decides nothing per request: it is in neither phase.
        #expect(plan.beforeRoute.isEmpty && plan.afterRoute.isEmpty && !plan.isEmpty)
    }

    @Test func amplificationDefaultsToOneAndPercentAboveOneHundredMirrorsAll() throws {
        let r = load(withMirror(policy: "{\"cluster\": \"c\", \"percent\": 1000}"))
        #expect(try firstClusterRoute(r).mirror?.percent == 100)
        let server = try #require(r.plan)
        let proxy = try #require(server.listeners[0].filters.first as? ProxyFilterPlan)
        #expect(proxy.settings.streamFilters?.mirror?.amplification == 1)
        #expect(proxy.settings.streamFilters?.mirror?.broadcast == false)
    }

    @Test func errorsNameTheirPath() {
        for bad in ["0", "65", "1.5", "\"2\""] {
            let r = load(withMirror(filter: "{\"type\": \"mirror\", \"config\": {\"amplification\": \(bad)}}", policy: "{\"cluster\": \"c\", \"percent\": 10}"))
            #expect(hasError(r, at: "\(filters)[0].config.amplification"), "\(bad): \(r.diagnostics.errors)")
        }
        #expect(hasError(load(withMirror(filter: "{\"type\": \"mirror\", \"config\": {\"broadcast\": \"yes\"}}", policy: "{\"cluster\": \"c\", \"percent\": 10}")),
                         at: "\(filters)[0].config.broadcast"))
        // A key the filter does not read could be a misspelt policy: an error, not a warning.
        #expect(hasError(load(withMirror(filter: "{\"type\": \"mirror\", \"config\": {\"amplifcation\": 2}}", policy: "{\"cluster\": \"c\", \"percent\": 10}")),
                         at: "\(filters)[0].config.amplifcation"))
        #expect(hasError(load(withMirror(policy: "{\"cluster\": \"nope\", \"percent\": 10}")), at: "\(policy).cluster", saying: "unknown cluster"))
        #expect(hasError(load(withMirror(policy: "{\"percent\": 10}")), at: "\(policy).cluster", saying: "required"))
        #expect(hasError(load(withMirror(policy: "{\"cluster\": \"c\", \"percent\": -1}")), at: "\(policy).percent"))
        #expect(hasError(load(withMirror(policy: "{\"cluster\": \"c\", \"percnt\": 10}")), at: "\(policy).percnt"))
    }

    @Test func aZeroPercentAndAnAnsweringRouteAreWarned() {
        let zero = load(withMirror(policy: "{\"cluster\": \"c\"}"))
        #expect(zero.diagnostics.errors.isEmpty)
        #expect(zero.diagnostics.warnings.contains { $0.hasPrefix("\(policy).percent:") }, "\(zero.diagnostics.warnings)")
        let direct = load(config(route: "{\"cluster_name\": \"c\"}").replacingOccurrences(
            of: "\"route\": {\"cluster_name\": \"c\"}", with: "\"direct_response\": {\"status\": 200}, \"request_mirror_policies\": {\"cluster\": \"c\", \"percent\": 100}"))
        #expect(direct.diagnostics.errors.isEmpty, "\(direct.diagnostics.errors)")
        #expect(direct.diagnostics.warnings.contains { $0.hasPrefix("\(policy):") }, "\(direct.diagnostics.warnings)")
    }
}
