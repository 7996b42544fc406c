import Glibc
import TernCore
import TernTLS

/// A listener ready to be opened on every worker.
public struct ListenerPlan: Sendable {
    public let name: String
    public let address: SocketAddress
    public let bindPort: Bool
    public let filters: [NetworkFilterPlan]
    /// Set for a capturing listener (`use_original_dst`, or an `original_dst` listener filter).
    public var capture: CapturePlan? = nil
    /// Downstream TLS (`tls_context` with `status: true`, or `tls_context_set`); nil for plain text.
    public var tls: TLSServerContextSet? = nil
    /// `inspector: true` on a TLS listener: TLS and plain text on one port, told apart by the
    /// first byte, waited for up to this long (the listener's idle timeout; 0: unbounded). nil: off.
    public var inspectorWaitMS: Int64? = nil
    /// How long a TLS client has, from when TLS takes the connection, to finish its handshake.
    public var tlsHandshakeTimeoutMS: Int64 = 0
    /// Per context of `tls`, the files a certificate reload (SIGHUP, or a file changed) reads again.
    public var tlsFiles: [TLSContextFiles] = []
    /// Filter chains picked by the TLS server name (`filter_chain_match.server_names`); `filters`
    /// is then empty.
    public var serverNameRouting: ServerNameRoutingPlan? = nil
    /// The listener's config without what a reload can change in place (its `stream_filters` and
    /// its proxy filters' settings other than the protocols): two plans whose listeners have the
    /// same shapes differ only in what workers can swap without closing anything.
    public var shape = ""
}

/// A listener that forwards TLS unterminated to the chain its ClientHello's server name picks.
public struct ServerNameRoutingPlan: Sendable {
    public let table: ServerNameTable
    public let chains: [[NetworkFilterPlan]]
    /// How long a connection may take to send its whole ClientHello.
    public let waitMS: Int64
}

/// What a capturing listener does with each accepted connection: find its original destination
/// and hand it to the listener that owns that address (docs/behaviour.md, transparent interception).
public struct CapturePlan: Sendable {
    public let mode: OriginalDestinationMode
    /// MOSN's `fallback_to_local`: the per-port fallback listener is the loopback one, not 0.0.0.0.
    public let fallbackToLocal: Bool
}

/// Everything the config says, checked and compiled; shared read-only by the workers.
public struct ServerPlan: Sendable {
    public var logPath: String?
    public var logLevel: LogLevel = .info
    public var workers: Int?
    public var drainTimeoutMS: Int64 = 30_000
    public var listeners: [ListenerPlan] = []
    public var clusters: [ClusterConfig] = []
    /// The admin API and the Prometheus sink (Sources/TernServer/Admin).
    public var admin = AdminPlan()
    /// MOSN's `uds_dir`: where hot upgrades meet (nil: the default directory for the config file).
    public var upgradeDirectory: String?
    /// MOSN's `disable_upgrade`: neither take over from a running Tern nor offer to be taken over.
    public var upgradeDisabled = false
    /// MOSN's `pid`: where the process writes its id (`tern reload` reads it); nil: `<uds_dir>/tern.pid`.
    public var pidFile: String?
    /// Every listener's access-log files (`AccessLogSpec.file` indexes this).
    public var accessLogPaths: [String] = []
    /// The STRICT_DNS clusters' names to resolve (their hosts in `clusters` are the last answers).
    public var strictDNS: [StrictDNSSpec] = []
    /// The config text this plan was compiled from: new DNS answers compile it again.
    public var sourceText = ""
}

public struct ConfigResult {
    public let plan: ServerPlan?
    public let diagnostics: Diagnostics
}

/// Reads a MOSN JSON config (file contents) into a `ServerPlan`.
public enum ConfigLoader {
    public static func load(path: String, previous: ServerPlan? = nil) -> ConfigResult {
        guard let text = readFile(path) else {
            let diagnostics = Diagnostics()
            diagnostics.error("$", "cannot read config file \(path): \(String(cString: strerror(errno)))")
            return ConfigResult(plan: nil, diagnostics: diagnostics)
        }
        return load(text: text, previous: previous)
    }

    /// `previous`: the plan running now (a reload): clusters keep their positions, new ones come
    /// after, and removed ones stay as unroutable placeholders, so every worker's cluster indices
    /// (routes, pools) stay valid while it swaps.
    public static func load(text: String, previous: ServerPlan? = nil, resolvedHosts: [String: [JSONValue]] = [:]) -> ConfigResult {
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
        var plan = ConfigCompiler(diagnostics: diagnostics, previousClusters: previous?.clusters ?? [], resolvedHosts: resolvedHosts).compile(root)
        plan.sourceText = text
        return ConfigResult(plan: diagnostics.errors.isEmpty ? plan : nil, diagnostics: diagnostics)
    }
}

/// Builds the plan; keeps the cluster name index the routes resolve against.
struct ConfigCompiler {
    let diagnostics: Diagnostics
    var previousClusters: [ClusterConfig] = []
    /// STRICT_DNS clusters' resolved host entries by cluster name (the resolver's latest answers).
    var resolvedHosts: [String: [JSONValue]] = [:]
    /// The STRICT_DNS clusters met while compiling, for the plan.
    let strictDNS = StrictDNSCollector()
    /// Every listener's access-log files, numbered as they are first named.
    let accessLogFiles = AccessLogFiles()
    static let defaultRouteTimeoutMS: Int64 = 60_000

    func compile(_ root: JSONObject) -> ServerPlan {
        var plan = ServerPlan()
        root.checkKeys(known: ["servers", "cluster_manager", "admin", "metrics", "uds_dir", "disable_upgrade", "pid"],
                       ignored: ["close_graceful", "inherit_old_mosnconfig",
                                 "tracing", "pprof", "dynamic_resources", "static_resources", "node", "plugin",
                                 "extends", "third_part_codec", "wasm_global_plugins", "debug", "raw_dynamic_resources",
                                 "raw_static_resources", "cluster_manager_tls"])
        if let dir = root.string("uds_dir"), !dir.isEmpty {
            if !dir.hasPrefix("/") { diagnostics.error(root.sub("uds_dir"), "expected an absolute directory path") }
            else if (try? SocketAddress.unix(path: dir + "/" + HotUpgrade.socketName)) == nil {
                diagnostics.error(root.sub("uds_dir"), "too long: \(dir)/\(HotUpgrade.socketName) does not fit in a unix socket address")
            } else { plan.upgradeDirectory = dir }
        }
        plan.upgradeDisabled = root.bool("disable_upgrade") ?? false
        if let pid = root.string("pid"), !pid.isEmpty { plan.pidFile = pid }
        // Clusters first: routes refer to them by name.
        var clusterIndex: [String: Int] = [:]
        if let cm = root.object("cluster_manager") {
            cm.checkKeys(known: ["clusters", "tls_context"], ignored: ["clusters_configs", "auto_discovery", "registry_use_health_check"])
            // Compiled once, shared by the clusters with cluster_manager_tls: true.
            let managerEnabled = cm.enablesTLS("tls_context")
            let managerTLS = managerEnabled ? cm.object("tls_context").flatMap { compileClientTLS($0, owner: "cluster_manager") } : nil
            for c in cm.objects("clusters") {
                guard let cluster = compileCluster(c, managerTLS: managerTLS, managerTLSEnabled: managerEnabled) else { continue }
                if clusterIndex[cluster.name] != nil {
                    diagnostics.error(c.sub("name"), "duplicate cluster name \"\(cluster.name)\"")
                    continue
                }
                clusterIndex[cluster.name] = plan.clusters.count
                plan.clusters.append(cluster)
            }
        }
        if !previousClusters.isEmpty { keepClusterPositions(&plan, &clusterIndex) }
        let servers = root.objects("servers")
        if servers.isEmpty && !root.has("servers") {
            if root.has("dynamic_resources") || root.has("static_resources") {
                diagnostics.error("$.servers", "required: Tern reads static configs; xDS (dynamic_resources/static_resources) is not supported yet")
            } else {
                diagnostics.error("$.servers", "required")
            }
        }
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
                // 0 keeps the default, as in MOSN.
                if let t = server.duration("graceful_timeout"), t > 0 { plan.drainTimeoutMS = t }
                plan.workers = processorCount(server)
            }
            var tables: [String: RouteTable] = [:]
            // Older MOSN configs carry router configurations as `connection_manager` network
            // filters inside a listener's chain; they are read as if listed under `routers`.
            let listeners = server.objects("listeners")
            let legacyRouters = listeners.flatMap { $0.objects("filter_chains") }.flatMap { $0.objects("filters") }
                .filter { $0.string("type") == "connection_manager" }.compactMap { $0.object("config") }
            for r in server.objects("routers") + legacyRouters {
                let originalDestination = Set(plan.clusters.filter(\.originalDestination).map(\.name))
                if let table = RouteCompiler(diagnostics: diagnostics, clusterIndex: clusterIndex,
                                             originalDestinationClusters: originalDestination, clusters: plan.clusters).compile(r) {
                    if tables[table.name] != nil { diagnostics.error(r.sub("router_config_name"), "duplicate router_config_name \"\(table.name)\"") }
                    tables[table.name] = table
                }
            }
            if listeners.isEmpty && i == servers.count - 1 && plan.listeners.isEmpty {
                diagnostics.error(server.sub("listeners"), "at least one listener is required")
            }
            for l in listeners {
                if let listener = compileListener(l, tables: tables, clusters: plan.clusters, clusterIndex: clusterIndex) { plan.listeners.append(listener) }
            }
        }
        // fault_tolerance takes hosts out through the clusters' shared health state.
        let holdsHosts = plan.listeners.contains { l in
            l.filters.contains { ($0 as? ProxyFilterPlan)?.settings.streamFilters?.response.isEmpty == false }
        }
        if holdsHosts {
            for i in plan.clusters.indices where plan.clusters[i].health == nil && !plan.clusters[i].hosts.isEmpty {
                plan.clusters[i].health = HostHealth(hostCount: plan.clusters[i].hosts.count, outlier: nil, activelyChecked: false)
            }
        }
        if !plan.listeners.isEmpty && !plan.listeners.contains(where: \.bindPort) {
            diagnostics.error("$.servers", "no listener to open: every listener has bind_port: false")
        }
        var seen: [String: String] = [:]
        for l in plan.listeners where l.bindPort {
            if let other = seen[l.address.description] {
                diagnostics.error("$.servers", "listeners \(other) and \(l.name) both bind \(l.address)")
            }
            seen[l.address.description] = l.name
        }
        checkHandOffTargets(plan.listeners)
        plan.accessLogPaths = accessLogFiles.paths
        plan.strictDNS = strictDNS.specs
        plan.admin = compileAdmin(root, json: .object(root.dict))
        for (key, address) in [("admin", plan.admin.address), ("metrics", plan.admin.prometheus?.address)] {
            guard let address, address.port != 0 else { continue }
            if let l = plan.listeners.first(where: { $0.bindPort && !$0.address.isUnix && $0.address.port == address.port
                                                     && ($0.address == address || $0.address.isUnspecified || address.isUnspecified) }) {
                diagnostics.error("$.\(key)", "port \(address.port) is listener \(l.name)'s")
            }
        }
        if let a = plan.admin.address, let p = plan.admin.prometheus?.address, a.port == p.port, a.port != 0,
           a == p || a.isUnspecified || p.isUnspecified {
            diagnostics.error("$.metrics.sinks", "port \(p.port) is the admin API's")
        }
        return plan
    }

    func compileListener(_ l: JSONObject, tables: [String: RouteTable], clusters: [ClusterConfig] = [], clusterIndex: [String: Int] = [:]) -> ListenerPlan? {
        l.checkKeys(known: ["name", "address", "bind_port", "filter_chains", "type", "network", "connection_idle_timeout",
                            "use_original_dst", "listener_filters", "tls_context", "tls_context_set", "inspector", "stream_filters",
                            "access_logs"],
                    ignored: ["per_connection_buffer_limit_bytes", "log_path", "log_level", "handoff_restoreddestination_connections",
                              "option", "transparent", "default_read_buffer_size", "reuseport"])
        // Keys that change who may connect or what a request goes through: refused until honoured.
        let capture = compileCapture(l)
        let name = l.string("name") ?? l.path
        guard let address = listenAddress(l) else { return nil }
        let bindPort = l.bool("bind_port") ?? true
        if address.isUnix && capture != nil {
            diagnostics.error(l.sub(l.has("listener_filters") ? "listener_filters" : "use_original_dst"),
                              "a unix socket listener has no original destination: original_dst needs a TCP listener")
        }
        if !bindPort && capture != nil {
            diagnostics.warn(l.sub("bind_port"), "false with use_original_dst: a bind_port: false listener is never opened, so it captures nothing; connections handed to it run its network filters only")
        }
        let idleTimeout = l.duration("connection_idle_timeout") ?? 90_000
        var filters: [NetworkFilterPlan] = []
        let chains = l.objects("filter_chains")
        if chains.isEmpty { diagnostics.error(l.sub("filter_chains"), "at least one filter chain is required") }
        // Chains chosen by the ClientHello's server name (a Tern extension, Envoy's key).
        let routesByServerName = chains.contains { $0.isNonEmpty("filter_chain_match") }
        var context = FilterContext(listenerName: name, idleTimeoutMS: idleTimeout, tables: tables, clusters: clusters, clusterIndex: clusterIndex)
        // Stream filters belong to the listener: the proxy filter of every chain in use runs them.
        let chainsInUse = routesByServerName ? chains : Array(chains.prefix(1))
        let networkFilterTypes = chainsInUse.flatMap { $0.objects("filters") }.compactMap { $0.string("type") }
        context.streamFilters = compileStreamFilters(l, networkFilterTypes: networkFilterTypes, clusterIndex: clusterIndex)
        context.accessLogs = compileAccessLogs(l, listenerName: name)
        if context.accessLogs != nil && !networkFilterTypes.contains("proxy") {
            diagnostics.warn(l.sub("access_logs"), "lines are written for requests of the proxy filter (HTTP/1, bolt); this listener has none, so nothing is logged")
        }
        let routing = routesByServerName ? compileServerNameRouting(l, chains: chains, context: context) : nil
        if !routesByServerName {
            // MOSN itself uses only the first chain; more would mean chain matching, which it does not do.
            if chains.count > 1 { diagnostics.warn(l.sub("filter_chains"), "only the first filter chain is used, as in MOSN") }
            if let chain = chains.first {
                chain.checkKeys(known: ["filters", "tls_context", "tls_context_set", "filter_chain_match"], ignored: ["match"])
                filters = compileFilters(chain, context: context)
            }
        }
        var plan = ListenerPlan(name: name, address: address, bindPort: bindPort, filters: filters)
        plan.shape = Self.shape(of: l)
        plan.capture = bindPort ? capture : nil
        plan.serverNameRouting = routing
        if !routesByServerName, let tls = downstreamTLS(listener: l, chain: chains.first, name: name) {
            (plan.tls, plan.tlsFiles) = (tls.contexts, tls.files)
            plan.tlsHandshakeTimeoutMS = Self.handshakeWaitMS(idleTimeoutMS: idleTimeout)
        }
        if l.bool("inspector") == true {
            if plan.tls != nil { plan.inspectorWaitMS = idleTimeout }
            else { diagnostics.warn(l.sub("inspector"), "the listener has no TLS context, so every connection is plain text already") }
        }
        return plan
    }

    /// A chain's network filters; an error when it has none (and nothing else is wrong).
    func compileFilters(_ chain: JSONObject, context: FilterContext) -> [NetworkFilterPlan] {
        var filters: [NetworkFilterPlan] = []
        for f in chain.objects("filters") {
            f.checkKeys(known: ["type", "config"])
            guard let type = f.requiredString("type") else { continue }
            if type == "connection_manager" { continue }   // read with the routers
            guard let kind = NetworkFilterRegistry.kinds[type] else {
                let known = NetworkFilterRegistry.kinds.keys.sorted().joined(separator: ", ")
                let status = NetworkFilterRegistry.later.contains(type) ? "is not supported by Tern yet" : "is unknown"
                diagnostics.error(f.sub("type"), "network filter \"\(type)\" \(status) (supported: \(known))")
                continue
            }
            let config = f.object("config") ?? JSONObject(.object([:]), path: f.sub("config"), diagnostics: diagnostics)!
            if let plan = kind.compile(config, context: context, diagnostics: diagnostics) { filters.append(plan) }
        }
        if filters.isEmpty && diagnostics.errors.isEmpty { diagnostics.error(chain.sub("filters"), "no network filter") }
        return filters
    }

    /// `use_original_dst` and `listener_filters`. As in MOSN, either one makes the listener
    /// capture: `use_original_dst: true` alone reads SO_ORIGINAL_DST (redirect); an `original_dst`
    /// filter's `config.type` picks `redirect` (the default) or `tproxy`.
    func compileCapture(_ l: JSONObject) -> CapturePlan? {
        let useOriginalDestination = l.bool("use_original_dst") ?? false
        var found: CapturePlan?
        for item in l.array("listener_filters") ?? [] {
            guard let f = JSONObject(item.value, path: item.path, diagnostics: diagnostics) else { continue }
            f.checkKeys(known: ["type", "config"])
            guard let type = f.requiredString("type") else { continue }
            guard type == "original_dst" else {
                diagnostics.error(f.sub("type"), "listener filter \"\(type)\" is unknown (supported: original_dst)")
                continue
            }
            if found != nil { diagnostics.error(f.path, "original_dst is listed twice"); continue }
            let config = f.object("config")
            config?.checkKeys(known: ["type", "fallback_to_local"])
            let modeName = config?.string("type") ?? OriginalDestinationMode.redirect.rawValue
            guard let mode = OriginalDestinationMode(rawValue: modeName) else {
                diagnostics.error(f.sub("config.type"), "unknown original_dst type \"\(modeName)\" (redirect, tproxy)")
                continue
            }
            found = CapturePlan(mode: mode, fallbackToLocal: config?.bool("fallback_to_local") ?? false)
        }
        if let found { return found }
        return useOriginalDestination ? CapturePlan(mode: .redirect, fallbackToLocal: false) : nil
    }

    /// Listeners that are never opened only make sense as hand-off targets of a capturing one;
    /// two that own the same address would make the hand-off ambiguous.
    func checkHandOffTargets(_ listeners: [ListenerPlan]) {
        var owners: [String: String] = [:]
        for l in listeners where !l.bindPort {
            if let other = owners[l.address.description] {
                diagnostics.error("$.servers", "listeners \(other) and \(l.name) both own \(l.address) for hand-off (bind_port: false)")
            }
            owners[l.address.description] = l.name
        }
        if !owners.isEmpty && !listeners.contains(where: { $0.capture != nil }) {
            diagnostics.warn("$.servers", "bind_port: false listener(s) \(owners.values.sorted().joined(separator: ", ")) receive nothing: no listener has use_original_dst or an original_dst listener filter")
        }
    }

    /// `address` read as `network` says: tcp (the default) takes ip:port, unix a socket path.
    func listenAddress(_ l: JSONObject) -> SocketAddress? {
        let network = l.string("network") ?? "tcp"
        switch network.lowercased() {
        case "tcp":
            guard let address = l.address("address", allowPortZero: true) else { return nil }
            if address.isUnix {
                diagnostics.error(l.sub("address"), "a unix socket address needs \"network\": \"unix\" on the listener")
                return nil
            }
            return address
        case "unix":
            return l.unixListenAddress("address")
        case "udp":
            diagnostics.error(l.sub("network"), "udp listeners are not supported by Tern yet (tcp, unix)")
            return nil
        default:
            diagnostics.error(l.sub("network"), "unknown network \"\(network)\" (tcp, unix)")
            return nil
        }
    }

    /// A reload: the running plan's clusters first, at their positions (a removed one stays as a
    /// placeholder no route can name), then the new ones.
    func keepClusterPositions(_ plan: inout ServerPlan, _ clusterIndex: inout [String: Int]) {
        var byName: [String: ClusterConfig] = [:]
        for c in plan.clusters { byName[c.name] = c }
        var ordered: [ClusterConfig] = []
        var index: [String: Int] = [:]
        for old in previousClusters {
            if let kept = byName.removeValue(forKey: old.name) {
                index[kept.name] = ordered.count
                ordered.append(kept)
            } else {
                var placeholder = old
                placeholder.removed = true
                ordered.append(placeholder)
            }
        }
        for c in plan.clusters where byName[c.name] != nil {
            index[c.name] = ordered.count
            ordered.append(c)
        }
        plan.clusters = ordered
        clusterIndex = index
    }

    /// See `ListenerPlan.shape`.
    static func shape(of listener: JSONObject) -> String {
        var dict = listener.dict
        dict.removeValue(forKey: "stream_filters")
        if case .array(let chains)? = dict["filter_chains"] {
            dict["filter_chains"] = .array(chains.map { chain in
                guard case .object(var c) = chain, case .array(let filters)? = c["filters"] else { return chain }
                c["filters"] = .array(filters.map { filter in
                    guard case .object(var f) = filter, case .string("proxy")? = f["type"], case .object(let config)? = f["config"] else { return filter }
                    f["config"] = .object(config.filter { ["downstream_protocol", "upstream_protocol", "extend_config", "fallback_for_unknown_protocol"].contains($0.key) })
                    return .object(f)
                })
                return .object(c)
            })
        }
        return JSONText.render(.object(dict))
    }

    func compileCluster(_ c: JSONObject, managerTLS: ClientTLS? = nil, managerTLSEnabled: Bool = false) -> ClusterConfig? {
        c.checkKeys(known: ["name", "type", "lb_type", "hosts", "connect_timeout", "idle_timeout", "max_request_per_conn",
                            "conn_buffer_limit_bytes", "max_idle_conns_per_host", "tls_context", "cluster_manager_tls",
                            "lb_subset_config", "lbconfig", "circuit_breakers", "health_check", "outlier_detection",
                            "dns_refresh_rate", "respect_dns_ttl", "dns_lookup_family", "dns_resolvers", "dns_resolver_file", "dns_resolver_port",
                            "keepalive", "tcp_keepalive"],
                    ignored: ["spec", "original_dst_lb_config",
                              "lb_config", "connection_pool_mode", "sub_type", "cluster_type", "alt_stat_name", "cluster_pool_enable",
                              "mark", "slow_start"])
        guard let name = c.requiredString("name") else { return nil }
        let type = c.string("type") ?? "SIMPLE"
        if !["SIMPLE", "STATIC", "ORIGINAL_DST", "STRICT_DNS"].contains(type) {
            diagnostics.error(c.sub("type"), "cluster type \"\(type)\" is not supported yet (SIMPLE, STATIC, STRICT_DNS, ORIGINAL_DST)")
        }
        let strictDNS = type == "STRICT_DNS"
        if !strictDNS {
            for key in ["dns_refresh_rate", "respect_dns_ttl", "dns_lookup_family", "dns_resolvers", "dns_resolver_file", "dns_resolver_port"] where c.has(key) {
                diagnostics.warn(c.sub(key), "read only for \"type\": \"STRICT_DNS\" clusters; ignored for \(type)")
            }
        }
        let originalDestination = type == "ORIGINAL_DST"
        // MOSN falls back to round robin when lb_type is absent.
        let lbType = c.string("lb_type") ?? (originalDestination ? "LB_ORIGINAL_DST" : "LB_ROUNDROBIN")
        if originalDestination {
            // The destination is the connection's own; hosts and any other balancer would say otherwise.
            if lbType != "LB_ORIGINAL_DST" { diagnostics.error(c.sub("lb_type"), "an ORIGINAL_DST cluster takes LB_ORIGINAL_DST, got \"\(lbType)\"") }
            if c.isNonEmpty("hosts") { diagnostics.error(c.sub("hosts"), "an ORIGINAL_DST cluster has no hosts: each connection goes to its original destination") }
            if let o = c.object("original_dst_lb_config"), o.bool("use_header") == true {
                o.refuse("use_header", what: "taking the original destination from a header")
            }
        } else if lbType == "LB_ORIGINAL_DST" {
            diagnostics.error(c.sub("lb_type"), "LB_ORIGINAL_DST needs \"type\": \"ORIGINAL_DST\"")
        } else if !LoadBalancerRegistry.isKnown(lbType) {
            let known = LoadBalancerRegistry.kinds.keys.sorted().joined(separator: ", ")
            diagnostics.error(c.sub("lb_type"), "load balancer \"\(lbType)\" is not supported yet (\(known))")
        }
        var hosts: [HostConfig] = []
        var hostObjects: [JSONObject] = []
        var hostEntries = c.objects("hosts")
        var dnsFingerprint = ""
        if strictDNS {
            // Entries with an IP address are hosts as they are; names become the addresses they
            // resolve to (none until the first answer).
            var targets: [StrictDNSSpec.Target] = []
            hostEntries = hostEntries.filter { h in
                if case .string(let text)? = h.present("address"), SocketAddress.parse(text) != nil { return true }
                if let target = dnsTarget(h) { targets.append(target) }
                return false
            }
            self.strictDNS.add(strictDNSSpec(c, name: name, targets: targets))
            let resolved = resolvedHosts[name] ?? []
            hostEntries += resolved.enumerated().compactMap { JSONObject($1, path: "\(c.sub("hosts"))[resolved \($0)]", diagnostics: diagnostics) }
            dnsFingerprint = JSONText.render(.array(resolved))
        }
        for h in hostEntries {
            h.checkKeys(known: ["address", "hostname", "weight", "metadata", "tls_disable"])
            guard let address = h.address("address", allowPortZero: false) else { continue }
            var metadata: [String: String] = [:]
            if let m = h.object("metadata"), let fm = m.object("filter_metadata"), let lb = fm.stringMap("mosn.lb") { metadata = lb }
            hosts.append(HostConfig(address: address, hostname: h.string("hostname") ?? "", weight: hostWeight(h), metadata: metadata))
            hostObjects.append(h)
        }
        let tls = upstreamTLS(cluster: c, name: name, hosts: Array(zip(hostObjects, hosts)), manager: managerTLS, managerEnabled: managerTLSEnabled)
        if tls != nil && originalDestination {
            diagnostics.error(c.sub(c.enablesTLS("tls_context") ? "tls_context" : "cluster_manager_tls"), "TLS to an ORIGINAL_DST cluster is not supported yet (the destination's name is not known)")
        }
        var config = ClusterConfig(name: name, lbType: lbType, hosts: hosts,
                             // 0 means the default, as in MOSN; a connect never waits unbounded.
                             connectTimeoutMS: c.duration("connect_timeout", max: 3_600_000).flatMap { $0 > 0 ? $0 : nil } ?? 3_000,
                             idleTimeoutMS: c.duration("idle_timeout") ?? 90_000,
                             maxRequestsPerConnection: c.int("max_request_per_conn", min: 0, max: Int(UInt32.max)).map { $0 == 0 ? 1024 : $0 } ?? 1024,
                             connectionBufferLimit: c.int("conn_buffer_limit_bytes", min: 0, max: Int(UInt32.max)) ?? 16384,
                             maxIdlePerHost: c.int("max_idle_conns_per_host", min: 0, max: 65536) ?? 1024,
                             originalDestination: originalDestination)
        config.upstreamTransport = tls
        config.subsets = subsetTable(c, hosts: hosts, originalDestination: originalDestination)
        config.balancerSettings = balancerSettings(c)
        config.circuitBreaker = circuitBreaker(c, hostCount: hosts.count)
        config.healthCheck = healthCheck(c, hosts: hosts)
        let outlier = outlierDetection(c)
        if (config.healthCheck != nil || outlier != nil) && !hosts.isEmpty {
            config.health = HostHealth(hostCount: hosts.count, outlier: outlier, activelyChecked: config.healthCheck != nil)
        }
        config.resolvesNames = strictDNS
        config.heartbeat = upstreamHeartbeat(c)
        config.tcpKeepAlive = tcpKeepAlive(c)
        config.fingerprint = JSONText.render(.object(c.dict)) + dnsFingerprint
        return config
    }
}

extension ConfigCompiler {
    /// MOSN's `keepalive` {`interval`, `timeout`}: heartbeats on idle bolt upstream connections
    /// (an interval of 0 or none: the listener's heartbeat settings; MOSN's timeout default 1s).
    func upstreamHeartbeat(_ c: JSONObject) -> UpstreamHeartbeat? {
        guard let k = c.object("keepalive") else { return nil }
        k.checkKeys(known: ["interval", "timeout"])
        guard let interval = k.duration("interval", max: 3_600_000), interval > 0 else { return nil }
        if interval < 100 { diagnostics.error(k.sub("interval"), "at least 100ms") ; return nil }
        let timeout = k.duration("timeout", max: 3_600_000).flatMap { $0 > 0 ? $0 : nil } ?? 1_000
        return UpstreamHeartbeat(intervalMS: interval, timeoutMS: timeout)
    }

    /// `tcp_keepalive` (a Tern extension in Envoy's names, seconds): `keepalive_time` (idle before
    /// the first probe; 0 turns keep-alive off), `keepalive_interval`, `keepalive_probes`. Without
    /// it: on, as Go's dialer sets it for MOSN (15 s, 15 s, the kernel's probe count).
    func tcpKeepAlive(_ c: JSONObject) -> TCPKeepAlive? {
        guard let k = c.object("tcp_keepalive") else { return .mosnDefault }
        k.checkKeys(known: ["keepalive_time", "keepalive_interval", "keepalive_probes"])
        let idle = k.int("keepalive_time", min: 0, max: 32_767) ?? 15
        if idle == 0 { return nil }
        return TCPKeepAlive(idleSeconds: Int32(idle), intervalSeconds: Int32(k.int("keepalive_interval", min: 1, max: 32_767) ?? 15),
                            probes: Int32(k.int("keepalive_probes", min: 1, max: 127) ?? 0))
    }

    /// `circuit_breakers`: MOSN's list of thresholds, of which it reads only the first (priorities
    /// are not grouped); Tern refuses further entries rather than ignore them. nil: no limit set.
    func circuitBreaker(_ c: JSONObject, hostCount: Int) -> CircuitBreaker? {
        let entries = c.objects("circuit_breakers")
        if entries.count > 1 {
            diagnostics.error(entries[1].path, "only one circuit_breakers entry is read (MOSN reads the first and drops the rest); merge them into one")
        }
        guard let t = entries.first else { return nil }
        t.checkKeys(known: ["max_connections", "max_pending_requests", "max_requests", "max_retries"], ignored: ["priority"])
        let limit = { (key: String) in t.int(key, min: 0, max: Int(UInt32.max)) ?? 0 }
        let breaker = CircuitBreaker(maxRequests: limit("max_requests"), maxConnectionsPerHost: limit("max_connections"),
                                     maxPendingRequests: limit("max_pending_requests"), maxRetries: limit("max_retries"), hostCount: hostCount)
        if breaker.maxRequests == 0 && breaker.maxConnectionsPerHost == 0 && breaker.maxPendingRequests == 0 { return nil }
        return breaker
    }

    /// `lb_subset_config`; as in MOSN, subsets exist only when it has at least one selector.
    func subsetTable(_ c: JSONObject, hosts: [HostConfig], originalDestination: Bool) -> SubsetTable? {
        guard let s = c.object("lb_subset_config") else { return nil }
        s.checkKeys(known: ["fall_back_policy", "default_subset", "subset_selectors"])
        let policyNumber = s.int("fall_back_policy", min: 0, max: 2) ?? 0
        let fallback = SubsetFallback(rawValue: policyNumber) ?? .noFallback
        let defaultSubset = s.stringMap("default_subset") ?? [:]
        var selectors: [[String]] = []
        for item in s.array("subset_selectors") ?? [] {
            guard case .array(let keys) = item.value else { diagnostics.error(item.path, "expected a list of metadata keys"); continue }
            var list: [String] = []
            for (i, key) in keys.enumerated() {
                guard case .string(let k) = key, !k.isEmpty else { diagnostics.error("\(item.path)[\(i)]", "expected a metadata key (a non-empty string)"); continue }
                list.append(k)
            }
            if list.isEmpty { diagnostics.error(item.path, "a selector needs at least one metadata key") }
            selectors.append(list)
        }
        if selectors.isEmpty {
            if s.has("fall_back_policy") || s.has("default_subset") {
                diagnostics.warn(s.sub("subset_selectors"), "no selector: the cluster has no subsets and every route uses all its hosts, as in MOSN")
            }
            return nil
        }
        if originalDestination { diagnostics.error(s.path, "an ORIGINAL_DST cluster has no hosts to make subsets of"); return nil }
        if fallback != .defaultSubset && !defaultSubset.isEmpty {
            diagnostics.warn(s.sub("default_subset"), "used only with fall_back_policy 2 (DEFAULT_SUBSET); ignored with \(fallback.name)")
        }
        let table = SubsetTable(hosts: hosts, selectors: selectors, fallback: fallback, defaultSubset: defaultSubset)
        if fallback == .defaultSubset && table.defaultHosts.isEmpty && !hosts.isEmpty {
            diagnostics.warn(s.sub("default_subset"), "no host matches \(MetadataCriteria(defaultSubset)): requests that fall back get no host (503)")
        }
        return table
    }

    /// MOSN's `lbconfig`: `choice_count` is honoured (LB_LEAST_REQUEST); the biases tune
    /// balancers Tern does not have (weighted EDF, peak EWMA) and are warned about.
    func balancerSettings(_ c: JSONObject) -> BalancerSettings {
        var settings = BalancerSettings()
        guard let l = c.object("lbconfig") else { return settings }
        l.checkKeys(known: ["choice_count"], ignored: ["active_request_bias", "client_error_bias", "server_error_bias"])
        if let n = l.int("choice_count", min: 1, max: 100) { settings.choiceCount = n }
        return settings
    }
}

extension ConfigCompiler {
    /// `servers[0].processor` as MOSN reads it: a number, a numeric string, or "auto" (any case);
    /// zero, negative or "auto" mean one worker per CPU of the affinity mask (nil).
    func processorCount(_ server: JSONObject) -> Int? {
        let key = "processor"
        let limit = 1024
        switch server.present(key) {
        case nil:
            return nil
        case .string(let text)?:
            if text.lowercased() == "auto" { return nil }
            guard let n = Int(text) else {
                diagnostics.warn(server.sub(key), "\"\(text)\" is neither a number nor \"auto\"; one worker per CPU, as MOSN does")
                return nil
            }
            if n > limit { diagnostics.error(server.sub(key), "must be at most \(limit), got \(n)"); return nil }
            return n > 0 ? n : nil
        default:
            guard let n = server.int(key, max: limit) else { return nil }
            return n > 0 ? n : nil
        }
    }

    /// A host's `weight`: MOSN's range is 1-128 and it reads 0 (Go's value when the key is absent)
    /// as 1. Outside the range is an error here, where MOSN clamps silently.
    func hostWeight(_ h: JSONObject) -> Int {
        guard let w = h.int("weight", min: 0, max: maxHostWeight) else { return 1 }
        if w == 0 { diagnostics.warn(h.sub("weight"), "0 is read as 1, as MOSN does (no host is weighted out)") }
        return max(w, 1)
    }
}

/// MOSN's largest host weight (`MaxHostWeight`).
let maxHostWeight = 128

/// What a network filter's compiler gets besides its own config.
struct FilterContext {
    let listenerName: String
    let idleTimeoutMS: Int64
    let tables: [String: RouteTable]
    var clusters: [ClusterConfig] = []
    var clusterIndex: [String: Int] = [:]
    /// The listener's `stream_filters`, for its proxy filter.
    var streamFilters: StreamFilterPlan? = nil
    /// The listener's `access_logs`, for its proxy filter.
    var accessLogs: AccessLogPlan? = nil
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
