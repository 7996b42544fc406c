import Synchronization
import TernBolt
import TernCore
import TernHTTP1

/// Health probes by MOSN's `health_check.protocol`: a protocol with a probe of its own gets it;
/// any other name (`TCP`, ...) gets MOSN's default, a TCP connect. A new probe is one line here.
enum HealthProbeRegistry {
    static func probe(protocolName: String, _ check: JSONObject) -> (any HealthProbe)? {
        switch protocolName.lowercased() {
        case "http1": return httpProbe(check)
        case "bolt", "sofarpc": return BoltHealthProbe(protocolCode: 1)
        case "boltv2": return BoltHealthProbe(protocolCode: 2)
        default: return TCPConnectProbe()
        }
    }

    /// `check_config.http_check_config` (`path`, `method`, `domain`, `codes` [{start, end}],
    /// `timeout`, `port`, `scheme`); without it MOSN falls back to a TCP connect, and so does Tern.
    static func httpProbe(_ check: JSONObject) -> (any HealthProbe)? {
        guard let cfg = check.object("check_config")?.object("http_check_config") else { return TCPConnectProbe() }
        cfg.checkKeys(known: ["path", "method", "domain", "codes", "timeout", "port", "scheme"])
        if let scheme = cfg.string("scheme"), !scheme.isEmpty, scheme.lowercased() != "http" {
            cfg.diagnostics.error(cfg.sub("scheme"), "only http health checks are supported (the cluster's own tls_context applies to them)")
        }
        var codes: [ClosedRange<Int>] = []
        for c in cfg.objects("codes") {
            c.checkKeys(known: ["start", "end"])
            guard let start = c.int("start", min: 100, max: 599), let end = c.int("end", min: 100, max: 599) else { continue }
            guard start <= end else { cfg.diagnostics.error(c.path, "start is above end"); continue }
            codes.append(start...end)
        }
        let method = cfg.string("method").flatMap { $0.isEmpty ? nil : $0 } ?? "GET"
        let path = cfg.string("path") ?? "/"
        for (key, value) in [("method", method), ("path", path), ("domain", cfg.string("domain") ?? "")]
            where value.utf8.contains(where: { $0 <= 32 || $0 == 127 }) && !(key == "domain" && value.isEmpty) {
            cfg.diagnostics.error(cfg.sub(key), "must not contain spaces or control characters")
        }
        return HTTP1HealthProbe(method: method, path: path, domain: cfg.string("domain").flatMap { $0.isEmpty ? nil : $0 }, codes: codes)
    }
}

extension ConfigCompiler {
    /// MOSN's cluster `health_check`, with its defaults (timeout 1s, interval 15s, jitter 5ms,
    /// thresholds 1).
    func healthCheck(_ c: JSONObject, hosts: [HostConfig]) -> HealthCheckSettings? {
        guard let h = c.object("health_check") else { return nil }
        h.checkKeys(known: ["protocol", "timeout", "interval", "interval_jitter", "initial_delay_seconds", "healthy_threshold",
                            "unhealthy_threshold", "service_name", "check_config", "event_log_path", "common_callbacks"])
        if h.isNonEmpty("common_callbacks") { diagnostics.warn(h.sub("common_callbacks"), "Go callbacks are not run by Tern") }
        if h.isNonEmpty("event_log_path") { diagnostics.warn(h.sub("event_log_path"), "not written: health changes go to the default log") }
        guard let probe = HealthProbeRegistry.probe(protocolName: h.string("protocol") ?? "", h) else { return nil }
        let http = h.object("check_config")?.object("http_check_config")
        let timeout = (http?.duration("timeout", max: 3_600_000)).flatMap { $0 > 0 ? $0 : nil } ?? h.duration("timeout", max: 3_600_000).flatMap { $0 > 0 ? $0 : nil } ?? 1_000
        let interval = h.duration("interval", min: 0, max: 86_400_000).flatMap { $0 > 0 ? $0 : nil } ?? 15_000
        var addresses: [SocketAddress]?
        if let port = http?.int("port", min: 0, max: 65535), port > 0 {
            addresses = hosts.map { host in
                guard !host.address.isUnix, let colon = host.address.description.lastIndex(of: ":"),
                      let moved = SocketAddress.parse(String(host.address.description[..<colon]) + ":\(port)") else { return host.address }
                return moved
            }
        }
        return HealthCheckSettings(probe: probe, timeoutMS: timeout, intervalMS: interval,
                                   jitterMS: h.duration("interval_jitter", max: 86_400_000) ?? 5,
                                   initialDelayMS: h.duration("initial_delay_seconds", max: 86_400_000) ?? 0,
                                   healthyThreshold: h.int("healthy_threshold", min: 0, max: 1000).map { max($0, 1) } ?? 1,
                                   unhealthyThreshold: h.int("unhealthy_threshold", min: 0, max: 1000).map { max($0, 1) } ?? 1,
                                   addresses: addresses)
    }

    /// `outlier_detection` (a Tern extension in Envoy's names): `consecutive_5xx` (5),
    /// `base_ejection_time` (30s), `max_ejection_time` (300s), `max_ejection_percent` (10).
    func outlierDetection(_ c: JSONObject) -> HostHealth.OutlierSettings? {
        guard let o = c.object("outlier_detection") else { return nil }
        o.checkKeys(known: ["consecutive_5xx", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "interval"])
        if o.has("interval") { diagnostics.warn(o.sub("interval"), "not used: ejections end on their own time, checked at each pick") }
        let base = o.duration("base_ejection_time", min: 1, max: 86_400_000) ?? 30_000
        return HostHealth.OutlierSettings(consecutiveFailures: o.int("consecutive_5xx", min: 1, max: 1_000_000) ?? 5,
                                          baseEjectionMS: base,
                                          maxEjectionMS: o.duration("max_ejection_time", min: 1, max: 86_400_000) ?? max(300_000, base),
                                          maxEjectionPercent: o.int("max_ejection_percent", min: 0, max: 100) ?? 10)
    }
}

/// The health checker of the `tern-healthcheck` thread, found from a task on its loop's queue
/// (as `WorkerRegistry` finds a worker); only that thread dereferences it.
enum HealthCheckerRegistry {
    private static let checkers = Mutex<[ObjectIdentifier: UncheckedBox<HealthChecker>]>([:])
    static func register(_ checker: HealthChecker, on queue: TaskQueue) {
        checkers.withLock { $0[ObjectIdentifier(queue)] = UncheckedBox(checker) }
    }
    static func checker(on queue: TaskQueue) -> HealthChecker? {
        checkers.withLock { $0[ObjectIdentifier(queue)] }?.value
    }
}
