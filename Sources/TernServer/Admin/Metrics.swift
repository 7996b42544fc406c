import CTernShim
import Glibc
import TernCore

/// The counters the admin API and the Prometheus scrape show, described once: each field has
/// its key in `/api/v1/stats` JSON, its Prometheus family (name, labels, type) and its meaning.
struct MetricField<Source>: Sendable {
    enum Kind: String, Sendable { case counter, gauge }
    /// Key in the admin API's JSON and stats_glob.
    let key: String
    let family: String
    let labels: [(String, String)]
    let kind: Kind
    let help: String
    let read: @Sendable (Source) -> Int

    init(_ key: String, _ family: String, _ labels: [(String, String)], _ kind: Kind, _ help: String, _ read: @escaping @Sendable (Source) -> Int) {
        self.key = key; self.family = family; self.labels = labels; self.kind = kind; self.help = help; self.read = read
    }

    init(_ key: String, _ family: String, _ kind: Kind, _ help: String, _ read: @escaping @Sendable (Source) -> Int) {
        self.init(key, family, [], kind, help, read)
    }
}

enum MetricFields {
    static let listener: [MetricField<ListenerStats>] = [
        .init("connections_total", "tern_listener_connections_total", .counter,
              "Client connections that reached the listener's network filters (after TLS when it terminates TLS)", { $0.connectionsTotal }),
        .init("connections_active", "tern_listener_connections_active", .gauge, "Client connections open now", { $0.connectionsActive }),
        .init("requests_total", "tern_listener_requests_total", .counter, "Requests routed (HTTP/1 and bolt), whatever the answer", { $0.requests }),
        .init("http_responses_1xx", "tern_listener_http_responses_total", [("class", "1xx")], .counter, httpResponsesHelp, { $0.responses1xx }),
        .init("http_responses_2xx", "tern_listener_http_responses_total", [("class", "2xx")], .counter, httpResponsesHelp, { $0.responses2xx }),
        .init("http_responses_3xx", "tern_listener_http_responses_total", [("class", "3xx")], .counter, httpResponsesHelp, { $0.responses3xx }),
        .init("http_responses_4xx", "tern_listener_http_responses_total", [("class", "4xx")], .counter, httpResponsesHelp, { $0.responses4xx }),
        .init("http_responses_5xx", "tern_listener_http_responses_total", [("class", "5xx")], .counter, httpResponsesHelp, { $0.responses5xx }),
        .init("bolt_responses_success", "tern_listener_bolt_responses_total", [("result", "success")], .counter, boltResponsesHelp, { $0.boltResponsesSuccess }),
        .init("bolt_responses_failed", "tern_listener_bolt_responses_total", [("result", "failed")], .counter, boltResponsesHelp, { $0.boltResponsesFailed }),
        .init("received_bytes_total", "tern_listener_received_bytes_total", .counter,
              "Bytes read from clients (after TLS decryption; tcp_proxy's spliced bytes are not counted)", { $0.bytesIn }),
        .init("sent_bytes_total", "tern_listener_sent_bytes_total", .counter,
              "Bytes written to clients (before TLS encryption; tcp_proxy's spliced bytes are not counted)", { $0.bytesOut }),
    ]
    static let httpResponsesHelp = "HTTP/1 responses written to clients, by status class (the upstream's and Tern's own)"
    static let boltResponsesHelp = "Bolt responses written to callers: status SUCCESS, or any other status"

    /// A cluster's counters with its idle pooled connections.
    struct ClusterView { let stats: ClusterStats; let idle: Int; var outOfRotation = 0 }

    static let cluster: [MetricField<ClusterView>] = [
        .init("requests_total", "tern_cluster_requests_total", .counter, "Requests routed to the cluster", { $0.stats.requests }),
        .init("requests_active", "tern_cluster_requests_active", .gauge, "Requests sent and not yet answered", { $0.stats.inFlight }),
        .init("http_responses_2xx", "tern_cluster_http_responses_total", [("class", "2xx")], .counter, clusterResponsesHelp, { $0.stats.responses2xx }),
        .init("http_responses_4xx", "tern_cluster_http_responses_total", [("class", "4xx")], .counter, clusterResponsesHelp, { $0.stats.responses4xx }),
        .init("http_responses_5xx", "tern_cluster_http_responses_total", [("class", "5xx")], .counter, clusterResponsesHelp, { $0.stats.responses5xx }),
        .init("connect_failures_total", "tern_cluster_connect_failures_total", .counter,
              "Upstream connects that failed or timed out (TLS handshakes included)", { $0.stats.connectFailures }),
        .init("timeouts_total", "tern_cluster_timeouts_total", .counter, "Requests that hit the route timeout or the idle timeout", { $0.stats.timeouts }),
        .init("upstream_overflow_total", "tern_cluster_upstream_overflow_total", .counter,
              "Requests and connections refused by the cluster's circuit_breakers limits", { $0.stats.overflows }),
        .init("retries_total", "tern_cluster_retries_total", .counter,
              "Requests tried again on another host after a failure (retry_policy)", { $0.stats.retries }),
        .init("retry_overflows_total", "tern_cluster_retry_overflows_total", .counter,
              "Retries the retry budget or max_retries refused", { $0.stats.retryOverflows }),
        .init("outlier_ejections_total", "tern_cluster_outlier_ejections_total", .counter,
              "Hosts ejected by outlier_detection (failures in a row)", { $0.stats.ejections }),
        .init("hosts_out_of_rotation", "tern_cluster_hosts_out_of_rotation", .gauge,
              "Hosts now failing their health_check or ejected by outlier_detection", { $0.outOfRotation }),
        .init("connections_opened_total", "tern_cluster_connections_opened_total", .counter, "Upstream connections opened", { $0.stats.connectionsOpened }),
        .init("connections_reused_total", "tern_cluster_connections_reused_total", .counter,
              "HTTP/1 requests sent on a pooled keep-alive connection", { $0.stats.connectionsReused }),
        .init("idle_connections", "tern_cluster_idle_connections", .gauge, "HTTP/1 upstream connections idle in the pools", { $0.idle }),
    ]
    static let clusterResponsesHelp = "HTTP/1 answers for requests routed to the cluster, by status class (Tern's own error answers included)"
    static let boltStatusHelp = "Bolt answers for requests routed to the cluster, by bolt response status"
    static let hostRequestsHelp = "Requests sent to each host of a cluster, as the load balancer chose them"
    static let hostResponseTimeHelp = "The same response times per host of the cluster"
    static let responseTimeHelp = "Time from a request queued for the cluster to its response read (HTTP/1: the head; bolt: the frame), on the worker's loop clock (millisecond resolution)"

    /// Cumulative counts by upper bound: ("1", n), ("2", n) … ("+Inf", count), bounds in milliseconds.
    static func cumulative(_ h: LatencyHistogram) -> [(bound: String, count: Int)] {
        var running = 0
        let counts = h.bucketCounts
        return counts.indices.map { i in
            running += counts[i]
            return (i < LatencyHistogram.boundsMS.count ? String(LatencyHistogram.boundsMS[i]) : "+Inf", running)
        }
    }
}

/// What the process uses, read from /proc when asked.
struct ProcessFigures {
    /// When this process started (seconds since the epoch), read once at load.
    static let startTime: Int = { Int(time(nil)) }()
    var residentBytes = 0
    var openDescriptors = 0
    var cpuSeconds = 0.0

    static func read() -> ProcessFigures {
        var f = ProcessFigures()
        if let statm = readSmallFile("/proc/self/statm") {
            let fields = statm.split(separator: " ")
            if fields.count > 1, let pages = Int(fields[1]) { f.residentBytes = pages * Int(sysconf(Int32(_SC_PAGESIZE))) }
        }
        if let dir = opendir("/proc/self/fd") {
            while let entry = readdir(dir) {
                if entry.pointee.d_name.0 != UInt8(ascii: ".") { f.openDescriptors += 1 }
            }
            closedir(dir)
            f.openDescriptors -= 1   // the directory's own descriptor
        }
        var usage = rusage()
        if getrusage(RUSAGE_SELF.rawValue, &usage) == 0 {
            f.cpuSeconds = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        return f
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }
}

/// Renders merged counters as the admin API's JSON, as stats_glob lines and as Prometheus text.
struct MetricsReport {
    let plan: ServerPlan
    let merged: MergedStats
    let process: ProcessFigures
    let draining: Bool

    func clusterView(_ i: Int) -> MetricFields.ClusterView {
        var out = 0
        if i < plan.clusters.count, let health = plan.clusters[i].health {
            let now = tern_monotonic_ms()
            out = (0..<health.hostCount).filter { health.checkFailed($0) || health.ejected($0, nowMS: now) }.count
        }
        return .init(stats: merged.clusters[i], idle: merged.idleConnections[i], outOfRotation: out)
    }

    /// `/api/v1/stats`: `{"listener": {name: {key: n}}, "cluster": {…}, "host": {cluster: {address: {…}}}, …}`.
    func json() -> String {
        let i1 = "  ", i2 = "    "
        func section(_ entries: [(String, String)]) -> String {
            entries.isEmpty ? "{}" : "{\n" + entries.map { i2 + JSONText.quote($0.0) + ": " + $0.1 }.joined(separator: ",\n") + "\n" + i1 + "}"
        }
        let listeners = plan.listeners.indices.map { i in
            let codes = MetricsReport.codes(merged.listeners[i])
            return (plan.listeners[i].name, JSONText.counters(MetricFields.listener.map { ($0.key, $0.read(merged.listeners[i])) },
                                                              nested: [("http_responses_by_code", { JSONText.counters(codes.map { (String($0.code), $0.count) }, indent: $0) })],
                                                              indent: i2))
        }
        let clusters = plan.clusters.indices.map { i -> (String, String) in
            let view = clusterView(i)
            let bolt = view.stats.byStatus.keys.sorted().map { ("bolt_responses_status_\($0)", view.stats.byStatus[$0]!) }
                + view.stats.responsesByCode.indices.filter { view.stats.responsesByCode[$0] != 0 }.map { ("http_responses_code_\($0 + 100)", view.stats.responsesByCode[$0]) }
            let h = view.stats.responseTime
            let buckets = MetricFields.cumulative(h).map { ("le_\($0.bound == "+Inf" ? "inf" : $0.bound + "ms")", $0.count) }
            let histogram = { (indent: String) in JSONText.counters(buckets + [("count", h.count), ("sum_ms", h.sumMS)], indent: indent) }
            return (plan.clusters[i].name, JSONText.counters(MetricFields.cluster.map { ($0.key, $0.read(view)) } + bolt,
                                                             nested: [("upstream_response_time_ms", histogram)], indent: i2))
        }
        let hosts = plan.clusters.indices.filter { !plan.clusters[$0].hosts.isEmpty }.map { i -> (String, String) in
            let c = plan.clusters[i]
            let inner = c.hosts.indices.map { h in
                i2 + "  " + JSONText.quote(c.hosts[h].address.description) + ": "
                    + JSONText.counters(hostFields(i, h), indent: i2 + "  ")
            }
            return (c.name, "{\n" + inner.joined(separator: ",\n") + "\n" + i2 + "}")
        }
        var parts = [
            i1 + "\"listener\": " + section(listeners),
            i1 + "\"cluster\": " + section(clusters),
            i1 + "\"host\": " + section(hosts),
            i1 + "\"process\": " + "{\n" + i2 + "\"start_time_seconds\": \(ProcessFigures.startTime),\n" + i2 + "\"resident_memory_bytes\": \(process.residentBytes),\n" + i2 + "\"open_fds\": \(process.openDescriptors),\n"
                + i2 + "\"cpu_seconds_total\": \(process.cpuSeconds),\n" + i2 + "\"draining\": \(draining)\n" + i1 + "}",
            i1 + "\"workers\": {\"asked\": \(merged.workersAsked), \"answered\": \(merged.workersAnswered.count)}",
        ]
        if let note = merged.note { parts.append(i1 + "\"note\": " + JSONText.quote(note)) }
        return "{\n" + parts.joined(separator: ",\n") + "\n}\n"
    }

    /// `/api/v1/stats_glob`: one `name:value` line per counter, as MOSN's stats_glob prints them.
    func globLines() -> String {
        var out = ""
        for i in plan.listeners.indices {
            for f in MetricFields.listener { out += "listener.\(plan.listeners[i].name).\(f.key):\(f.read(merged.listeners[i]))\n" }
            for c in MetricsReport.codes(merged.listeners[i]) { out += "listener.\(plan.listeners[i].name).http_responses_code_\(c.code):\(c.count)\n" }
        }
        for i in plan.clusters.indices {
            let view = clusterView(i)
            for f in MetricFields.cluster { out += "cluster.\(plan.clusters[i].name).\(f.key):\(f.read(view))\n" }
            for s in view.stats.byStatus.keys.sorted() { out += "cluster.\(plan.clusters[i].name).bolt_responses_status_\(s):\(view.stats.byStatus[s]!)\n" }
            let codes = view.stats.responsesByCode
            for c in codes.indices where codes[c] != 0 { out += "cluster.\(plan.clusters[i].name).http_responses_code_\(c + 100):\(codes[c])\n" }
            out += "cluster.\(plan.clusters[i].name).upstream_response_time_ms_count:\(view.stats.responseTime.count)\n"
            out += "cluster.\(plan.clusters[i].name).upstream_response_time_ms_sum:\(view.stats.responseTime.sumMS)\n"
            for (h, host) in plan.clusters[i].hosts.enumerated() {
                for (key, value) in hostFields(i, h) { out += "cluster.\(plan.clusters[i].name).host.\(host.address).\(key):\(value)\n" }
            }
        }
        if let note = merged.note { out += "# \(note)\n" }
        return out
    }

    /// The Prometheus text exposition format (version 0.0.4): each family once, HELP and TYPE
    /// first, counters named `_total`, units in names.
    func prometheus() -> String {
        var out = ""
        func family(_ name: String, _ kind: String, _ help: String, _ samples: [(labels: [(String, String)], value: String)]) {
            guard !samples.isEmpty else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(kind)\n"
            for s in samples {
                out += name
                if !s.labels.isEmpty { out += "{" + s.labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}" }
                out += " \(s.value)\n"
            }
        }
        func families<S>(_ fields: [MetricField<S>], _ owners: [(label: (String, String), value: S)]) {
            var order: [String] = []
            var byFamily: [String: (MetricField<S>, [(labels: [(String, String)], value: String)])] = [:]
            for f in fields {
                if byFamily[f.family] == nil { order.append(f.family); byFamily[f.family] = (f, []) }
                for o in owners { byFamily[f.family]!.1.append(([o.label] + f.labels, String(f.read(o.value)))) }
            }
            for name in order { let (f, samples) = byFamily[name]!; family(name, f.kind.rawValue, f.help, samples) }
        }
        families(MetricFields.listener, plan.listeners.indices.map { (("listener", plan.listeners[$0].name), merged.listeners[$0]) })
        family("tern_listener_http_responses_by_code_total", "counter", "HTTP/1 responses written to clients, by status code (codes seen so far)",
               plan.listeners.indices.flatMap { i in
                   MetricsReport.codes(merged.listeners[i]).map { ([("listener", plan.listeners[i].name), ("code", String($0.code))], String($0.count)) }
               })
        families(MetricFields.cluster, plan.clusters.indices.map { (("cluster", plan.clusters[$0].name), clusterView($0)) })
        family("tern_cluster_http_responses_by_code_total", "counter", "HTTP/1 answers for requests routed to the cluster, by status code (codes seen so far)",
               plan.clusters.indices.flatMap { i in
                   let codes = merged.clusters[i].responsesByCode
                   return codes.indices.filter { codes[$0] != 0 }.map { ([("cluster", plan.clusters[i].name), ("code", String($0 + 100))], String(codes[$0])) }
               })
        family("tern_cluster_bolt_responses_total", "counter", MetricFields.boltStatusHelp, plan.clusters.indices.flatMap { i in
            merged.clusters[i].byStatus.keys.sorted().map { ([("cluster", plan.clusters[i].name), ("status", String($0))], String(merged.clusters[i].byStatus[$0]!)) }
        })
        func histograms(_ name: String, _ help: String, _ rows: [(labels: String, histogram: LatencyHistogram)]) {
            guard !rows.isEmpty else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
            for (labels, h) in rows {
                for b in MetricFields.cumulative(h) {
                    let le = b.bound == "+Inf" ? "+Inf" : seconds(Int(b.bound)!)
                    out += "\(name)_bucket{\(labels),le=\"\(le)\"} \(b.count)\n"
                }
                out += "\(name)_sum{\(labels)} \(seconds(h.sumMS))\n\(name)_count{\(labels)} \(h.count)\n"
            }
        }
        histograms("tern_cluster_upstream_response_time_seconds", MetricFields.responseTimeHelp, plan.clusters.indices.map { i in
            ("cluster=\"\(escapeLabel(plan.clusters[i].name))\"", merged.clusters[i].responseTime)
        })
        histograms("tern_host_upstream_response_time_seconds", MetricFields.hostResponseTimeHelp, plan.clusters.indices.flatMap { i in
            plan.clusters[i].hosts.indices.filter { $0 < merged.clusters[i].hostResponseTimes.count }.map { h in
                ("cluster=\"\(escapeLabel(plan.clusters[i].name))\",host=\"\(escapeLabel(plan.clusters[i].hosts[h].address.description))\"",
                 merged.clusters[i].hostResponseTimes[h])
            }
        })
        family("tern_host_requests_total", "counter", MetricFields.hostRequestsHelp, plan.clusters.indices.flatMap { i in
            plan.clusters[i].hosts.indices.filter { $0 < merged.clusters[i].hostRequests.count }.map { h in
                ([("cluster", plan.clusters[i].name), ("host", plan.clusters[i].hosts[h].address.description)], String(merged.clusters[i].hostRequests[h]))
            }
        })
        for (key, name, help) in [("requests_active", "tern_host_requests_active", "Requests sent to the host and not yet answered"),
                                  ("connections_open", "tern_host_connections_open", "Upstream connections open to the host (busy and idle in the pools)")] {
            family(name, "gauge", help, plan.clusters.indices.flatMap { i in
                plan.clusters[i].hosts.indices.map { h in
                    ([("cluster", plan.clusters[i].name), ("host", plan.clusters[i].hosts[h].address.description)], String(hostFields(i, h).first { $0.0 == key }!.1))
                }
            })
        }
        family("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds", [([], String(ProcessFigures.startTime))])
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes", [([], String(process.residentBytes))])
        family("process_open_fds", "gauge", "Number of open file descriptors", [([], String(process.openDescriptors))])
        family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds", [([], "\(process.cpuSeconds)")])
        family("tern_draining", "gauge", "1 while the process drains after SIGTERM, else 0", [([], draining ? "1" : "0")])
        family("tern_stats_workers", "gauge", "Worker threads asked for their counters, and those that answered in time",
               [([("state", "asked")], String(merged.workersAsked)), ([("state", "answered")], String(merged.workersAnswered.count))])
        return out
    }

    /// One host's counters and gauges, in the order every format lists them.
    func hostFields(_ i: Int, _ h: Int) -> [(String, Int)] {
        func at(_ rows: [[Int]]) -> Int { i < rows.count && h < rows[i].count ? rows[i][h] : 0 }
        let times = h < merged.clusters[i].hostResponseTimes.count ? merged.clusters[i].hostResponseTimes[h] : LatencyHistogram()
        return [("requests_total", h < merged.clusters[i].hostRequests.count ? merged.clusters[i].hostRequests[h] : 0),
                ("requests_active", at(merged.hostActive)), ("connections_open", at(merged.hostOpen)),
                ("upstream_response_time_ms_count", times.count), ("upstream_response_time_ms_sum", times.sumMS)]
    }

    /// The status codes a listener answered with, and how often.
    static func codes(_ s: ListenerStats) -> [(code: Int, count: Int)] {
        s.responsesByCode.indices.filter { s.responsesByCode[$0] != 0 }.map { ($0 + 100, s.responsesByCode[$0]) }
    }

    /// Milliseconds as seconds in decimal, exactly ("0.005", "2.5", "10").
    private func seconds(_ ms: Int) -> String {
        let whole = ms / 1000, frac = ms % 1000
        guard frac != 0 else { return String(whole) }
        var digits = String(frac)
        digits = String(repeating: "0", count: 3 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }

    private func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
