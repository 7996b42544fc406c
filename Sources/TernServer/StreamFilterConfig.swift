import TernCore

/// What a stream filter's config reader gets besides its own config.
struct StreamFilterContext {
    let clusterIndex: [String: Int]
    let diagnostics: Diagnostics
}

/// How one stream filter type reads its `config`; nil after reporting an error (or when the
/// filter would do nothing, with a warning).
protocol StreamFilterKind: Sendable {
    func compile(_ config: JSONObject, context: StreamFilterContext) -> StreamFilter?
}

/// Stream filters by MOSN's `type`: a new filter is its file in TernCore/Stream/Filters plus a
/// reader and one line here.
enum StreamFilterRegistry {
    static let kinds: [String: StreamFilterKind] = [
        "ip_access": IPAccessKind(),
        "payload_limit": PayloadLimitKind(),
        "fault": FaultKind(),
        "flowControlFilter": FlowControlKind(),
        "jwt_authn": JWTAuthnKind(),
        "mirror": MirrorKind(),
        "fault_tolerance": FaultToleranceKind(),
    ]
}

extension ConfigCompiler {
    /// A listener's `stream_filters`, compiled into the plan its proxy filter runs. They can deny,
    /// delay or answer requests, so a type Tern does not run is an error naming its path, never a
    /// warning. MOSN's bolt `healthcheck` filter (its RPC samples) is accepted: Tern answers
    /// caller heartbeats itself. Filters run on proxied requests only, so a listener whose bytes
    /// can reach tcp_proxy (or that has no proxy filter) cannot take them.
    func compileStreamFilters(_ l: JSONObject, networkFilterTypes: [String], clusterIndex: [String: Int]) -> StreamFilterPlan? {
        let context = StreamFilterContext(clusterIndex: clusterIndex, diagnostics: diagnostics)
        var filters: [StreamFilter] = []
        var enforcing = false
        for f in l.objects("stream_filters") {
            f.checkKeys(known: ["type", "config", "go_plugin_config"])
            if f.isNonEmpty("go_plugin_config") { f.refuse("go_plugin_config", what: "Go plugin stream filters") }
            guard let type = f.requiredString("type") else { continue }
            let config = f.object("config") ?? JSONObject(.object([:]), path: f.sub("config"), diagnostics: diagnostics)!
            if type == "healthcheck" {
                if config.bool("passthrough") == true {
                    diagnostics.error(config.sub("passthrough"), "true is not supported: Tern answers bolt heartbeats itself and passes none through")
                } else {
                    diagnostics.warn(f.path, "healthcheck: Tern answers bolt heartbeats itself; nothing to run")
                }
                continue
            }
            guard let kind = StreamFilterRegistry.kinds[type] else {
                let known = (StreamFilterRegistry.kinds.keys.sorted() + ["healthcheck"]).joined(separator: ", ")
                diagnostics.error(f.sub("type"), "stream filter \"\(type)\" is not supported by Tern yet (supported: \(known)); remove it or run MOSN")
                continue
            }
            enforcing = true
            if let filter = kind.compile(config, context: context) { filters.append(filter) }
        }
        if enforcing {
            if !networkFilterTypes.contains("proxy") {
                diagnostics.error(l.sub("stream_filters"), "stream filters run on proxied requests, and this listener has no proxy network filter")
            } else if networkFilterTypes.contains("tcp_proxy") {
                diagnostics.error(l.sub("stream_filters"), "connections handed to tcp_proxy (fallback_for_unknown_protocol) would bypass the stream filters; use them on a listener without tcp_proxy")
            }
        }
        guard !filters.isEmpty else { return nil }
        let plan = StreamFilterPlan(filters)
        // forward: false removes the token header from HTTP requests; a bolt call's header map is
        // forwarded as it came, so on a listener that may take bolt the token would leak upstream.
        if !plan.strippedRequestHeaders.isEmpty, let proxy = proxyProtocol(l), proxy.lowercased() != "http1" {
            diagnostics.error(l.sub("stream_filters"), "jwt_authn with forward false (or absent, Envoy's default) removes the token header from HTTP requests, but this listener's proxy takes \(proxy), and Tern forwards bolt calls' headers unchanged: set forward: true on its providers or use an Http1 listener")
        }
        return plan
    }

    /// The listener's proxy filter's downstream_protocol, if any.
    func proxyProtocol(_ l: JSONObject) -> String? {
        for chain in l.objects("filter_chains") {
            for f in chain.objects("filters") where f.string("type") == "proxy" {
                return f.object("config")?.string("downstream_protocol") ?? "Auto"
            }
        }
        return nil
    }
}

/// `ip_access`: `default_action`, `header`, `ips[]` of `{action, addrs}` (addresses or CIDRs).
struct IPAccessKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        c.checkPolicyKeys(["default_action", "header", "ips"])
        let diagnostics = context.diagnostics
        var ok = true
        let defaultAllow = action(c, "default_action", absent: "allow", &ok)
        var rules: [IPAccessFilter.Rule] = []
        for entry in c.objects("ips") {
            entry.checkPolicyKeys(["action", "addrs"])
            let deny = !action(entry, "action", absent: nil, &ok)
            guard let items = entry.array("addrs"), !items.isEmpty else {
                diagnostics.error(entry.sub("addrs"), "at least one address or CIDR is required")
                ok = false
                continue
            }
            var ranges: [AddressRange] = []
            for item in items {
                guard case .string(let text) = item.value, let range = addressRange(text) else {
                    diagnostics.error(item.path, "expected an IP address or a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\"")
                    ok = false
                    continue
                }
                ranges.append(range)
            }
            rules.append(IPAccessFilter.Rule(deny: deny, ranges: ranges))
        }
        guard ok else { return nil }
        return .ipAccess(IPAccessFilter(rules: rules, header: c.string("header"), defaultAllow: defaultAllow))
    }

    /// "allow" or "deny" (true: allow). MOSN reads anything but "deny" as allow; a typo that
    /// silently allows is an error here.
    func action(_ o: JSONObject, _ key: String, absent: String?, _ ok: inout Bool) -> Bool {
        let text = o.string(key) ?? absent
        switch text?.lowercased() {
        case "allow"?: return true
        case "deny"?: return false
        case "" where absent != nil: return true
        case nil: o.diagnostics.error(o.sub(key), "required: \"allow\" or \"deny\"")
        default: o.diagnostics.error(o.sub(key), "\"\(text!)\" is neither \"allow\" nor \"deny\"")
        }
        ok = false
        return true
    }

    /// "a.b.c.d", "v6", "a.b.c.d/len" or "v6/len".
    func addressRange(_ text: String) -> AddressRange? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = parts.first.map(String.init) else { return nil }
        let fullLength = address.contains(":") ? 128 : 32
        guard let length = parts.count == 2 ? Int(parts[1]) : fullLength else { return nil }
        return AddressRange(address: address, length: length)
    }
}

/// `payload_limit`: `max_entity_size` (bytes; 0 or absent: no limit, as in MOSN), `http_status`
/// (default 413).
struct PayloadLimitKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        // MOSN's Go struct tag is "max_entity_size " (with a space), so MOSN itself never reads
        // the documented key; Tern reads both spellings.
        c.checkPolicyKeys(["max_entity_size", "max_entity_size ", "http_status"])
        let key = c.has("max_entity_size") ? "max_entity_size" : "max_entity_size "
        let status = c.int("http_status", min: 100, max: 599) ?? 413
        guard let max = c.int(key, min: 0, max: Int(Int32.max)) else {
            if !c.has(key) { context.diagnostics.warn(c.sub("max_entity_size"), "absent: no limit, so payload_limit does nothing") }
            return nil
        }
        if max == 0 {
            context.diagnostics.warn(c.sub(key), "0 means no limit (as in MOSN): payload_limit does nothing")
            return nil
        }
        return .payloadLimit(PayloadLimitFilter(maxBytes: Int64(max), status: status))
    }
}

/// `mirror`: `amplification` (copies per mirrored request, MOSN's default 1) and `broadcast`
/// (one copy to every host of the shadow cluster, and Tern answers 200). Where copies go and how
/// often is the route's `request_mirror_policies`.
struct MirrorKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        c.checkPolicyKeys(["amplification", "broadcast"])
        let errorsBefore = context.diagnostics.errors.count
        // MOSN reads any number above 0 (truncated) and falls back to 1 otherwise; a copy count
        // that is not a whole number from 1 to 64 is an error here.
        let amplification = c.int("amplification", min: 1, max: 64) ?? 1
        let broadcast = c.bool("broadcast") ?? false
        guard context.diagnostics.errors.count == errorsBefore else { return nil }
        return .mirror(MirrorFilter(amplification: amplification, broadcast: broadcast))
    }
}

/// `fault_tolerance` (MOSN's send filter, its camelCase keys and defaults): `enabled`,
/// `exceptionTypes` (502, 503, 504), `timeWindow` (ms, 10000; at least 10), `leastWindowCount`
/// (10; above 0), `exceptionRateMultiple` (5; above 1), `maxIpCount` (1), `maxIpRatio`,
/// `recoverTime` (ms, 900000), `taskSize` (MOSN's goroutine pool: nothing to do here).
struct FaultToleranceKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        c.checkPolicyKeys(["enabled", "exceptionTypes", "timeWindow", "leastWindowCount", "exceptionRateMultiple",
                           "maxIpCount", "maxIpRatio", "recoverTime", "taskSize"])
        let diagnostics = context.diagnostics
        let errorsBefore = diagnostics.errors.count
        var statuses: [Int] = []
        if let items = c.array("exceptionTypes") {
            for item in items {
                guard case .number(let d, _) = item.value, d == d.rounded(), d >= 100, d <= 599 else {
                    diagnostics.error(item.path, "expected a status code (100-599)")
                    continue
                }
                statuses.append(Int(d))
            }
        } else {
            statuses = [502, 503, 504]
        }
        let window = c.int("timeWindow", min: 0, max: 86_400_000).map { $0 == 0 ? 10_000 : $0 } ?? 10_000
        if window < 10 { diagnostics.error(c.sub("timeWindow"), "must be at least 10 (ms), as MOSN requires") }
        let least = c.int("leastWindowCount", min: 0, max: 1_000_000_000).map { $0 == 0 ? 10 : $0 } ?? 10
        let multiple = c.double("exceptionRateMultiple").flatMap { $0 == 0 ? nil : $0 } ?? 5
        if multiple <= 1 { diagnostics.error(c.sub("exceptionRateMultiple"), "must be above 1, as MOSN requires") }
        let maxCount = c.int("maxIpCount", min: 0, max: 1_000_000).map { $0 == 0 ? 1 : $0 } ?? 1
        let ratio = c.double("maxIpRatio") ?? 0
        if ratio < 0 || ratio > 1 { diagnostics.error(c.sub("maxIpRatio"), "must be between 0 and 1") }
        let recover = c.int("recoverTime", min: 0, max: 86_400_000).map { $0 == 0 ? 900_000 : $0 } ?? 900_000
        guard diagnostics.errors.count == errorsBefore else { return nil }
        guard c.bool("enabled") == true else {
            diagnostics.warn(c.sub("enabled"), "not true: fault_tolerance does nothing, as in MOSN")
            return nil
        }
        return .faultTolerance(FaultToleranceFilter(exceptionStatuses: statuses, timeWindowMS: Int64(window), leastWindowCount: least,
                                                    exceptionRateMultiple: multiple, maxHostsOut: maxCount, maxHostRatio: ratio,
                                                    recoverMS: Int64(recover)))
    }
}

/// `fault`: `delay` {`fixed_delay`, `percentage`}, `abort` {`status`, `percentage`},
/// `upstream_cluster`, `headers` (route header matchers). Percentages are whole 0-100 as in MOSN.
struct FaultKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        c.checkPolicyKeys(["delay", "abort", "upstream_cluster", "headers"])
        let diagnostics = context.diagnostics
        let errorsBefore = diagnostics.errors.count
        var delayMS: Int64 = 0, delayPercent = 0
        if let d = c.object("delay") {
            d.checkPolicyKeys(["fixed_delay", "percentage"])
            delayMS = d.duration("fixed_delay", max: 3_600_000) ?? 0
            let percent = d.int("percentage", min: 0, max: 100)
            delayPercent = percent ?? 0
            if (delayMS == 0 && d.has("fixed_delay") == false) || percent == 0 || !d.has("percentage") { diagnostics.warn(d.path, "fixed_delay or percentage is 0 (or absent): no delay, as in MOSN") }
        }
        var abortStatus: Int?, abortPercent = 0
        if let a = c.object("abort") {
            a.checkPolicyKeys(["status", "percentage"])
            let percent = a.int("percentage", min: 0, max: 100)
            abortPercent = percent ?? 0
            abortStatus = a.int("status", min: 200, max: 599)
            if abortStatus == nil && !a.has("status") { diagnostics.error(a.sub("status"), "required: the status aborted requests are answered with (200-599)") }
            if percent == 0 || !a.has("percentage") { diagnostics.warn(a.path, "percentage is 0 (or absent): no abort, as in MOSN") }
        }
        var clusterIndex = -1
        if let name = c.string("upstream_cluster"), !name.isEmpty {
            if let i = context.clusterIndex[name] { clusterIndex = i }
            else { diagnostics.error(c.sub("upstream_cluster"), "unknown cluster \"\(name)\"") }
        }
        let headers = RouteCompiler(diagnostics: diagnostics, clusterIndex: context.clusterIndex).headerMatchers(c, key: "headers")
        guard diagnostics.errors.count == errorsBefore else { return nil }
        return .fault(FaultFilter(delayMS: delayMS, delayPercent: delayPercent, abortStatus: abortStatus, abortPercent: abortPercent,
                                  clusterIndex: clusterIndex, headers: headers))
    }
}

/// `flowControlFilter` (MOSN's Sentinel flow rules): `global_switch`, `limit_key_type` (PATH, ARG,
/// URI), `action` {`status`, `body`}, `rules[]` {`resource`, `threshold`, ...}. Rule keys Sentinel
/// reads for behaviours Tern does not have (warm-up, queueing, relations) are refused unless they
/// hold their defaults.
struct FlowControlKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        c.checkPolicyKeys(["app_name", "log_path", "callback_name", "global_switch", "monitor", "limit_key_type",
                           "action", "rules", "dynamic_data_resources", "direction"])
        let diagnostics = context.diagnostics
        let errorsBefore = diagnostics.errors.count
        _ = c.string("app_name"); _ = c.string("log_path")   // Sentinel's own log files: Tern logs as usual
        if let name = c.string("callback_name"), !name.isEmpty {
            diagnostics.error(c.sub("callback_name"), "custom callbacks are Go plugins in MOSN; Tern has only the default behaviour")
        }
        if c.isNonEmpty("dynamic_data_resources") { c.refuse("dynamic_data_resources", what: "rules from a data source (nacos)") }
        if let direction = c.string("direction"), !["inbound", "outbound"].contains(direction.lowercased()) {
            diagnostics.error(c.sub("direction"), "expected \"inbound\" or \"outbound\"")
        }
        if c.bool("monitor") == true {
            diagnostics.warn(c.sub("monitor"), "MOSN reads monitor but never uses it: requests over a limit are still blocked")
        }
        var keyType = FlowControlFilter.KeyType.path
        switch c.string("limit_key_type") {
        case nil, "PATH"?: keyType = .path
        case "ARG"?: keyType = .arg
        case "URI"?: keyType = .uri
        case let other?: diagnostics.error(c.sub("limit_key_type"), "\"\(other)\" is not PATH, ARG or URI (the key types MOSN's flowControlFilter accepts)")
        }
        var status = 509, body = "current request is limited"   // MOSN's defaults (api.LimitExceededCode)
        if let a = c.object("action") {
            a.checkPolicyKeys(["status", "body"])
            status = a.int("status", min: 100, max: 599) ?? status
            body = a.string("body") ?? body
        }
        var rules: [FlowControlFilter.Rule] = []
        for r in c.objects("rules") {
            r.checkPolicyKeys(["id", "resource", "threshold", "grade", "limitapp", "strategy", "controlbehavior",
                               "tokencalculatestrategy", "relationstrategy", "statintervalinms"])
            let resource = r.requiredString("resource")
            if resource == "" { diagnostics.error(r.sub("resource"), "must not be empty") }
            // Sentinel v0 spelling (`grade` 1: QPS; 0 counted threads) and v1 keys: only the
            // default behaviour, direct reject on a per-second count, is built.
            requireDefault(r, "grade", allowed: [1], "1 (QPS) is the only grade Tern counts")
            requireDefault(r, "strategy", allowed: [0], "only 0 (direct) is supported")
            requireDefault(r, "relationStrategy", allowed: [0], "only 0 (the resource itself) is supported")
            requireDefault(r, "controlBehavior", allowed: [0], "only 0 (reject) is supported")
            requireDefault(r, "tokenCalculateStrategy", allowed: [0], "only 0 (direct) is supported")
            requireDefault(r, "statIntervalInMs", allowed: [0, 1000], "Tern counts in one-second windows")
            if let app = r.string("limitApp"), !["", "default"].contains(app) {
                diagnostics.error(r.sub("limitApp"), "per-caller limits are not supported")
            }
            var threshold: UInt32?
            switch r.present("threshold") {
            case .number(let d, _)? where d >= 0 && d < 4.0e9: threshold = UInt32(d.rounded(.down))
            case nil: diagnostics.error(r.sub("threshold"), "required: requests per second")
            default: diagnostics.error(r.sub("threshold"), "expected a number of requests per second (0 or more)")
            }
            if let resource, !resource.isEmpty, let threshold { rules.append(FlowControlFilter.Rule(resource: resource, threshold: threshold)) }
        }
        guard diagnostics.errors.count == errorsBefore else { return nil }
        if c.bool("global_switch") != true {
            diagnostics.warn(c.sub("global_switch"), "false or absent: flow control is off, as in MOSN")
            return nil
        }
        if rules.isEmpty {
            diagnostics.warn(c.sub("rules"), "no rules: nothing is limited")
            return nil
        }
        return .flowControl(FlowControlFilter(keyType: keyType, rules: rules, status: status, body: body))
    }

    func requireDefault(_ r: JSONObject, _ key: String, allowed: [Int], _ why: String) {
        if let v = r.int(key), !allowed.contains(v) { r.diagnostics.error(r.sub(key), "\(v): \(why)") }
    }
}

extension JSONObject {
    /// A stream filter's config: any key Tern does not read is an error, not a warning, since a
    /// misspelt rule (`ipz`) would otherwise be dropped and requests go unchecked.
    func checkPolicyKeys(_ known: Set<String>) {
        let lowered = Set(known.map { $0.lowercased() })
        for key in dict.keys.sorted() where !lowered.contains(key.lowercased()) {
            let hint = nearestKey(to: key, among: known).map { "; did you mean `\($0)`?" } ?? " (known: \(known.sorted().joined(separator: ", ")))"
            diagnostics.error(sub(key), "unknown key in a stream filter's config\(hint)")
        }
    }
}
