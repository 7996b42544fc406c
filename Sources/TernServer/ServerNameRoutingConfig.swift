import TernCore
import TernTLS

/// `filter_chains[].filter_chain_match.server_names`: Envoy's key, a Tern extension of MOSN's
/// format. Only `server_names` is read; any other match key would make a chain take connections
/// its config excludes, so it is an error until Tern honours it.
extension ConfigCompiler {
    /// The most a connection waits for its whole ClientHello (SNI routing), or a TLS client has to
    /// finish its handshake (a terminating listener): the listener's idle timeout when shorter
    /// (0, no idle timeout, still gets this bound).
    static let clientHelloWaitMS: Int64 = 10_000

    static func handshakeWaitMS(idleTimeoutMS idle: Int64) -> Int64 {
        idle > 0 ? min(idle, clientHelloWaitMS) : clientHelloWaitMS
    }

    func compileServerNameRouting(_ l: JSONObject, chains: [JSONObject], context: FilterContext) -> ServerNameRoutingPlan? {
        let errorsBefore = diagnostics.errors.count
        for key in ["tls_context", "tls_context_set"] where l.enablesTLS(key) || (key == "tls_context_set" && l.isNonEmpty(key)) {
            diagnostics.error(l.sub(key), "this listener picks filter chains by the TLS server name and forwards TLS unterminated; terminating TLS on it as well is not supported (remove \(key) or filter_chain_match)")
        }
        var names: [[String]] = []
        var defaultChain: Int?
        var seen: [String: String] = [:]
        var plans: [[NetworkFilterPlan]] = []
        for (i, chain) in chains.enumerated() {
            chain.checkKeys(known: ["filters", "tls_context", "tls_context_set", "filter_chain_match"], ignored: ["match"])
            for key in ["tls_context", "tls_context_set"] where chain.isNonEmpty(key) {
                diagnostics.error(chain.sub(key), "TLS terminated by a filter chain picked by server name is not supported yet; such a chain forwards TLS unterminated")
            }
            var list: [String] = []
            if let match = chain.object("filter_chain_match") {
                for key in match.dict.keys.sorted() where key.lowercased() != "server_names" {
                    diagnostics.error(match.sub(key), "not supported by Tern (a filter_chain_match may only hold server_names); the chain would take connections this key excludes")
                }
                for (k, name) in (match.strings("server_names") ?? []).enumerated() {
                    let path = "\(match.sub("server_names"))[\(k)]"
                    if let problem = ServerNameTable.problem(with: name) { diagnostics.error(path, problem); continue }
                    if let first = seen[name.lowercased()] { diagnostics.error(path, "\"\(name)\" is already listed at \(first)"); continue }
                    seen[name.lowercased()] = path
                    list.append(name)
                }
            }
            names.append(list)
            if list.isEmpty && !(chain.object("filter_chain_match")?.isNonEmpty("server_names") ?? false) {
                if let d = defaultChain {
                    diagnostics.error(chain.path, "a second filter chain without server_names: only one chain can be the default (\(chains[d].path) is)")
                }
                defaultChain = defaultChain ?? i
            }
            plans.append(compileFilters(chain, context: context))
        }
        guard diagnostics.errors.count == errorsBefore else { return nil }
        return ServerNameRoutingPlan(table: ServerNameTable(names: names, defaultChain: defaultChain), chains: plans,
                                     waitMS: Self.handshakeWaitMS(idleTimeoutMS: context.idleTimeoutMS))
    }
}
