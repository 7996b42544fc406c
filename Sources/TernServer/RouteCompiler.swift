import TernCore

/// Compiles one `routers[]` entry (a router configuration) into a `RouteTable`.
struct RouteCompiler {
    let diagnostics: Diagnostics
    let clusterIndex: [String: Int]
    /// Clusters of type ORIGINAL_DST: only tcp_proxy can send to them so far.
    var originalDestinationClusters: Set<String> = []
    /// The compiled clusters, by the indices of `clusterIndex`: routes resolve their
    /// `metadata_match` against a cluster's subsets here, at load.
    var clusters: [ClusterConfig] = []

    func compile(_ r: JSONObject) -> RouteTable? {
        r.checkKeys(known: ["router_config_name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
                            "response_headers_to_add", "response_headers_to_remove"],
                    ignored: ["router_configs"])
        guard let name = r.requiredString("router_config_name") else { return nil }
        let configRequest = mutations(r, add: "request_headers_to_add", remove: "request_headers_to_remove")
        let configResponse = mutations(r, add: "response_headers_to_add", remove: "response_headers_to_remove")
        var hosts: [VirtualHost] = []
        var domains: [[String]] = []
        for vh in r.objects("virtual_hosts") {
            vh.checkKeys(known: ["name", "domains", "routers", "request_headers_to_add", "request_headers_to_remove",
                                 "response_headers_to_add", "response_headers_to_remove"],
                         ignored: ["require_tls", "virtual_clusters", "per_filter_config"])
            var hostRequest = configRequest, hostResponse = configResponse
            hostRequest.merge(mutations(vh, add: "request_headers_to_add", remove: "request_headers_to_remove"))
            hostResponse.merge(mutations(vh, add: "response_headers_to_add", remove: "response_headers_to_remove"))
            let list = vh.strings("domains") ?? []
            if list.isEmpty { diagnostics.error(vh.sub("domains"), "at least one domain is required (\"*\" for any)") }
            var routes: [Route] = []
            for router in vh.objects("routers") {
                if let route = compileRoute(router, request: hostRequest, response: hostResponse) { routes.append(route) }
            }
            hosts.append(VirtualHost(name: vh.string("name") ?? "", routes: routes))
            domains.append(list)
        }
        return RouteTable(name: name, virtualHosts: hosts, domains: domains)
    }

    func mutations(_ o: JSONObject, add: String, remove: String) -> HeaderMutations {
        var m = HeaderMutations()
        for entry in o.objects(add) {
            entry.checkKeys(known: ["header", "append"])
            guard let h = entry.object("header") else { diagnostics.error(entry.sub("header"), "required"); continue }
            h.checkKeys(known: ["key", "value"])
            guard let key = h.requiredString("key"), let value = h.string("value") ?? "" as String? else { continue }
            if !key.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) || key.isEmpty {
                diagnostics.error(h.sub("key"), "invalid header name \"\(key)\"")
                continue
            }
            if value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
                diagnostics.error(h.sub("value"), "header value must not contain CR, LF or NUL")
                continue
            }
            m.add.append(HeaderToAdd(name: key, value: value, append: entry.bool("append") ?? false))
        }
        for name in o.strings(remove) ?? [] { m.remove.append(Bytes.lowercased(name)) }
        return m
    }

    func regex(_ pattern: String, at path: String) -> RouteRegex? {
        do { return try RouteRegex(pattern) } catch {
            diagnostics.error(path, "invalid regular expression \"\(pattern)\": \(error)")
            return nil
        }
    }

    func compileRoute(_ router: JSONObject, request: HeaderMutations, response: HeaderMutations) -> Route? {
        router.checkKeys(known: ["match", "route", "direct_response", "redirect", "request_mirror_policies"],
                         ignored: ["metadata", "per_filter_config"])
        // MOSN builds a router entry without `match` (or with an empty one) as a header rule with
        // no headers, which matches every request, HTTP or bolt: its RPC samples rely on it.
        let match = router.object("match") ?? JSONObject(.object([:]), path: router.sub("match"), diagnostics: diagnostics)!
        match.checkKeys(known: ["prefix", "path", "regex", "headers"], ignored: ["variables", "dsl_expressions"])
        // Ignoring a match condition would widen the route to requests it was written to exclude.
        if match.isNonEmpty("variables") { match.refuse("variables", what: "matching on variables") }
        if match.isNonEmpty("dsl_expressions") { match.refuse("dsl_expressions", what: "matching on DSL expressions") }
        var path = PathMatch.any
        let kinds = ["prefix", "path", "regex"].filter { match.has($0) }
        if kinds.count > 1 { diagnostics.error(match.path, "only one of prefix, path and regex may be set") }
        if let p = match.string("prefix") { path = p.isEmpty ? .any : .prefix(Array(p.utf8)) }
        else if let p = match.string("path") { path = .exact(Array(p.utf8)) }
        else if let p = match.string("regex"), let r = regex(p, at: match.sub("regex")) { path = .regex(r) }
        let headers = headerMatchers(match, key: "headers")
        let actions = ["route", "direct_response", "redirect"].filter { router.has($0) }
        guard actions.count == 1 else {
            diagnostics.error(router.path, actions.isEmpty ? "one of route, direct_response or redirect is required"
                                                           : "only one of route, direct_response and redirect may be set")
            return nil
        }
        if !router.has("route") && router.has("request_mirror_policies") {
            diagnostics.warn(router.sub("request_mirror_policies"), "only requests routed to a cluster are mirrored; this entry answers itself")
        }
        if let d = router.object("direct_response") {
            d.checkKeys(known: ["status", "body"])
            guard let status = d.int("status", min: 100, max: 599) else { diagnostics.error(d.sub("status"), "required (100-599)"); return nil }
            var m = response
            m.remove = []
            return Route(path: path, headers: headers, action: .direct(status: status, body: Array((d.string("body") ?? "").utf8), headers: m))
        }
        if let r = router.object("redirect") {
            r.checkKeys(known: ["response_code", "path_redirect", "host_redirect", "scheme_redirect"])
            let code = r.int("response_code") ?? 301
            if ![301, 302, 303, 307, 308].contains(code) { diagnostics.error(r.sub("response_code"), "must be 301, 302, 303, 307 or 308") }
            return Route(path: path, headers: headers, action: .redirect(RedirectRoute(status: code, path: r.string("path_redirect"),
                                                                                       host: r.string("host_redirect"), scheme: r.string("scheme_redirect"))))
        }
        guard let route = router.object("route") else { return nil }
        route.checkKeys(known: ["cluster_name", "weighted_clusters", "prefix_rewrite", "host_rewrite", "timeout", "hash_policy", "metadata_match", "retry_policy",
                                "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"],
                        ignored: ["cluster_header", "cluster_variable", "upstream_protocol",
                                  "regex_rewrite", "auto_host_rewrite", "auto_host_rewrite_header", "mirror_policy", "metadata"])
        // These pick the cluster a request goes to; ignored, requests would reach clusters the
        // config keeps them from.
        for (key, what) in [("cluster_header", "choosing the cluster from a header"), ("cluster_variable", "choosing the cluster from a variable")]
            where route.isNonEmpty(key) {
            route.refuse(key, what: what)
        }
        let routeCriteria = metadataCriteria(route)
        var clusters: [WeightedCluster] = []
        if let name = route.string("cluster_name") {
            if let i = resolve(name, at: route.sub("cluster_name")) {
                clusters.append(WeightedCluster(clusterIndex: i, weight: 1, subset: subset(routeCriteria, of: i, at: route.sub("metadata_match"))))
            }
        }
        for w in route.objects("weighted_clusters") {
            w.checkKeys(known: ["cluster"])
            guard let c = w.object("cluster") else { diagnostics.error(w.sub("cluster"), "required"); continue }
            c.checkKeys(known: ["name", "weight", "metadata_match"])
            guard let name = c.requiredString("name") else { continue }
            guard let i = resolve(name, at: c.sub("name")) else { continue }
            // The entry's own pairs over the route's (Envoy's merge; MOSN takes the entry's alone).
            let own = metadataCriteria(c)
            let merged = routeCriteria.merging(own) { _, entry in entry }
            let at = own.isEmpty ? route.sub("metadata_match") : c.sub("metadata_match")
            clusters.append(WeightedCluster(clusterIndex: i, weight: c.int("weight", min: 0, max: 1_000_000) ?? 1,
                                            subset: subset(merged, of: i, at: at)))
        }
        if clusters.isEmpty {
            if !route.has("cluster_name") && !route.has("weighted_clusters") {
                diagnostics.error(route.path, "cluster_name or weighted_clusters is required")
            }
            return nil
        }
        var req = request, resp = response
        req.merge(mutations(route, add: "request_headers_to_add", remove: "request_headers_to_remove"))
        resp.merge(mutations(route, add: "response_headers_to_add", remove: "response_headers_to_remove"))
        let action = ClusterRoute(clusters: clusters, timeoutMS: route.duration("timeout") ?? 0,
                                  prefixRewrite: route.string("prefix_rewrite").map { Array($0.utf8) },
                                  hostRewrite: route.string("host_rewrite").map { Array($0.utf8) },
                                  requestHeaders: req, responseHeaders: resp, hashPolicy: hashPolicy(route, clusters: clusters),
                                  mirror: mirrorPolicy(router), retry: retryPolicy(route))
        return Route(path: path, headers: headers, action: .cluster(action))
    }

    /// `retry_policy` (`retry_on`, `num_retries`, `retry_timeout`). MOSN tries at least 3 times
    /// again whatever `num_retries` says; so does Tern (at most 10).
    func retryPolicy(_ route: JSONObject) -> RetryPolicy {
        guard let r = route.object("retry_policy") else { return RetryPolicy() }
        r.checkKeys(known: ["retry_on", "num_retries", "retry_timeout", "retryable_status_codes"])
        if r.isNonEmpty("retryable_status_codes") { r.refuse("retryable_status_codes", what: "retrying on chosen status codes") }
        let n = r.int("num_retries", min: 0, max: 10) ?? 3
        return RetryPolicy(retryOn: r.bool("retry_on") ?? false, numRetries: max(n, 3), perTryTimeoutMS: r.duration("retry_timeout", max: 3_600_000) ?? 0)
    }

    /// The router entry's `request_mirror_policies` (`cluster`, `percent`): used by a listener's
    /// `mirror` stream filter, as in MOSN. A percent above 100 mirrors every request (MOSN
    /// compares it with a draw below 100).
    func mirrorPolicy(_ router: JSONObject) -> MirrorPolicy? {
        guard let m = router.object("request_mirror_policies") else { return nil }
        m.checkKeys(known: ["cluster", "percent", "trace_sampled"])
        if m.bool("trace_sampled") == true {
            diagnostics.warn(m.sub("trace_sampled"), "not implemented (MOSN does not implement it either): every drawn request is mirrored")
        }
        guard let name = m.requiredString("cluster"), let index = resolve(name, at: m.sub("cluster")) else { return nil }
        let percent = m.int("percent", min: 0, max: Int(UInt32.max)) ?? 0
        if percent == 0 { diagnostics.warn(m.sub("percent"), "0 (or absent): no request is mirrored, as in MOSN") }
        return MirrorPolicy(clusterIndex: index, percent: min(percent, 100))
    }
}

extension RouteCompiler {
    /// `[{name, value, regex, case_sensitive}]` header matchers (routes, and the fault filter's `headers`).
    func headerMatchers(_ o: JSONObject, key: String) -> [HeaderMatcher] {
        var headers: [HeaderMatcher] = []
        for h in o.objects(key) {
            h.checkKeys(known: ["name", "value", "regex", "case_sensitive"])
            guard let name = h.requiredString("name") else { continue }
            let value = h.string("value") ?? ""
            let isRegex = h.bool("regex") ?? false
            var compiled: RouteRegex?
            if isRegex { compiled = regex(value, at: h.sub("value")); if compiled == nil { continue } }
            headers.append(HeaderMatcher(name: name, value: value, regex: compiled, caseSensitive: h.bool("case_sensitive") ?? true))
        }
        return headers
    }

    /// A route's cluster by name, or an error at `path`.
    func resolve(_ name: String, at path: String) -> Int? {
        guard let i = clusterIndex[name] else { diagnostics.error(path, "unknown cluster \"\(name)\""); return nil }
        if originalDestinationClusters.contains(name) {
            diagnostics.error(path, "cluster \"\(name)\" is ORIGINAL_DST: Tern sends only tcp_proxy connections to original destinations so far, not proxied requests")
            return nil
        }
        return i
    }
}

extension RouteCompiler {
    /// `metadata_match` as MOSN writes it: `{"filter_metadata": {"mosn.lb": {"key": "value"}}}`.
    func metadataCriteria(_ o: JSONObject) -> [String: String] {
        guard let m = o.object("metadata_match") else { return [:] }
        m.checkKeys(known: ["filter_metadata"])
        guard let f = m.object("filter_metadata") else { return [:] }
        f.checkKeys(known: ["mosn.lb"])
        return f.stringMap("mosn.lb") ?? [:]
    }

    /// The hosts of cluster `index` that `criteria` allow, resolved now so a request only switches.
    func subset(_ criteria: [String: String], of index: Int, at path: String) -> HostSubset {
        if criteria.isEmpty || index >= clusters.count { return .all }
        let cluster = clusters[index]
        let wanted = MetadataCriteria(criteria)
        // MOSN would send such a request to any host: routing weaker than written.
        guard let table = cluster.subsets else {
            diagnostics.error(path, "cluster \"\(cluster.name)\" has no lb_subset_config with subset_selectors, so metadata_match \(wanted) cannot pick its hosts")
            return .all
        }
        let found = table.resolve(wanted)
        // A STRICT_DNS cluster's subsets come with its first answer: no warning before it.
        if found == .fallback && !(cluster.resolvesNames && cluster.hosts.isEmpty) {
            let outcome: String
            switch table.fallback {
            case .noFallback: outcome = "every request of this route gets no host (503)"
            case .anyEndpoint: outcome = "requests go to any host"
            case .defaultSubset: outcome = "requests go to the default subset"
            }
            diagnostics.warn(path, "no subset of cluster \"\(cluster.name)\" is \(wanted) (subsets: \(table.criteria.map(\.description).joined(separator: ", "))); fall_back_policy \(table.fallback.name): \(outcome)")
        }
        return found
    }

    /// MOSN's `hash_policy`: its first entry, `header.key`, `cookie.name` or `source_ip` (the
    /// default). Only the hash balancers (LB_MAGLEV, LB_RING_HASH) read it.
    func hashPolicy(_ route: JSONObject, clusters: [WeightedCluster]) -> HashPolicy {
        guard let entries = route.array("hash_policy"), !entries.isEmpty else { return .sourceAddress }
        let hashing = clusters.contains { $0.clusterIndex < self.clusters.count && LoadBalancerRegistry.hashing.contains(self.clusters[$0.clusterIndex].lbType) }
        if !hashing {
            diagnostics.warn(route.sub("hash_policy"), "no cluster of this route has a hash balancer (\(LoadBalancerRegistry.hashing.sorted().joined(separator: ", "))); unused")
        }
        if entries.count > 1 { diagnostics.warn(route.sub("hash_policy"), "only the first entry is used, as in MOSN") }
        guard let first = JSONObject(entries[0].value, path: entries[0].path, diagnostics: diagnostics) else { return .sourceAddress }
        first.checkKeys(known: ["header", "cookie", "source_ip"])
        let kinds = ["header", "cookie", "source_ip"].filter { first.has($0) }
        if kinds.count > 1 { diagnostics.error(first.path, "only one of header, cookie and source_ip may be set") }
        if let h = first.object("header") {
            h.checkKeys(known: ["key"])
            guard let key = h.requiredString("key") else { return .sourceAddress }
            if key.isEmpty { diagnostics.error(h.sub("key"), "must name a header") }
            return .header(key)
        }
        if let c = first.object("cookie") {
            // MOSN reads path and ttl but does not use them (they would shape a cookie it sets).
            c.checkKeys(known: ["name"], ignored: ["path", "ttl"], note: "not used (Tern sets no cookie, nor does MOSN); ignored")
            guard let name = c.requiredString("name") else { return .sourceAddress }
            if name.isEmpty { diagnostics.error(c.sub("name"), "must name a cookie") }
            return .cookie(name: Array(name.utf8))
        }
        return .sourceAddress
    }
}
