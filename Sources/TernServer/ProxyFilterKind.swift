import TernCore

struct ProxyFilterPlan: NetworkFilterPlan {
    let settings: ProxySettings
    let protocols: [StreamProtocol]
    func makeFilter(worker: Worker) -> NetworkFilter {
        ProxyFilter(worker: worker, settings: settings, protocols: protocols)
    }
}

/// The `proxy` network filter's config: protocols, router configuration, Tern's limits.
struct ProxyFilterKind: NetworkFilterKind {
    func compile(_ c: JSONObject, context: FilterContext, diagnostics: Diagnostics) -> NetworkFilterPlan? {
        c.checkKeys(known: Set(["downstream_protocol", "upstream_protocol", "router_config_name", "extend_config",
                                "max_request_head_bytes", "max_header_count", "max_request_body_bytes", "route_timeout",
                                "request_header_timeout", "fallback_for_unknown_protocol"])
                        .union(ProtocolRegistry.configKeys),
                    ignored: ["router_handler_name", "validate_clusters", "concurrency_num", "name"])
        let downstream = protocolList(c, key: "downstream_protocol", diagnostics: diagnostics)
        // The upstream speaks what the downstream speaks (MOSN's behaviour for Auto and X too);
        // an upstream protocol Tern lacks is still an error.
        if c.has("upstream_protocol") && c.string("upstream_protocol") != "Auto" {
            _ = protocolList(c, key: "upstream_protocol", diagnostics: diagnostics)
        }
        guard let routerName = c.requiredString("router_config_name") else { return nil }
        guard let table = context.tables[routerName] else {
            diagnostics.error(c.sub("router_config_name"), "no router configuration named \"\(routerName)\"")
            return nil
        }
        var limits = ProtocolLimits()
        if let v = c.int("max_request_head_bytes", min: 1024, max: 16 << 20) { limits.maxHeadBytes = v }
        if let v = c.int("max_header_count", min: 1, max: 10_000) { limits.maxHeaderCount = v }
        if let v = c.int("max_request_body_bytes", min: 0) { limits.maxBodyBytes = Int64(v) }
        guard let protocols = downstream else { return nil }
        let settings = ProxySettings(listenerName: context.listenerName, routes: table, limits: limits,
                                     idleTimeoutMS: context.idleTimeoutMS,
                                     defaultRouteTimeoutMS: c.duration("route_timeout") ?? ConfigCompiler.defaultRouteTimeoutMS,
                                     headerTimeoutMS: c.duration("request_header_timeout") ?? 60_000,
                                     fallbackToNextFilter: c.bool("fallback_for_unknown_protocol") ?? false,
                                     streamFilters: context.streamFilters)
        var withLogs = settings
        withLogs.accessLogs = context.accessLogs
        return ProxyFilterPlan(settings: withLogs, protocols: protocols)
    }

    /// "Auto" is every known protocol in sniffing order; MOSN's `"X"` takes its name from
    /// `extend_config.sub_protocol`.
    func protocolList(_ c: JSONObject, key: String, diagnostics: Diagnostics) -> [StreamProtocol]? {
        var name = c.string(key) ?? "Http1"
        if name == "X" {
            guard let sub = c.object("extend_config")?.string("sub_protocol") else {
                diagnostics.error(c.sub("extend_config.sub_protocol"), "required when \(key) is \"X\"")
                return nil
            }
            name = sub
        }
        if name == "Auto" { return ProtocolRegistry.sniffOrder.compactMap { ProtocolRegistry.protocols[$0]?(c) } }
        if let p = ProtocolRegistry.protocols[name] { return [p(c)] }
        let supported = (ProtocolRegistry.protocols.keys.sorted() + ["Auto"]).joined(separator: ", ")
        if ProtocolRegistry.later.contains(name) {
            diagnostics.error(c.sub(key), "protocol \"\(name)\" is not supported yet (supported: \(supported))")
        } else {
            diagnostics.error(c.sub(key), "unknown protocol \"\(name)\" (supported: \(supported))")
        }
        return nil
    }
}
