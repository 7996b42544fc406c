import Testing
@testable import TernServer
import TernCore
import TernTLS

/// `filter_chains[].filter_chain_match.server_names` (a Tern extension with Envoy's key): what is
/// read, the table it makes, and the errors for what Tern would otherwise ignore.
struct ServerNameRoutingConfigTests {
    func config(chains: String, listener: String = "") -> String {
        """
        { "servers": [{ "default_log_level": "WARN", "listeners": [{ "name": "l", "address": "127.0.0.1:0",\(listener)
            "filter_chains": [\(chains)] }] }],
          "cluster_manager": { "clusters": [{ "name": "a", "hosts": [{ "address": "127.0.0.1:9001" }] },
                                            { "name": "b", "hosts": [{ "address": "127.0.0.1:9002" }] }] } }
        """
    }

    func chain(_ match: String?, _ cluster: String = "a", extra: String = "") -> String {
        "{ \(match.map { "\"filter_chain_match\": \($0), " } ?? "")\(extra)\"filters\": [{ \"type\": \"tcp_proxy\", \"config\": { \"cluster\": \"\(cluster)\" } }] }"
    }

    func errors(_ r: ConfigResult, at path: String) -> [String] { r.diagnostics.errors.filter { $0.hasPrefix(path + ":") } }

    func chainFor(_ table: ServerNameTable, _ name: String) -> Int? {
        var bytes = Array(name.utf8)
        return bytes.withUnsafeMutableBufferPointer { table.chain(forServerName: UnsafePointer($0.baseAddress), count: $0.count) }
    }

    let chains = "$.servers[0].listeners[0].filter_chains"

    @Test func chainsWithServerNamesAreReadAndTheUnmatchedOneIsTheDefault() throws {
        let r = load(config(chains: [chain(#"{"server_names": ["a.example", "*.example.com"]}"#),
                                     chain(#"{"server_names": ["*.deep.example.com"]}"#, "b"), chain(nil, "b")].joined(separator: ", ")))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        let routing = try #require(plan.listeners[0].serverNameRouting)
        #expect(routing.chains.count == 3 && plan.listeners[0].filters.isEmpty && plan.listeners[0].tls == nil)
        #expect(!r.diagnostics.warnings.contains { $0.contains("only the first filter chain") })
        // The default listener idle timeout (90 s) is capped at 10 s for the ClientHello.
        #expect(routing.waitMS == 10_000)
        let t = routing.table
        #expect(chainFor(t, "a.example") == 0 && chainFor(t, "A.EXAMPLE") == 0)
        #expect(chainFor(t, "x.example.com") == 0 && chainFor(t, "x.y.example.com") == 0)
        #expect(chainFor(t, "x.deep.example.com") == 1)   // the longest suffix wins
        #expect(chainFor(t, "deep.example.com") == 0)     // "*.deep…" needs a label before it
        #expect(chainFor(t, "example.com") == 2 && chainFor(t, "b.example") == 2)
        #expect(t.chain(forServerName: nil, count: 0) == 2)
    }

    @Test func withoutADefaultChainAnUnknownNameHasNone() throws {
        let r = load(config(chains: chain(#"{"server_names": ["a.example"]}"#), listener: #" "connection_idle_timeout": "2s","#))
        let routing = try #require(r.plan?.listeners[0].serverNameRouting, "\(r.diagnostics.errors)")
        #expect(chainFor(routing.table, "b.example") == nil)
        #expect(routing.waitMS == 2_000)
    }

    @Test func severalChainsWithoutAnyMatchStillUseTheFirstAsInMOSN() throws {
        let r = load(config(chains: [chain(nil), chain("{}", "b")].joined(separator: ", ")))
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        #expect(plan.listeners[0].serverNameRouting == nil && plan.listeners[0].filters.count == 1)
        #expect(r.diagnostics.warnings.contains { $0.hasPrefix(chains + ": only the first filter chain is used") })
    }

    @Test func otherMatchKeysAreErrorsNamingTheirPath() {
        for key in ["destination_port", "transport_protocol", "application_protocols", "source_prefix_ranges", "prefix_ranges"] {
            let r = load(config(chains: [chain(#"{"server_names": ["a.example"], "\#(key)": 1}"#), chain(nil, "b")].joined(separator: ", ")))
            #expect(errors(r, at: "\(chains)[0].filter_chain_match.\(key)").count == 1, "\(key): \(r.diagnostics.errors)")
            #expect(r.plan == nil)
        }
        // Alone, without server_names, too: the chain is not silently the default.
        let alone = load(config(chains: chain(#"{"destination_port": 443}"#)))
        #expect(errors(alone, at: "\(chains)[0].filter_chain_match.destination_port").count == 1, "\(alone.diagnostics.errors)")
    }

    @Test func badDuplicateAndSecondDefaultChainsAreErrors() {
        let bad = load(config(chains: chain(#"{"server_names": ["", "a.*.com", "*", "*.", "x y"]}"#)))
        for i in 0..<5 { #expect(errors(bad, at: "\(chains)[0].filter_chain_match.server_names[\(i)]").count == 1, "\(i): \(bad.diagnostics.errors)") }
        let duplicate = load(config(chains: [chain(#"{"server_names": ["a.example"]}"#), chain(#"{"server_names": ["A.example"]}"#, "b")].joined(separator: ", ")))
        #expect(errors(duplicate, at: "\(chains)[1].filter_chain_match.server_names[0]").first?.contains("already listed at \(chains)[0].filter_chain_match.server_names[0]") == true,
                "\(duplicate.diagnostics.errors)")
        let twoDefaults = load(config(chains: [chain(#"{"server_names": ["a.example"]}"#), chain(nil), chain(#"{"server_names": []}"#, "b")].joined(separator: ", ")))
        #expect(errors(twoDefaults, at: "\(chains)[2]").first?.contains("only one chain can be the default") == true, "\(twoDefaults.diagnostics.errors)")
    }

    @Test func terminatingTLSOnARoutingListenerOrChainIsAnError() {
        let tls = #"{"status": true, "cert_chain": "/nonexistent.crt", "private_key": "/nonexistent.key"}"#
        let onChain = load(config(chains: chain(#"{"server_names": ["a.example"]}"#, extra: "\"tls_context\": \(tls), ")))
        #expect(errors(onChain, at: "\(chains)[0].tls_context").first?.contains("not supported yet") == true, "\(onChain.diagnostics.errors)")
        let onListener = load(config(chains: chain(#"{"server_names": ["a.example"]}"#), listener: " \"tls_context\": \(tls),"))
        #expect(errors(onListener, at: "$.servers[0].listeners[0].tls_context").first?.contains("forwards TLS unterminated") == true, "\(onListener.diagnostics.errors)")
        let set = load(config(chains: chain(#"{"server_names": ["a.example"]}"#), listener: " \"tls_context_set\": [\(tls)],"))
        #expect(errors(set, at: "$.servers[0].listeners[0].tls_context_set").count == 1, "\(set.diagnostics.errors)")
    }

    @Test func aClientHelloIsReadInPlace() throws {
        // Record header, ClientHello header, version, random, empty session id, one suite, one
        // compression method, then extensions: an unknown one and server_name "x.test".
        let name = Array("x.test".utf8)
        let sni: [UInt8] = [0, 0, 0, UInt8(name.count + 5), 0, UInt8(name.count + 3), 0, 0, UInt8(name.count)] + name
        let other: [UInt8] = [0xFF, 0x01, 0, 1, 0]
        let body: [UInt8] = [3, 3] + [UInt8](repeating: 1, count: 32) + [0, 0, 2, 0x13, 0x01, 1, 0] + [0, UInt8(sni.count + other.count)] + other + sni
        let hello: [UInt8] = [1, 0, 0, UInt8(body.count)] + body
        let record: [UInt8] = [0x16, 3, 1, 0, UInt8(hello.count)] + hello
        func scan(_ b: [UInt8]) -> ClientHelloScan { b.withUnsafeBufferPointer { scanClientHello($0.baseAddress!, count: $0.count) } }
        guard case .serverName(let range) = scan(record) else { Issue.record("\(scan(record))"); return }
        #expect(Array(record[range]) == name)
        for cut in 1..<record.count { #expect(scan(Array(record[0..<cut])) == .needMore, "cut at \(cut)") }
        #expect(scan([0x47]) == .notTLS && scan([0x16, 2, 0, 0, 4]) == .notTLS)
        #expect(scan([0x16, 3, 1, 0x40, 0x01]) == .malformed)   // longer than a record may be
        var serverHello = record; serverHello[5] = 2
        #expect(scan(serverHello) == .malformed)
        var noSNI = record; noSNI[record.count - sni.count] = 0x7F   // the server_name type renamed
        #expect(scan(noSNI) == .noServerName)
    }
}
