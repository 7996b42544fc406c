import TernCore

/// MOSN's `admin` and `metrics.sinks[prometheus]`: where the admin API and the Prometheus scrape
/// are served (both by the admin thread, never by a worker).
public struct AdminPlan: Sendable {
    /// `admin.address.socket_address`; nil: no admin API.
    public var address: SocketAddress?
    /// `metrics.sinks[{type: prometheus}]`; nil: no scrape endpoint.
    public var prometheus: PrometheusPlan?
    /// The config as loaded, for `config_dump`.
    public var loadedConfig: JSONValue = .null
    public var isEnabled: Bool { address != nil || prometheus != nil }
}

public struct PrometheusPlan: Sendable {
    /// Listens on 0.0.0.0:`port`, as MOSN's sink does.
    public let address: SocketAddress
    public let endpoint: String
}

extension ConfigCompiler {
    /// Reads `admin` and `metrics` from the config root.
    func compileAdmin(_ root: JSONObject, json: JSONValue) -> AdminPlan {
        var plan = AdminPlan(loadedConfig: json)
        if let admin = root.object("admin") {
            admin.checkKeys(known: ["address"])
            if let address = admin.object("address") {
                address.checkKeys(known: ["socket_address"], ignored: ["pipe", "envoy_internal_address"])
                if let socket = address.object("socket_address") {
                    socket.checkKeys(known: ["address", "port_value"], ignored: ["protocol", "ipv4_compat", "resolver_name", "named_port"])
                    plan.address = socketAddress(socket)
                } else {
                    diagnostics.error(address.sub("socket_address"), "required: the admin API's address and port_value")
                }
            } else {
                diagnostics.error(admin.sub("address"), "required: {\"socket_address\": {\"address\", \"port_value\"}}")
            }
        }
        if let metrics = root.object("metrics") {
            metrics.checkKeys(known: ["sinks"], ignored: ["stats_matcher", "shm_zone", "shm_size", "flush_mosn", "lazy_flush", "sample", "ewma"])
            for sink in metrics.objects("sinks") {
                sink.checkKeys(known: ["type", "config"])
                guard let type = sink.requiredString("type") else { continue }
                guard type == "prometheus" else {
                    diagnostics.warn(sink.sub("type"), "sink \"\(type)\" is not supported by Tern yet (only prometheus); ignored")
                    continue
                }
                if plan.prometheus != nil { diagnostics.error(sink.path, "a second prometheus sink; Tern serves one"); continue }
                plan.prometheus = prometheusSink(sink)
            }
        }
        return plan
    }

    private func socketAddress(_ socket: JSONObject) -> SocketAddress? {
        let host = socket.string("address") ?? "0.0.0.0"
        guard let port = socket.int("port_value", min: 0, max: 65535) else {
            if !socket.has("port_value") { diagnostics.error(socket.sub("port_value"), "required: the admin API's port") }
            return nil
        }
        let text = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        guard let address = SocketAddress.parse(text), !address.isUnix else {
            diagnostics.error(socket.sub("address"), "\"\(host)\" is not an IP address")
            return nil
        }
        return address
    }

    private func prometheusSink(_ sink: JSONObject) -> PrometheusPlan? {
        guard let config = sink.object("config") else {
            diagnostics.error(sink.sub("config"), "required: {\"port\": …, \"endpoint\": \"/metrics\"}")
            return nil
        }
        config.checkKeys(known: ["port", "endpoint", "export_url"],
                         ignored: ["disable_collect_process", "disable_collect_go", "percentiles"])
        if let url = config.string("export_url"), !url.isEmpty {
            diagnostics.error(config.sub("export_url"), "push gateway mode is not supported (nor is it by MOSN); scrape `port` instead")
            return nil
        }
        // MOSN refuses a missing or zero port too.
        guard let port = config.int("port", min: 1, max: 65535) else {
            if !config.has("port") { diagnostics.error(config.sub("port"), "required: the port the prometheus sink listens on") }
            return nil
        }
        let endpoint = config.string("endpoint") ?? "/metrics"
        if endpoint.isEmpty || !endpoint.hasPrefix("/") || endpoint.contains("?") || endpoint.contains(" ") {
            diagnostics.error(config.sub("endpoint"), "\"\(endpoint)\" is not a path (it must start with /)")
            return nil
        }
        return PrometheusPlan(address: SocketAddress.parse("0.0.0.0:\(port)")!, endpoint: endpoint)
    }
}
