import TernCore

struct TCPProxyFilterPlan: NetworkFilterPlan {
    let settings: TCPProxySettings
    func makeFilter(worker: Worker) -> NetworkFilter { TCPProxyFilter(worker: worker, settings: settings) }
}

/// The `tcp_proxy` network filter's config, MOSN's `StreamProxy`: `cluster`, or `routes` matched
/// on the connection's addresses; `idle_timeout`, `max_connect_attempts`, `stat_prefix`.
struct TCPProxyFilterKind: NetworkFilterKind {
    func compile(_ c: JSONObject, context: FilterContext, diagnostics: Diagnostics) -> NetworkFilterPlan? {
        c.checkKeys(known: ["stat_prefix", "cluster", "idle_timeout", "max_connect_attempts", "routes"])
        var routes: [TCPProxyRoute] = []
        // As in MOSN, `cluster` takes every connection and `routes` are then not consulted.
        if let name = c.string("cluster"), !name.isEmpty {
            guard let index = clusterIndex(name, at: c.sub("cluster"), context: context, diagnostics: diagnostics) else { return nil }
            routes = [TCPProxyRoute(clusterIndex: index)]
            for r in c.objects("routes") { _ = route(r, context: context, diagnostics: diagnostics) }   // still checked
        } else {
            routes = c.objects("routes").compactMap { route($0, context: context, diagnostics: diagnostics) }
            if routes.isEmpty && diagnostics.errors.isEmpty {
                diagnostics.error(c.path, "tcp_proxy needs `cluster` or at least one route in `routes`")
                return nil
            }
        }
        let idle = idleTimeout(c, diagnostics: diagnostics) ?? context.idleTimeoutMS
        let attempts = c.int("max_connect_attempts", min: 0, max: 100).flatMap { $0 > 0 ? $0 : nil }
        let settings = TCPProxySettings(listenerName: context.listenerName, statPrefix: c.string("stat_prefix") ?? "tcp_proxy",
                                        routes: routes, idleTimeoutMS: idle, maxConnectAttempts: attempts)
        return TCPProxyFilterPlan(settings: settings)
    }

    /// MOSN reads `idle_timeout` into a Go `*time.Duration` with plain JSON decoding: a number of
    /// nanoseconds (a duration string there fails silently and leaves the default). Both forms are
    /// read here; absent or 0 means the listener's `connection_idle_timeout`.
    func idleTimeout(_ c: JSONObject, diagnostics: Diagnostics) -> Int64? {
        let ms: Int64?
        if case .number(let ns, _)? = c.present("idle_timeout"), ns != 0 {
            guard ns > 0, ns < Double(maxDurationMS) * 1e6 else {
                diagnostics.error(c.sub("idle_timeout"), "must be a duration between 0 and \(formatDuration(maxDurationMS)) (a string such as \"30s\", or nanoseconds)")
                return nil
            }
            ms = max(1, Int64((ns / 1e6).rounded(.up)))
        } else {
            ms = c.duration("idle_timeout")
        }
        return ms.flatMap { $0 > 0 ? $0 : nil }
    }

    func route(_ r: JSONObject, context: FilterContext, diagnostics: Diagnostics) -> TCPProxyRoute? {
        // Go's JSON names (SourceAddrs, any case) and the snake_case spelling both read.
        r.checkKeys(known: ["cluster", "sourceaddrs", "destinationaddrs", "sourceport", "destinationport",
                            "source_addrs", "destination_addrs", "source_port", "destination_port"])
        guard let name = r.requiredString("cluster") else { return nil }
        guard let index = clusterIndex(name, at: r.sub("cluster"), context: context, diagnostics: diagnostics) else { return nil }
        return TCPProxyRoute(clusterIndex: index,
                             sources: ranges(r, "sourceaddrs", "source_addrs", diagnostics: diagnostics),
                             destinations: ranges(r, "destinationaddrs", "destination_addrs", diagnostics: diagnostics),
                             sourcePorts: ports(r, "sourceport", "source_port", diagnostics: diagnostics),
                             destinationPorts: ports(r, "destinationport", "destination_port", diagnostics: diagnostics))
    }

    func clusterIndex(_ name: String, at path: String, context: FilterContext, diagnostics: Diagnostics) -> Int? {
        guard let i = context.clusterIndex[name] else {
            diagnostics.error(path, "unknown cluster \"\(name)\"")
            return nil
        }
        return i
    }

    /// The key as the file spells it (`SourceAddrs`, `sourceAddrs`, `source_addrs`), so errors name it so.
    func writtenKey(_ r: JSONObject, _ key: String, _ snake: String) -> String {
        r.dict.keys.sorted().first { [key, snake].contains($0.lowercased()) } ?? key
    }

    /// MOSN's `CidrRange` list: `[{"address": "10.0.0.0", "length": 8}]`.
    func ranges(_ r: JSONObject, _ key: String, _ snake: String, diagnostics: Diagnostics) -> [AddressRange] {
        let k = writtenKey(r, key, snake)
        var out: [AddressRange] = []
        for item in r.objects(k) {
            item.checkKeys(known: ["address", "length"])
            guard let address = item.requiredString("address") else { continue }
            guard let length = item.int("length", min: 0, max: 128) else {
                if !item.has("length") { diagnostics.error(item.sub("length"), "required") }
                continue
            }
            guard let range = AddressRange(address: address, length: length) else {
                diagnostics.error(item.path, "invalid CIDR \(address)/\(length) (an IP address, and a length of at most 32 for IPv4, 128 for IPv6)")
                continue
            }
            out.append(range)
        }
        return out
    }

    /// MOSN's port list: "80", "8000-8100", comma-separated; where MOSN skips an entry it cannot
    /// read (and so matches less than written), this is an error.
    func ports(_ r: JSONObject, _ key: String, _ snake: String, diagnostics: Diagnostics) -> [ClosedRange<UInt16>] {
        let k = writtenKey(r, key, snake)
        guard let text = r.string(k), !text.isEmpty else { return [] }
        var out: [ClosedRange<UInt16>] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0.trimmingSpaces) }
            if bounds.count == 1, let p = bounds[0] { out.append(p...p); continue }
            if bounds.count == 2, let low = bounds[0], let high = bounds[1], low <= high { out.append(low...high); continue }
            diagnostics.error(r.sub(k), "invalid port or port range \"\(item)\" (expected e.g. \"80\" or \"8000-8100\", comma-separated)")
        }
        return out
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
