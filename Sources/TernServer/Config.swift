import Glibc
import TernCore

/// A listener ready to be opened on every worker.
public struct ListenerPlan: Sendable {
    public let name: String
    public let address: SocketAddress
    public let bindPort: Bool
    public let filters: [NetworkFilterPlan]
}

/// Everything the config says, checked and compiled; shared read-only by the workers.
public struct ServerPlan: Sendable {
    public var logPath: String?
    public var logLevel: LogLevel = .info
    public var workers: Int?
    public var drainTimeoutMS: Int64 = 30_000
    public var listeners: [ListenerPlan] = []
    public var clusters: [ClusterConfig] = []
}

public struct ConfigResult {
    public let plan: ServerPlan?
    public let diagnostics: Diagnostics
}

/// Reads a MOSN JSON config (file contents) into a `ServerPlan`.
public enum ConfigLoader {
    public static func load(path: String) -> ConfigResult {
        guard let text = readFile(path) else {
            let diagnostics = Diagnostics()
            diagnostics.error("$", "cannot read config file \(path): \(String(cString: strerror(errno)))")
            return ConfigResult(plan: nil, diagnostics: diagnostics)
        }
        return load(text: text)
    }

    public static func load(text: String) -> ConfigResult {
        let diagnostics = Diagnostics()
        let json: JSONValue
        do {
            json = try JSONParser.parse(text)
        } catch {
            diagnostics.error("$", "not valid JSON: \(error)")
            return ConfigResult(plan: nil, diagnostics: diagnostics)
        }
        guard let root = JSONObject(json, path: "$", diagnostics: diagnostics) else {
            return ConfigResult(plan: nil, diagnostics: diagnostics)
        }
        let plan = ConfigCompiler(diagnostics: diagnostics).compile(root)
        return ConfigResult(plan: diagnostics.errors.isEmpty ? plan : nil, diagnostics: diagnostics)
    }
}

/// Builds the plan; keeps the cluster name index the routes resolve against.
struct ConfigCompiler {
    let diagnostics: Diagnostics
    static let defaultRouteTimeoutMS: Int64 = 60_000

    func compile(_ root: JSONObject) -> ServerPlan {
        var plan = ServerPlan()
        root.checkKeys(known: ["servers", "cluster_manager"],
                       ignored: ["admin", "close_graceful", "disable_upgrade", "inherit_old_mosnconfig", "pid", "uds_dir",
                                 "tracing", "metrics", "pprof", "dynamic_resources", "static_resources", "node", "plugin",
                                 "extends", "third_part_codec", "wasm_global_plugins", "debug", "raw_dynamic_resources",
                                 "raw_static_resources", "cluster_manager_tls"])
        // Clusters first: routes refer to them by name.
        var clusterIndex: [String: Int] = [:]
        if let cm = root.object("cluster_manager") {
            cm.checkKeys(known: ["clusters"], ignored: ["clusters_configs", "tls_context", "auto_discovery", "registry_use_health_check"])
            for c in cm.objects("clusters") {
                guard let cluster = compileCluster(c) else { continue }
                if clusterIndex[cluster.name] != nil {
                    diagnostics.error(c.sub("name"), "duplicate cluster name \"\(cluster.name)\"")
                    continue
                }
                clusterIndex[cluster.name] = plan.clusters.count
                plan.clusters.append(cluster)
            }
        }
        let servers = root.objects("servers")
        if servers.isEmpty && !root.has("servers") { diagnostics.error("$.servers", "required") }
        for (i, server) in servers.enumerated() {
            server.checkKeys(known: ["default_log_path", "default_log_level", "listeners", "routers", "mosn_server_name",
                                     "graceful_timeout", "processor"],
                             ignored: ["global_log_roller", "use_netpoll_mode", "optimize_local_write", "server_name"])
            if i == 0 {
                plan.logPath = server.string("default_log_path")
                if let level = server.string("default_log_level") {
                    if let l = LogLevel.parse(level) { plan.logLevel = l }
                    else { diagnostics.error(server.sub("default_log_level"), "unknown level \"\(level)\" (FATAL, ERROR, WARN, INFO, DEBUG, TRACE)") }
                }
                if let t = server.duration("graceful_timeout") { plan.drainTimeoutMS = t }
                if let p = server.int("processor", min: 0, max: 1024), p > 0 { plan.workers = p }
            }
            var tables: [String: RouteTable] = [:]
            // Older MOSN configs carry router configurations as `connection_manager` network
            // filters inside a listener's chain; they are read as if listed under `routers`.
            let listeners = server.objects("listeners")
            let legacyRouters = listeners.flatMap { $0.objects("filter_chains") }.flatMap { $0.objects("filters") }
                .filter { $0.string("type") == "connection_manager" }.compactMap { $0.object("config") }
            for r in server.objects("routers") + legacyRouters {
                if let table = RouteCompiler(diagnostics: diagnostics, clusterIndex: clusterIndex).compile(r) {
                    if tables[table.name] != nil { diagnostics.error(r.sub("router_config_name"), "duplicate router_config_name \"\(table.name)\"") }
                    tables[table.name] = table
                }
            }
            for l in listeners {
                if let listener = compileListener(l, tables: tables) { plan.listeners.append(listener) }
            }
        }
        var seen: [String: String] = [:]
        for l in plan.listeners where l.bindPort {
            if let other = seen[l.address.description] {
                diagnostics.error("$.servers", "listeners \(other) and \(l.name) both bind \(l.address)")
            }
            seen[l.address.description] = l.name
        }
        return plan
    }

    func compileListener(_ l: JSONObject, tables: [String: RouteTable]) -> ListenerPlan? {
        l.checkKeys(known: ["name", "address", "bind_port", "filter_chains", "type", "network", "connection_idle_timeout"],
                    ignored: ["use_original_dst", "listener_filters", "access_logs", "stream_filters", "inspector",
                              "per_connection_buffer_limit_bytes", "log_path", "log_level", "handoff_restoreddestination_connections",
                              "option", "transparent", "default_read_buffer_size"])
        let name = l.string("name") ?? l.path
        guard let addressText = l.requiredString("address") else { return nil }
        guard let address = SocketAddress.parse(addressText) else {
            diagnostics.error(l.sub("address"), "invalid address \"\(addressText)\" (expected ip:port)")
            return nil
        }
        if let network = l.string("network"), network.lowercased() != "tcp" {
            diagnostics.error(l.sub("network"), "only tcp listeners are supported, got \"\(network)\"")
        }
        let bindPort = l.bool("bind_port") ?? true
        if !bindPort { diagnostics.warn(l.sub("bind_port"), "false: this listener only takes connections handed over by original_dst, which Tern does not do yet; it is not opened") }
        let idleTimeout = l.duration("connection_idle_timeout") ?? 90_000
        var filters: [NetworkFilterPlan] = []
        let chains = l.objects("filter_chains")
        if chains.isEmpty { diagnostics.error(l.sub("filter_chains"), "at least one filter chain is required") }
        if chains.count > 1 { diagnostics.warn(l.sub("filter_chains"), "only the first filter chain is used (chain matching comes with TLS)") }
        if let chain = chains.first {
            chain.checkKeys(known: ["filters"], ignored: ["match", "tls_context", "tls_context_set"])
            let context = FilterContext(listenerName: name, idleTimeoutMS: idleTimeout, tables: tables)
            for f in chain.objects("filters") {
                f.checkKeys(known: ["type", "config"])
                guard let type = f.requiredString("type") else { continue }
                if type == "connection_manager" { continue }   // read with the routers above
                guard let kind = NetworkFilterRegistry.kinds[type] else {
                    let known = NetworkFilterRegistry.kinds.keys.sorted().joined(separator: ", ")
                    diagnostics.error(f.sub("type"), "network filter \"\(type)\" is not supported (supported: \(known))")
                    continue
                }
                let config = f.object("config") ?? JSONObject(.object([:]), path: f.sub("config"), diagnostics: diagnostics)!
                if let plan = kind.compile(config, context: context, diagnostics: diagnostics) { filters.append(plan) }
            }
            if filters.isEmpty && diagnostics.errors.isEmpty { diagnostics.error(chain.sub("filters"), "no network filter") }
        }
        return ListenerPlan(name: name, address: address, bindPort: bindPort, filters: filters)
    }

    func compileCluster(_ c: JSONObject) -> ClusterConfig? {
        c.checkKeys(known: ["name", "type", "lb_type", "hosts", "connect_timeout", "idle_timeout", "max_request_per_conn",
                            "conn_buffer_limit_bytes", "max_idle_conns_per_host"],
                    ignored: ["circuit_breakers", "health_check", "lb_subset_config", "spec", "tls_context", "original_dst_lb_config",
                              "dns_refresh_rate", "respect_dns_ttl", "dns_lookup_family", "dns_resolvers", "cluster_manager_tls",
                              "lb_config", "connection_pool_mode", "sub_type", "cluster_type", "alt_stat_name", "lbconfig", "cluster_pool_enable"])
        guard let name = c.requiredString("name") else { return nil }
        let type = c.string("type") ?? "SIMPLE"
        if !["SIMPLE", "STATIC"].contains(type) {
            diagnostics.error(c.sub("type"), "cluster type \"\(type)\" is not supported yet (SIMPLE, STATIC)")
        }
        let lbType = c.string("lb_type") ?? "LB_RANDOM"
        if !LoadBalancerRegistry.isKnown(lbType) {
            let known = LoadBalancerRegistry.kinds.keys.sorted().joined(separator: ", ")
            diagnostics.error(c.sub("lb_type"), "load balancer \"\(lbType)\" is not supported yet (\(known))")
        }
        var hosts: [HostConfig] = []
        for h in c.objects("hosts") {
            h.checkKeys(known: ["address", "hostname", "weight", "metadata"], ignored: ["tls_disable"])
            guard let text = h.requiredString("address") else { continue }
            guard let address = SocketAddress.parse(text) else {
                diagnostics.error(h.sub("address"), "invalid address \"\(text)\" (expected ip:port)")
                continue
            }
            var metadata: [String: String] = [:]
            if let m = h.object("metadata"), let fm = m.object("filter_metadata"), let lb = fm.stringMap("mosn.lb") { metadata = lb }
            hosts.append(HostConfig(address: address, hostname: h.string("hostname") ?? "",
                                    weight: h.int("weight", min: 0, max: 128) ?? 1, metadata: metadata))
        }
        return ClusterConfig(name: name, lbType: lbType, hosts: hosts,
                             connectTimeoutMS: c.duration("connect_timeout") ?? 3_000,
                             idleTimeoutMS: c.duration("idle_timeout") ?? 90_000,
                             maxRequestsPerConnection: c.int("max_request_per_conn", min: 0, max: Int(UInt32.max)).map { $0 == 0 ? 1024 : $0 } ?? 1024,
                             connectionBufferLimit: c.int("conn_buffer_limit_bytes", min: 0, max: Int(UInt32.max)) ?? 16384,
                             maxIdlePerHost: c.int("max_idle_conns_per_host", min: 0, max: 65536) ?? 1024)
    }
}

/// What a network filter's compiler gets besides its own config.
struct FilterContext {
    let listenerName: String
    let idleTimeoutMS: Int64
    let tables: [String: RouteTable]
}

/// Reads a whole file as UTF-8 text (config load only).
func readFile(_ path: String) -> String? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if n < chunk.count { break }
    }
    if ferror(f) != 0 { return nil }
    return String(decoding: bytes, as: UTF8.self)
}
