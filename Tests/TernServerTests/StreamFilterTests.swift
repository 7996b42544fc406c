import Glibc
import Testing
@testable import TernServer
import TernCore
import TernTestSupport

/// `stream_filters`: config errors name their JSON path; the compiled filters decide as MOSN's do.
struct StreamFilterTests {
    func withFilters(_ filters: String, networkFilters: String? = nil) -> String {
        var json = config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"stream_filters\": [\(filters)],")
        if let networkFilters {
            json = json.replacingOccurrences(of: "\"filters\": [{ \"type\": \"proxy\"", with: "\"filters\": [\(networkFilters), { \"type\": \"proxy\"")
        }
        return json
    }

    func plan(_ filters: String) throws -> StreamFilterPlan {
        let r = load(withFilters(filters))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let proxy = try #require(plan.listeners[0].filters.first as? ProxyFilterPlan)
        return try #require(proxy.settings.streamFilters)
    }

    let at = "$.servers[0].listeners[0].stream_filters"

    // MARK: config errors

    @Test func unknownTypesAreErrorsAtTheirPathNeverWarnings() {
        for type in ["gzip", "dsl", "ipaccess", "transcoder"] {
            let r = load(withFilters("{\"type\": \"ip_access\", \"config\": {}}, {\"type\": \"\(type)\", \"config\": {}}"))
            #expect(r.plan == nil)
            #expect(hasError(r, at: "\(at)[1].type", saying: "\"\(type)\"", "not supported by Tern yet"), "\(r.diagnostics.errors)")
        }
        #expect(hasError(load(withFilters("{\"config\": {}}")), at: "\(at)[0].type", saying: "required"))
        #expect(hasError(load(withFilters("{\"type\": \"ip_access\", \"go_plugin_config\": {\"so_path\": \"x.so\"}}")), at: "\(at)[0].go_plugin_config"))
    }

    @Test func healthcheckIsAcceptedUnlessItAsksToPassHeartbeatsThrough() {
        let ok = load(withFilters("{\"type\": \"healthcheck\", \"config\": {\"passthrough\": false}}"))
        #expect(ok.diagnostics.errors.isEmpty)
        #expect(hasError(load(withFilters("{\"type\": \"healthcheck\", \"config\": {\"passthrough\": true}}")), at: "\(at)[0].config.passthrough"))
    }

    @Test func ipAccessConfigErrorsNameTheirPath() {
        let r = load(withFilters("""
            {"type": "ip_access", "config": {"default_action": "alow", "ips": [
              {"action": "deny", "addrs": ["10.0.0.0/33", "1.2.3.4", "fd00::/8", "example.com"]},
              {"addrs": ["::1"]}, {"action": "allow", "addrs": []}, {"action": "deny"}]}}
            """))
        #expect(hasError(r, at: "\(at)[0].config.default_action", saying: "alow"))
        #expect(hasError(r, at: "\(at)[0].config.ips[0].addrs[0]"))
        #expect(!hasError(r, at: "\(at)[0].config.ips[0].addrs[1]"))
        #expect(!hasError(r, at: "\(at)[0].config.ips[0].addrs[2]"))
        #expect(hasError(r, at: "\(at)[0].config.ips[0].addrs[3]"))
        #expect(hasError(r, at: "\(at)[0].config.ips[1].action", saying: "required"))
        #expect(hasError(r, at: "\(at)[0].config.ips[2].addrs"))
        #expect(hasError(r, at: "\(at)[0].config.ips[3].addrs"))
        // Any key a filter does not read is an error: a misspelt list would leave requests unchecked.
        #expect(hasError(load(withFilters("{\"type\": \"ip_access\", \"config\": {\"ipz\": []}}")), at: "\(at)[0].config.ipz", saying: "known: default_action, header, ips"))
        #expect(hasError(load(withFilters("{\"type\": \"fault\", \"config\": {\"abort\": {\"status\": 500, \"percentage\": 1, \"percent\": 5}}}")),
                         at: "\(at)[0].config.abort.percent"))
    }

    @Test func payloadLimitConfig() throws {
        #expect(hasError(load(withFilters("{\"type\": \"payload_limit\", \"config\": {\"max_entity_size\": -1}}")), at: "\(at)[0].config.max_entity_size"))
        #expect(hasError(load(withFilters("{\"type\": \"payload_limit\", \"config\": {\"max_entity_size\": 10, \"http_status\": 99}}")), at: "\(at)[0].config.http_status"))
        let zero = load(withFilters("{\"type\": \"payload_limit\", \"config\": {\"max_entity_size\": 0}}"))
        #expect(zero.diagnostics.errors.isEmpty && zero.diagnostics.warnings.contains { $0.hasPrefix("\(at)[0].config.max_entity_size:") })
        let p = try plan("{\"type\": \"payload_limit\", \"config\": {\"max_entity_size\": 100}}")
        #expect(p.streamedBodyLimit?.maxBytes == 100)
        #expect(p.streamedBodyLimit?.answer.status == 413)   // Tern's default; MOSN has none
        // MOSN's own struct tag has a trailing space; that spelling works too.
        #expect(try plan("{\"type\": \"payload_limit\", \"config\": {\"max_entity_size \": 7, \"http_status\": 400}}").streamedBodyLimit?.answer.status == 400)
    }

    @Test func faultConfigErrorsNameTheirPath() {
        let r = load(withFilters("""
            {"type": "fault", "config": {"delay": {"fixed_delay": "fast", "percentage": 50},
              "abort": {"percentage": 101}, "upstream_cluster": "nope", "headers": [{"name": "x", "value": "(", "regex": true}]}}
            """))
        #expect(hasError(r, at: "\(at)[0].config.delay.fixed_delay"))
        #expect(hasError(r, at: "\(at)[0].config.abort.percentage", saying: "between 0 and 100"))
        #expect(hasError(r, at: "\(at)[0].config.abort.status", saying: "required"))
        #expect(hasError(r, at: "\(at)[0].config.upstream_cluster", saying: "nope"))
        #expect(hasError(r, at: "\(at)[0].config.headers[0].value"))
        #expect(hasError(load(withFilters("{\"type\": \"fault\", \"config\": {\"delay\": {\"fixed_delay\": \"2h\", \"percentage\": 1}}}")),
                         at: "\(at)[0].config.delay.fixed_delay"))
    }

    @Test func filtersOnAListenerWhoseBytesCanBypassThemAreRefused() {
        let fallback = load(withFilters("{\"type\": \"ip_access\", \"config\": {\"default_action\": \"deny\"}}")
            .replacingOccurrences(of: "\"router_config_name\": \"r\"", with: "\"router_config_name\": \"r\", \"fallback_for_unknown_protocol\": true")
            .replacingOccurrences(of: "\"type\": \"proxy\", \"config\": { ", with: "\"type\": \"proxy\", \"config\": { ")
            .replacingOccurrences(of: "} }] }] }] }]", with: "} }, { \"type\": \"tcp_proxy\", \"config\": {\"cluster\": \"c\"} }] }] }] }]"))
        #expect(hasError(fallback, at: at, saying: "tcp_proxy"), "\(fallback.diagnostics.errors)")
    }

    @Test func everyChainPickedByServerNameRunsTheListenersFilters() throws {
        let proxy = #"{ "type": "proxy", "config": { "downstream_protocol": "Http1", "router_config_name": "r" } }"#
        func listener(_ second: String) -> String {
            config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"stream_filters\": [{\"type\": \"ip_access\", \"config\": {\"default_action\": \"deny\"}}],")
                .replacingOccurrences(of: #"[{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r" } }] }]"#,
                                      with: #"[{ "filter_chain_match": {"server_names": ["a.example"]}, "filters": [\#(proxy)] }, { "filters": [\#(second)] }]"#)
        }
        let r = load(listener(proxy))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let routing = try #require(plan.listeners[0].serverNameRouting)
        #expect(routing.chains.count == 2)
        for chain in routing.chains {
            let p = try #require(chain.first as? ProxyFilterPlan)
            #expect(p.settings.streamFilters?.beforeRoute.count == 1)
        }
        // A chain that tcp_proxy serves would let connections past the filters.
        #expect(hasError(load(listener(#"{ "type": "tcp_proxy", "config": { "cluster": "c" } }"#)), at: at, saying: "tcp_proxy"))
    }

    // MARK: decisions

    final class Fixture {
        let worker = Worker(id: 0, clusters: [], logger: Logger(level: .fatal, fd: 2))
        let connection: Connection
        let peer: Int32
        init() {
            var fds: [Int32] = [0, 0]
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
            connection = Connection(fd: fds[0], loop: worker.loop, buffers: worker.buffers)
            peer = fds[1]
        }
        deinit { connection.close(); close(peer) }

        func run(_ plan: StreamFilterPlan, _ phase: FilterPhase, _ request: FakeRequest, cluster: Int = -1) -> FilterVerdict {
            StreamFilterChain(plan: plan).run(phase, request, FilterInput(downstream: connection, clusterIndex: cluster))
        }
    }

    func status(_ v: FilterVerdict) -> Int? {
        switch v {
        case .proceed: return nil
        case .answer(let a): return a.status
        case .delay: return -1
        }
    }

    @Test func ipAccessFirstMatchingListDecidesElseTheDefault() throws {
        let f = Fixture()
        let p = try plan("""
            {"type": "ip_access", "config": {"header": "X-Real-IP", "default_action": "deny", "ips": [
              {"action": "deny", "addrs": ["192.168.1.1", "2001:db8::/32"]},
              {"action": "allow", "addrs": ["192.168.1.0/24", "::ffff:0:0/96", "10.0.0.0/8"]}]}}
            """)
        func verdict(_ ip: String) -> Int? { status(f.run(p, .beforeRoute, FakeRequest(path: "/", headers: [("x-real-ip", ip)]))) }
        #expect(verdict("192.168.1.1") == 403)        // the deny list comes first
        #expect(verdict("192.168.1.2") == nil)        // then the allow list
        #expect(verdict("192.168.1.2:5555") == nil)   // ip:port as MOSN's SplitHostPort reads it
        #expect(verdict("10.200.3.4") == nil)
        #expect(verdict("172.16.0.1") == 403)         // default deny
        #expect(verdict("2001:db8::7") == 403)
        #expect(verdict("[2001:db8::7]:80") == 403)
        #expect(verdict("2001:db9::7") == 403)        // no list: default
        #expect(verdict("not an ip") == 403)          // no address: default, as in MOSN
        #expect(verdict("10.0.0.1, 1.2.3.4") == 403)  // a list is no single address
        // No header (or an empty one): the connection's peer, here a unix socket with no IP: default.
        #expect(status(f.run(p, .beforeRoute, FakeRequest(path: "/"))) == 403)
        #expect(status(f.run(p, .beforeRoute, FakeRequest(path: "/", headers: [("x-real-ip", "")]))) == 403)
        let allowAll = try plan("{\"type\": \"ip_access\", \"config\": {\"ips\": [{\"action\": \"deny\", \"addrs\": [\"0.0.0.0/0\"]}]}}")
        #expect(status(f.run(allowAll, .beforeRoute, FakeRequest(path: "/"))) == nil)   // default allow
    }

    @Test func payloadLimitComparesTheAnnouncedLength() throws {
        let f = Fixture()
        let p = try plan("{\"type\": \"payload_limit\", \"config\": {\"max_entity_size\": 100, \"http_status\": 413}}")
        #expect(status(f.run(p, .beforeRoute, FakeRequest(path: "/", contentLength: 100))) == nil)
        #expect(status(f.run(p, .beforeRoute, FakeRequest(path: "/", contentLength: 101))) == 413)
        #expect(status(f.run(p, .beforeRoute, FakeRequest(path: "/", contentLength: nil))) == nil)   // chunked: counted as it streams
        #expect(p.streamedBodyLimit?.exceeded(by: 101) == true)
        #expect(p.streamedBodyLimit?.exceeded(by: 100) == false)
    }

    @Test func faultMatchesClusterAndHeadersThenDelaysAndAborts() throws {
        let f = Fixture()
        let p = try plan("""
            {"type": "fault", "config": {"delay": {"fixed_delay": "250ms", "percentage": 100}, "abort": {"status": 503, "percentage": 100},
              "upstream_cluster": "c", "headers": [{"name": "x-fault", "value": "yes"}]}}
            """)
        #expect(p.beforeRoute.isEmpty && p.afterRoute.count == 1)
        let matching = FakeRequest(path: "/", headers: [("x-fault", "yes")])
        guard case .delay(let ms, let index) = f.run(p, .afterRoute, matching, cluster: 0) else { Issue.record("no delay"); return }
        #expect(ms == 250 && index == 0)
        // After the delay the same filter aborts (delay first, then abort, as MOSN).
        let chain = StreamFilterChain(plan: p)
        #expect(status(chain.run(.afterRoute, matching, FilterInput(downstream: f.connection, clusterIndex: 0), from: 0, delayDone: true)) == 503)
        #expect(status(f.run(p, .afterRoute, FakeRequest(path: "/", headers: [("x-fault", "no")]), cluster: 0)) == nil)
        #expect(status(f.run(p, .afterRoute, matching, cluster: 1)) == nil)   // another cluster
    }

    @Test func faultAbortPercentageHoldsOverManyRequests() throws {
        let f = Fixture()
        let p = try plan("{\"type\": \"fault\", \"config\": {\"abort\": {\"status\": 500, \"percentage\": 30}}}")
        let n = 20_000
        var aborted = 0
        for _ in 0..<n where status(f.run(p, .afterRoute, FakeRequest(path: "/"), cluster: 0)) == 500 { aborted += 1 }
        // Binomial(20000, 0.3): sd ≈ 65; ±400 is more than 6 sd.
        #expect(abs(aborted - 6000) < 400, "\(aborted)")
    }

    @Test func headerAddressesParseWithoutAllocatingText() {
        func parse(_ s: String) -> IPAddressBits? { Array(s.utf8).withUnsafeBufferPointer { IPAddressBits.parse($0.baseAddress!, $0.count) } }
        #expect(parse(" 10.1.2.3 ") != nil)
        #expect(parse("10.1.2.3:80") != nil)
        #expect(parse("[::1]:80") != nil)
        #expect(parse("[::1]") != nil)
        #expect(parse("::1") != nil)
        #expect(parse("10.1.2.3:") == nil)
        #expect(parse("10.1.2") == nil)
        #expect(parse("[::1]x") == nil)
        #expect(parse("host.example") == nil)
        let ranges = AddressRangeSet([AddressRange(address: "10.0.0.0", length: 8)!, AddressRange(address: "fd00::", length: 8)!])
        #expect(ranges.contains(parse("10.9.9.9")!))
        #expect(ranges.contains(parse("::ffff:10.9.9.9")!))   // an IPv4 client on a dual-stack socket
        #expect(!ranges.contains(parse("11.0.0.1")!))
        #expect(ranges.contains(parse("fd12::1")!))
        #expect(!ranges.contains(parse("fe80::1")!))
        #expect(parse("10.1.2.3") == parse("10.1.2.3:9"))
    }
}
