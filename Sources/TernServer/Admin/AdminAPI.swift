import Glibc
import Synchronization
import TernCore

/// The admin API's paths, methods and answers (MOSN's pkg/admin paths), and the Prometheus
/// endpoint. Runs on the admin thread only.
final class AdminAPI {
    /// The plan running now (a reload replaces it).
    let currentPlan: @Sendable () -> ServerPlan
    var plan: ServerPlan { currentPlan() }
    let logger: Logger
    /// Every started worker's task queue, for counters.
    let workers: @Sendable () -> [TaskQueue]
    let isDraining: @Sendable () -> Bool

    init(plan: @escaping @Sendable () -> ServerPlan, logger: Logger, workers: @escaping @Sendable () -> [TaskQueue], isDraining: @escaping @Sendable () -> Bool) {
        self.currentPlan = plan
        self.logger = logger
        self.workers = workers
        self.isDraining = isDraining
    }

    typealias Reply = (AdminResponse) -> Void

    private struct Route: Sendable {
        let method: String
        let handler: @Sendable (AdminAPI) -> (AdminRequest, EventLoop, @escaping Reply) -> Void
    }

    /// MOSN's paths (pkg/admin/server/server.go) plus Kubernetes probes.
    private static let routes: [String: Route] = [
        "/": Route(method: "GET") { $0.help },
        "/api/v1/version": Route(method: "GET") { $0.version },
        "/api/v1/config_dump": Route(method: "GET") { $0.configDump },
        "/api/v1/stats": Route(method: "GET") { $0.stats },
        "/api/v1/stats_glob": Route(method: "GET") { $0.statsGlob },
        "/api/v1/update_loglevel": Route(method: "POST") { $0.updateLogLevel },
        "/api/v1/get_loglevel": Route(method: "GET") { $0.getLogLevel },
        "/api/v1/enable_log": Route(method: "POST") { api in { r, _, reply in api.toggleLog(r, disable: false, reply) } },
        "/api/v1/disable_log": Route(method: "POST") { api in { r, _, reply in api.toggleLog(r, disable: true, reply) } },
        "/api/v1/states": Route(method: "GET") { $0.states },
        "/api/v1/features": Route(method: "GET") { $0.features },
        "/ready": Route(method: "GET") { $0.probe },
        "/healthz": Route(method: "GET") { $0.probe },
    ]

    func handle(_ request: AdminRequest, site: AdminSite, loop: EventLoop, reply: @escaping Reply) {
        switch site {
        case .prometheus(let endpoint):
            guard request.path == endpoint else { return reply(.text(404, "not found; metrics are at \(endpoint)\n")) }
            guard request.method == "GET" else { return reply(methodNotAllowed("GET")) }
            collect(loop) { reply(AdminResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Array($0.prometheus().utf8))) }
        case .admin:
            guard let route = AdminAPI.routes[request.path] else { return reply(.error(404, "no such admin path: \(request.path)")) }
            guard request.method == route.method else {
                logger.warn("admin", "api \(request.path): invalid method \(request.method)")
                return reply(methodNotAllowed(route.method))
            }
            route.handler(self)(request, loop, reply)
        }
    }

    private func methodNotAllowed(_ allowed: String) -> AdminResponse {
        var r = AdminResponse.error(405, "method not allowed; use \(allowed)")
        r.allow = allowed
        return r
    }

    private func collect(_ loop: EventLoop, _ done: @escaping (MetricsReport) -> Void) {
        let draining = isDraining()
        let plan = self.plan
        StatsCollection.start(plan: plan, workers: workers(), loop: loop) { [plan] merged in
            done(MetricsReport(plan: plan, merged: merged, process: .read(), draining: draining))
        }
    }

    private func help(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        reply(.text(200, "supported APIs:\n" + AdminAPI.routes.keys.filter { $0 != "/" }.sorted().joined(separator: "\n") + "\n"))
    }

    private func version(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        reply(.text(200, "tern version: \(TernVersion.version)"))
    }

    /// The config as loaded; `?allclusters`, `?alllisteners`, `?allrouters` (by name), or
    /// `?cluster=NAME`, `?listener=NAME`, `?router=NAME`, as MOSN's config_dump takes them.
    private func configDump(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        let items = r.queryItems
        let config = AdminAPI.redactingKeys(plan.admin.loadedConfig)
        guard !items.isEmpty else { return reply(.json(200, JSONText.render(config) + "\n")) }
        guard items.count == 1 else { return reply(.error(400, "only one parameter is supported")) }
        let servers = config.member("servers")?.elements ?? []
        func byName(_ list: [JSONValue], _ key: String) -> [String: JSONValue] {
            var out: [String: JSONValue] = [:]
            for v in list { if case .string(let name)? = v.member(key) { out[name] = v } }
            return out
        }
        let clusters = byName(config.member("cluster_manager")?.member("clusters")?.elements ?? [], "name")
        let listeners = byName(servers.flatMap { $0.member("listeners")?.elements ?? [] }, "name")
        let routers = byName(servers.flatMap { $0.member("routers")?.elements ?? [] }, "router_config_name")
        let (name, value) = items[0]
        let answer: JSONValue?
        switch name {
        case "mosnconfig": answer = config
        case "allclusters": answer = .object(clusters)
        case "alllisteners": answer = .object(listeners)
        case "allrouters": answer = .object(routers)
        case "cluster": answer = clusters[value]
        case "listener": answer = listeners[value]
        case "router": answer = routers[value]
        default: return reply(.error(400, "unknown parameter \(name) (mosnconfig, allclusters, alllisteners, allrouters, cluster, listener, router)"))
        }
        guard let answer else { return reply(.error(404, "no \(name) named \(value)")) }
        reply(.json(200, JSONText.render(answer) + "\n"))
    }

    /// Inline private keys are not shown (a file path is).
    static func redactingKeys(_ v: JSONValue) -> JSONValue {
        switch v {
        case .object(let o):
            var out: [String: JSONValue] = [:]
            for (k, value) in o {
                if k.lowercased() == "private_key", case .string(let s) = value, s.contains("-----BEGIN") { out[k] = .string("[redacted]") }
                else { out[k] = redactingKeys(value) }
            }
            return .object(out)
        case .array(let a): return .array(a.map(redactingKeys))
        default: return v
        }
    }

    private func stats(_ r: AdminRequest, _ loop: EventLoop, _ reply: @escaping Reply) {
        collect(loop) { reply(.json(200, $0.json())) }
    }

    private func statsGlob(_ r: AdminRequest, _ loop: EventLoop, _ reply: @escaping Reply) {
        collect(loop) { reply(.text(200, $0.globLines())) }
    }

    /// `{"log_path": …, "log_level": …}`: the log at `log_path` (Tern has one: `default_log_path`,
    /// "stderr" when unset; an empty or absent path means it too) logs at `log_level` from now on.
    private func updateLogLevel(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        guard case .object(let o)? = try? JSONParser.parse(String(decoding: r.body, as: UTF8.self)) else {
            return reply(.error(400, "the body must be a JSON object {\"log_path\", \"log_level\"}"))
        }
        guard case .string(let levelText)? = o["log_level"], let level = AdminAPI.mosnLevel(levelText) else {
            return reply(.error(400, "log_level must be one of FATAL, ERROR, WARN, INFO, DEBUG, TRACE"))
        }
        var path = ""
        if let p = o["log_path"] {
            guard case .string(let s) = p else { return reply(.error(400, "log_path must be a string")) }
            path = s
        }
        guard path.isEmpty || path == logger.path else { return reply(.error(400, "no log at \(path) (Tern's log is \(logger.path))")) }
        // Said at INFO under whichever of the two levels shows it.
        let line = "log \(logger.path): level \(logger.level.label) -> \(level.label)"
        let shownBefore = logger.enabled(.info)
        if shownBefore { logger.info("admin", line) }
        logger.setLevel(level)
        if !shownBefore { logger.info("admin", line) }
        reply(.text(200, "update logger success\n"))
    }

    /// MOSN's level names, exactly (upper case).
    static func mosnLevel(_ s: String) -> LogLevel? {
        ["FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(s) ? LogLevel.parse(s) : nil
    }

    private func getLogLevel(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        reply(.json(200, "{" + JSONText.quote(logger.path) + ": " + JSONText.quote(logger.level.label) + "}\n"))
    }

    /// The body is the log's path, as in MOSN.
    private func toggleLog(_ r: AdminRequest, disable: Bool, _ reply: Reply) {
        var path = String(decoding: r.body, as: UTF8.self)
        while path.last == "\n" || path.last == "\r" || path.last == " " { path.removeLast() }
        guard path == logger.path else {
            return reply(.error(400, "\(disable ? "disable" : "enable") logger failed: no log at \(path) (Tern's log is \(logger.path))"))
        }
        if !disable { logger.setDisabled(false) }
        logger.info("admin", "log \(path) \(disable ? "disabled" : "enabled")")
        if disable { logger.setDisabled(true) }
        reply(.text(200, "\(disable ? "disable" : "enable") logger success\n"))
    }

    /// MOSN's `pid=N&state=S`, S from its stage manager: 6 running, 8 graceful stopping.
    private func states(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        reply(.text(200, "pid=\(getpid())&state=\(isDraining() ? 8 : 6)\n"))
    }

    /// What this Tern does of MOSN's optional features; `?key=NAME` answers true or false.
    static let features: [(String, Bool)] = [
        ("admin_api", true), ("prometheus_sink", true), ("tls", true), ("original_dst", true),
        ("access_logs", true), ("hot_upgrade", true), ("config_reload", true), ("xds", false), ("http2", false),
    ]

    private func features(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        if let key = r.queryItems.first(where: { $0.name == "key" })?.value {
            return reply(.text(200, String(AdminAPI.features.first { $0.0 == key }?.1 ?? false)))
        }
        reply(.json(200, "{\n" + AdminAPI.features.map { "  \(JSONText.quote($0.0)): \($0.1)" }.joined(separator: ",\n") + "\n}\n"))
    }

    /// Kubernetes probes: 200 while serving, 503 once draining (SIGTERM) so traffic moves away.
    private func probe(_ r: AdminRequest, _ loop: EventLoop, _ reply: Reply) {
        reply(isDraining() ? .text(503, "draining\n") : .text(200, "ok\n"))
    }
}

extension JSONValue {
    func member(_ key: String) -> JSONValue? { if case .object(let o) = self { return o[key] } else { return nil } }
    var elements: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
}
