import CTernShim
import Glibc
import Synchronization
import TernCore

/// A `STRICT_DNS` cluster as configured: the names to resolve and how often. Its hosts are the
/// host entries with IP addresses plus, for each named entry, one host per address the name
/// resolves to (the entry's weight, metadata and tls_disable copied to each), as in MOSN.
public struct StrictDNSSpec: Sendable, Equatable {
    public struct Target: Sendable, Equatable {
        public let name: String
        public let port: UInt16
        /// The host entry as configured; a resolved host is this entry with the address replaced.
        let entry: [String: JSONValue]
    }
    public let cluster: String
    public let targets: [Target]
    /// `dns_refresh_rate` (MOSN's default 5 s).
    public let refreshMS: Int64
    /// `respect_dns_ttl`: the next lookup after the smallest TTL of the answers, plus 1 s (MOSN's rule).
    public let respectTTL: Bool
    /// `dns_lookup_family`: V4_ONLY (A, the default) or V6_ONLY (AAAA).
    public let family: DNSRecordType
    public let resolver: DNSResolverSettings
    /// The cluster's config text: a reload keeps the resolved hosts of a cluster whose text is the same.
    public let source: String

    /// The host entries of one resolution: every target's addresses (a target whose lookup failed
    /// brings its last ones), sorted so the same answer in another order is no change.
    static func hostEntries(_ addresses: [[DNSAddressRecord]], targets: [Target]) -> [JSONValue] {
        var entries: [(String, JSONValue)] = []
        for (target, records) in zip(targets, addresses) {
            for r in records {
                let text = addressText(r.address, port: target.port)
                var entry = target.entry
                entry["address"] = .string(text)
                entries.append((text, .object(entry)))
            }
        }
        var seen = Set<String>()
        return entries.sorted { $0.0 < $1.0 }.filter { seen.insert($0.0).inserted }.map(\.1)
    }

    static func addressText(_ bytes: [UInt8], port: UInt16) -> String {
        if bytes.count == 4 { return "\(bytes[0]).\(bytes[1]).\(bytes[2]).\(bytes[3]):\(port)" }
        var text = [UInt8](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var raw = in6_addr()
        withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: bytes.prefix(16)) }
        text.withUnsafeMutableBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { _ = inet_ntop(AF_INET6, &raw, $0.baseAddress, socklen_t($0.count)) }
        }
        return "[\(String(decoding: text.prefix(while: { $0 != 0 }), as: UTF8.self))]:\(port)"
    }
}

extension ConfigCompiler {
    /// A STRICT_DNS host address: `name:port`, or a bare name (port 80, as MOSN). nil after an
    /// error naming the path when it is not a DNS name.
    func dnsTarget(_ h: JSONObject) -> StrictDNSSpec.Target? {
        guard let text = h.requiredString("address") else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2 else {
            diagnostics.error(h.sub("address"), "invalid address \"\(text)\" (expected name:port or ip:port)")
            return nil
        }
        let name = String(parts[0])
        var port: UInt16 = 80
        if parts.count == 2 {
            guard let p = UInt16(parts[1]), p != 0 else {
                diagnostics.error(h.sub("address"), "invalid port in \"\(text)\" (1-65535)")
                return nil
            }
            port = p
        }
        guard DNSMessage.encodeName(name) != nil,
              name.utf8.allSatisfy({ c in (c | 0x20 >= 97 && c | 0x20 <= 122) || (c >= 48 && c <= 57) || c == 45 || c == 46 || c == 95 }) else {
            diagnostics.error(h.sub("address"), "\"\(name)\" is neither an IP address nor a DNS name")
            return nil
        }
        return StrictDNSSpec.Target(name: name, port: port, entry: h.dict)
    }

    /// The resolver keys of a STRICT_DNS cluster; on another cluster type they are warned about.
    func strictDNSSpec(_ c: JSONObject, name: String, targets: [StrictDNSSpec.Target]) -> StrictDNSSpec {
        var refresh = c.duration("dns_refresh_rate") ?? 0
        if refresh == 0 { refresh = 5_000 }
        if refresh < 100 {
            diagnostics.warn(c.sub("dns_refresh_rate"), "below 100ms; looked up every 100ms")
            refresh = 100
        }
        var family = DNSRecordType.a
        switch c.string("dns_lookup_family") ?? "" {
        case "", "V4_ONLY": family = .a
        case "V6_ONLY": family = .aaaa
        case let other: diagnostics.error(c.sub("dns_lookup_family"), "\"\(other)\" is not a lookup family Tern (or MOSN) has (V4_ONLY, V6_ONLY)")
        }
        var resolver = DNSResolverSettings()
        if let r = c.object("dns_resolvers"), r.isNonEmpty("servers") {
            r.checkKeys(known: ["servers", "search", "port", "ndots", "timeout", "attempts"])
            let port = resolverPort(r, key: "port") ?? 53
            for (value, path) in r.array("servers") ?? [] {
                guard case .string(let s) = value, let server = DNSResolverSettings.serverAddress(s, port: port) else {
                    diagnostics.error(path, "expected a DNS server's IP address (v4 or v6, no port: the port is dns_resolvers.port)")
                    continue
                }
                resolver.servers.append(server)
            }
            resolver.search = r.strings("search") ?? []
            resolver.ndots = r.int("ndots", min: 0, max: 15) ?? 1
            if let t = r.int("timeout", min: 0, max: 30), t > 0 { resolver.timeoutMS = Int64(t) * 1000 }
            if let a = r.int("attempts", min: 0, max: 5), a > 0 { resolver.attempts = a }
        } else {
            let file = c.string("dns_resolver_file").flatMap { $0.isEmpty ? nil : $0 } ?? "/etc/resolv.conf"
            let port = resolverPort(c, key: "dns_resolver_port") ?? 53
            guard let text = readFile(file) else {
                diagnostics.error(c.has("dns_resolver_file") ? c.sub("dns_resolver_file") : c.sub("type"),
                                  "cannot read the resolver file \(file) (\(String(cString: strerror(errno)))); name the DNS servers in dns_resolvers.servers")
                return StrictDNSSpec(cluster: name, targets: targets, refreshMS: refresh, respectTTL: false, family: family, resolver: resolver, source: "")
            }
            resolver = DNSResolverSettings.parseResolvConf(text, port: port)
        }
        return StrictDNSSpec(cluster: name, targets: targets, refreshMS: refresh, respectTTL: c.bool("respect_dns_ttl") ?? false,
                             family: family, resolver: resolver, source: JSONText.render(.object(c.dict)))
    }

    /// A port MOSN writes as a string ("53"); a number is taken too.
    private func resolverPort(_ o: JSONObject, key: String) -> UInt16? {
        guard let v = o.present(key) else { return nil }
        switch v {
        case .string(let s) where s.isEmpty: return nil
        case .string(let s): if let p = UInt16(s), p != 0 { return p }
        case .number(let d, _): if d >= 1 && d <= 65535 && d == d.rounded() { return UInt16(d) }
        default: break
        }
        diagnostics.error(o.sub(key), "expected a port (1-65535)")
        return nil
    }
}

/// The STRICT_DNS resolver: one thread (`tern-dns`), never a worker's, that looks every cluster's
/// names up on its schedule and reports a cluster whose addresses changed. A lookup that fails
/// (timeout, SERVFAIL, NXDOMAIN, no record) keeps the addresses the name had: a DNS outage does
/// not empty a cluster (MOSN keeps them too).
public final class StrictDNSResolver: @unchecked Sendable {
    /// Per cluster: its spec, each target's last addresses, when it is next due.
    private struct Entry {
        var spec: StrictDNSSpec
        var addresses: [[DNSAddressRecord]]
        var dueMS: Int64
        var reported: [JSONValue]?
    }

    private let state = Mutex<[Entry]>([])
    private let logger: Logger
    public init(logger: Logger) {
        self.logger = logger
    }

    /// The first answers for `plan`'s STRICT_DNS clusters, looked up on the calling thread before
    /// anything listens, and the plan compiled again with them; nil when it has no such cluster.
    public static func resolvingNames(_ plan: ServerPlan, logger: Logger) -> (plan: ServerPlan, resolver: StrictDNSResolver, hosts: [String: [JSONValue]])? {
        guard !plan.strictDNS.isEmpty else { return nil }
        let resolver = StrictDNSResolver(logger: logger)
        let hosts = resolver.resolveFirst(plan.strictDNS)
        var resolved = ConfigLoader.load(text: plan.sourceText, resolvedHosts: hosts).plan ?? plan
        resolved.logLevel = plan.logLevel
        resolved.workers = plan.workers
        return (resolved, resolver, hosts)
    }

    /// The first lookup of every spec, made on the calling thread before the workers start (each
    /// name bounded by its resolver's timeouts); the host entries by cluster name.
    public func resolveFirst(_ specs: [StrictDNSSpec]) -> [String: [JSONValue]] {
        var entries = specs.map { Entry(spec: $0, addresses: Array(repeating: [], count: $0.targets.count), dueMS: 0, reported: nil) }
        var resolved: [String: [JSONValue]] = [:]
        for i in entries.indices {
            if let hosts = resolve(&entries[i]) { resolved[entries[i].spec.cluster] = hosts }
            entries[i].reported = resolved[entries[i].spec.cluster] ?? []
        }
        state.withLock { $0 = entries }
        return resolved
    }

    /// A reload's specs: clusters whose spec is unchanged keep their addresses and schedule; the
    /// others are looked up at once.
    public func replace(_ specs: [StrictDNSSpec]) {
        state.withLock { entries in
            entries = specs.map { spec in
                entries.first(where: { $0.spec == spec })
                    ?? Entry(spec: spec, addresses: Array(repeating: [], count: spec.targets.count), dueMS: 0, reported: nil)
            }
        }
    }

    /// Starts the lookups on their schedule; `changed` gets, on the resolver thread, a cluster's
    /// name and its new host entries.
    public func start(changed: @escaping @Sendable (String, [JSONValue]) -> Void) {
        startThread(name: "tern-dns") { [self] in self.run(changed) }
    }


    private func run(_ changed: @Sendable (String, [JSONValue]) -> Void) {
        while true {   // for the process's life, as the health checker's thread
            let now = tern_monotonic_ms()
            // Take the due entries out of the lock: lookups block for up to their timeouts.
            let due = state.withLock { entries in entries.indices.filter { entries[$0].dueMS <= now }.map { ($0, entries[$0]) } }
            for (index, var entry) in due {
                let hosts = resolve(&entry)
                var report: [JSONValue]? = nil
                if let hosts, hosts != entry.reported { report = hosts; entry.reported = hosts }
                let stillCurrent = state.withLock { entries -> Bool in
                    guard index < entries.count, entries[index].spec == entry.spec else { return false }
                    entries[index] = entry
                    return true
                }
                if stillCurrent, let report { changed(entry.spec.cluster, report) }
            }
            usleep(50_000)
        }
    }

    /// Looks every target of `entry` up; sets its next due time. The host entries when at least
    /// one target has addresses (those that failed keep their last ones), nil when none has any.
    private func resolve(_ entry: inout Entry) -> [JSONValue]? {
        var minTTL: UInt32 = .max
        for (t, target) in entry.spec.targets.enumerated() {
            switch DNSClient.lookup(target.name, type: entry.spec.family, settings: entry.spec.resolver) {
            case .addresses(let records):
                let sorted = records.sorted { $0.address.lexicographicallyPrecedes($1.address) }
                if sorted.map(\.address) != entry.addresses[t].map(\.address) {
                    logger.info("dns", "cluster \(entry.spec.cluster): \(target.name) is \(sorted.map { StrictDNSSpec.addressText($0.address, port: target.port) }.joined(separator: ", "))")
                }
                entry.addresses[t] = sorted
                minTTL = min(minTTL, records.map(\.ttl).min() ?? .max)
            case .failed(let reason):
                logger.warn("dns", "cluster \(entry.spec.cluster): lookup of \(target.name) failed (\(reason)); \(entry.addresses[t].isEmpty ? "it has no address yet" : "keeping its last addresses")")
            }
        }
        var next = entry.spec.refreshMS
        if entry.spec.respectTTL && minTTL != .max && minTTL > 0 { next = Int64(minTTL) * 1000 + 1000 }
        entry.dueMS = tern_monotonic_ms() + next
        guard entry.addresses.contains(where: { !$0.isEmpty }) else { return nil }
        return StrictDNSSpec.hostEntries(entry.addresses, targets: entry.spec.targets)
    }
}

/// Collects the STRICT_DNS specs while a config compiles (the compiler is a value passed around).
final class StrictDNSCollector {
    private(set) var specs: [StrictDNSSpec] = []
    func add(_ spec: StrictDNSSpec) { specs.append(spec) }
}
