/// What the router needs to see of a request: path, host and header values, in place.
public protocol RoutableRequest {
    /// The path without the query string.
    func withPath<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R
    /// The authority without port ("" when absent).
    func withHost<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R
    /// The first value of a header, by lowercased name; nil when absent.
    func withHeader<R>(lowercasedName: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R?
}

public struct HeaderMatcher: Sendable {
    public let lowercasedName: [UInt8]
    public let value: [UInt8]
    public let regex: RouteRegex?
    public let caseSensitive: Bool

    /// MOSN's SOFA rule: a plain (non-regex) `service` matcher whose value is ".*" matches any
    /// value of the header, as MOSN's sofarpc samples rely on.
    public let anyValue: Bool

    public init(name: String, value: String, regex: RouteRegex?, caseSensitive: Bool) {
        anyValue = regex == nil && value == ".*" && name.lowercased() == "service"
        lowercasedName = Bytes.lowercased(name)
        self.value = caseSensitive ? Array(value.utf8) : Bytes.lowercased(value)
        self.regex = regex
        self.caseSensitive = caseSensitive
    }

    public func matches<R: RoutableRequest>(_ request: R) -> Bool {
        let result = request.withHeader(lowercasedName: lowercasedName) { p, n -> Bool in
            if anyValue { return true }
            if let regex { return regex.matches(p, n) }
            return caseSensitive ? Bytes.equals(p, n, value) : Bytes.equalsIgnoringCase(p, n, value)
        }
        return result ?? false
    }
}

public enum PathMatch: Sendable {
    case any
    case prefix([UInt8])
    case exact([UInt8])
    case regex(RouteRegex)
}

public struct HeaderToAdd: Sendable {
    public let name: [UInt8]
    public let lowercasedName: [UInt8]
    public let value: [UInt8]
    public let append: Bool
    public init(name: String, value: String, append: Bool) {
        self.name = Array(name.utf8)
        lowercasedName = Bytes.lowercased(name)
        self.value = Array(value.utf8)
        self.append = append
    }
}

/// Header edits merged from the route, its virtual host and its router configuration, so the hot
/// path applies one list.
public struct HeaderMutations: Sendable {
    public var add: [HeaderToAdd] = []
    public var remove: [[UInt8]] = []   // lowercased names
    public init() {}
    public var isEmpty: Bool { add.isEmpty && remove.isEmpty }
    public mutating func merge(_ other: HeaderMutations) {
        add.append(contentsOf: other.add)
        remove.append(contentsOf: other.remove)
    }
    /// Whether a header must be dropped because it is removed or replaced (not appended) here.
    @inline(__always)
    public func drops(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        for r in remove where Bytes.equalsIgnoringCase(p, n, r) { return true }
        for a in add where !a.append && Bytes.equalsIgnoringCase(p, n, a.lowercasedName) { return true }
        return false
    }
}

public struct WeightedCluster: Sendable {
    public let clusterIndex: Int
    public let weight: Int
    /// The hosts of the cluster this entry may use (its `metadata_match` resolved at load).
    public let subset: HostSubset
    public init(clusterIndex: Int, weight: Int, subset: HostSubset = .all) {
        self.clusterIndex = clusterIndex; self.weight = weight; self.subset = subset
    }
}

/// When a request is tried again (MOSN's route `retry_policy`): always after a connect failure,
/// on a host not tried yet (nothing reached the upstream); with `retry_on`, also after a reset
/// before any answer, a 5xx answer or a per-try timeout, for idempotent requests without a body
/// (their bytes can be sent again as they were). At most `numRetries` (MOSN: at least 3) tries
/// after the first, each after an exponential back-off with full jitter.
public struct RetryPolicy: Sendable {
    public let retryOn: Bool
    public let numRetries: Int
    /// Each try's own timeout (MOSN's `retry_timeout`); 0: only the route's timeout.
    public let perTryTimeoutMS: Int64
    public static let baseBackoffMS: Int64 = 25
    public static let maxBackoffMS: Int64 = 250
    public init(retryOn: Bool = false, numRetries: Int = 3, perTryTimeoutMS: Int64 = 0) {
        self.retryOn = retryOn
        self.numRetries = numRetries
        self.perTryTimeoutMS = perTryTimeoutMS
    }

    /// The wait before retry `n` (1, 2, ...): a draw below base × 2^(n-1), capped.
    public static func backoffMS(retry n: Int, _ random: inout FastRandom) -> Int64 {
        let ceiling = min(baseBackoffMS << min(n - 1, 10), maxBackoffMS)
        return Int64(random.below(Int(ceiling) + 1))
    }
}

/// A route's mirror target (MOSN's `request_mirror_policies`): the shadow cluster and in how many
/// of 100 requests a copy goes there.
public struct MirrorPolicy: Sendable {
    public let clusterIndex: Int
    public let percent: Int
    public init(clusterIndex: Int, percent: Int) {
        self.clusterIndex = clusterIndex; self.percent = percent
    }
}

/// MOSN's route `hash_policy` (its first entry): what the hash balancers hash. MOSN's default,
/// with no policy, is the client's address.
public enum HashPolicy: Sendable {
    case sourceAddress
    /// The first value of a header, with its name (MOSN hashes "name:value"); absent: 0.
    /// `nameHash` (the name's hash, the value's seed) is computed at load.
    case header(lowercasedName: [UInt8], nameHash: UInt64)
    /// One cookie of the first `Cookie` header, with its name; absent: 0.
    case cookie(name: [UInt8])

    static let cookieHeader = Array("cookie".utf8)

    /// A header policy for `name` (any case).
    public static func header(_ name: String) -> HashPolicy {
        let lowercased = Bytes.lowercased(name)
        return .header(lowercasedName: lowercased, nameHash: lowercased.withUnsafeBufferPointer { HashKey.fnv($0.baseAddress!, $0.count) })
    }

    @inline(__always)
    public func hash<R: RoutableRequest>(_ request: R, from downstream: Connection) -> UInt64 {
        switch self {
        case .sourceAddress:
            return downstream.sourceAddressHash
        case .header(let name, let nameHash):
            return request.withHeader(lowercasedName: name) { p, n in HashKey.fnv(p, n, seed: nameHash) } ?? 0
        case .cookie(let name):
            return request.withHeader(lowercasedName: HashPolicy.cookieHeader) { p, n in
                HashPolicy.cookieHash(p, n, name)
            } ?? 0
        }
    }

    /// The hash of `name=value` for the cookie `name` in a Cookie header (`a=1; b=2`), or 0.
    static func cookieHash(_ p: UnsafePointer<UInt8>, _ n: Int, _ name: [UInt8]) -> UInt64 {
        var i = 0
        while i < n {
            while i < n && (p[i] == UInt8(ascii: " ") || p[i] == UInt8(ascii: ";")) { i += 1 }
            let start = i
            while i < n && p[i] != UInt8(ascii: ";") { i += 1 }
            let pairLength = i - start
            if pairLength > name.count && p[start + name.count] == UInt8(ascii: "=") && Bytes.hasPrefix(p + start, pairLength, name) {
                var end = i
                while end > start && p[end - 1] == UInt8(ascii: " ") { end -= 1 }
                return HashKey.fnv(p + start, end - start)
            }
        }
        return 0
    }
}

/// Routes and their actions are classes: the router hands out a reference per request, one
/// retain, where a struct full of arrays would be copied (a retain per array) on every match.
public final class ClusterRoute: Sendable {
    public let clusters: [WeightedCluster]
    public let totalWeight: Int
    public let timeoutMS: Int64
    public let prefixRewrite: [UInt8]?
    public let hostRewrite: [UInt8]?
    public let requestHeaders: HeaderMutations
    public let responseHeaders: HeaderMutations
    public let hashPolicy: HashPolicy
    /// MOSN's `request_mirror_policies` of the router entry: where a listener's `mirror` stream
    /// filter copies this route's requests; nil: none.
    public let mirror: MirrorPolicy?
    /// MOSN's `retry_policy`; without one, connect failures are still retried on other hosts.
    public let retry: RetryPolicy
    public init(clusters: [WeightedCluster], timeoutMS: Int64, prefixRewrite: [UInt8]? = nil, hostRewrite: [UInt8]? = nil,
                requestHeaders: HeaderMutations = HeaderMutations(), responseHeaders: HeaderMutations = HeaderMutations(),
                hashPolicy: HashPolicy = .sourceAddress, mirror: MirrorPolicy? = nil, retry: RetryPolicy = RetryPolicy()) {
        self.hashPolicy = hashPolicy
        self.retry = retry
        self.mirror = mirror
        self.clusters = clusters
        totalWeight = clusters.reduce(0) { $0 + $1.weight }
        self.timeoutMS = timeoutMS
        self.prefixRewrite = prefixRewrite
        self.hostRewrite = hostRewrite
        self.requestHeaders = requestHeaders
        self.responseHeaders = responseHeaders
    }

    /// One of the weighted clusters, in proportion to weight.
    @inline(__always)
    public func pickCluster(_ random: inout FastRandom) -> WeightedCluster {
        if clusters.count == 1 { return clusters[0] }
        var r = random.below(max(totalWeight, 1))
        for c in clusters {
            if r < c.weight { return c }
            r -= c.weight
        }
        return clusters[clusters.count - 1]
    }
}

public struct RedirectRoute: Sendable {
    public let status: Int
    public let path: String?
    public let host: String?
    public let scheme: String?
    public init(status: Int, path: String?, host: String?, scheme: String?) {
        self.status = status; self.path = path; self.host = host; self.scheme = scheme
    }
}

public enum RouteAction: Sendable {
    case cluster(ClusterRoute)
    case direct(status: Int, body: [UInt8], headers: HeaderMutations)
    case redirect(RedirectRoute)
}

public final class Route: Sendable {
    public let path: PathMatch
    public let headers: [HeaderMatcher]
    public let action: RouteAction
    public init(path: PathMatch, headers: [HeaderMatcher], action: RouteAction) {
        self.path = path; self.headers = headers; self.action = action
    }

    @inline(__always)
    func matches<R: RoutableRequest>(_ request: R) -> Bool {
        let pathOK: Bool
        switch path {
        case .any: pathOK = true
        case .prefix(let p): pathOK = request.withPath { Bytes.hasPrefix($0, $1, p) }
        case .exact(let p): pathOK = request.withPath { Bytes.equals($0, $1, p) }
        case .regex(let r): pathOK = request.withPath { r.matches($0, $1) }
        }
        if !pathOK { return false }
        for h in headers where !h.matches(request) { return false }
        return true
    }
}

public struct VirtualHost: Sendable {
    public let name: String
    public let routes: [Route]
    public init(name: String, routes: [Route]) { self.name = name; self.routes = routes }
}

/// Domains of one router configuration, compiled for lookup without allocation: exact names by
/// hash, then `*.suffix` and `prefix.*` wildcards longest first, then the `*` default.
public struct RouteTable: Sendable {
    public let name: String
    public let virtualHosts: [VirtualHost]
    private var exact: [UInt64: [(domain: [UInt8], host: Int)]] = [:]
    private var suffixes: [(suffix: [UInt8], host: Int)] = []   // "*.example.com" stored as ".example.com"
    private var prefixes: [(prefix: [UInt8], host: Int)] = []   // "api.*" stored as "api."
    private var defaultHost: Int?

    public init(name: String, virtualHosts: [VirtualHost], domains: [[String]]) {
        self.name = name
        self.virtualHosts = virtualHosts
        for (index, list) in domains.enumerated() {
            for domain in list {
                let lower = Bytes.lowercased(RouteTable.stripPort(domain))
                if domain == "*" {
                    if defaultHost == nil { defaultHost = index }
                } else if domain.hasPrefix("*") {
                    suffixes.append((Array(lower.dropFirst()), index))
                } else if domain.hasSuffix("*") {
                    prefixes.append((Array(lower.dropLast()), index))
                } else {
                    exact[Bytes.hashLowercased(lower), default: []].append((lower, index))
                }
            }
        }
        suffixes.sort { $0.suffix.count > $1.suffix.count }
        prefixes.sort { $0.prefix.count > $1.prefix.count }
    }

    static func stripPort(_ domain: String) -> String {
        if domain.hasPrefix("[") { return domain }
        if let colon = domain.lastIndex(of: ":"), domain[domain.index(after: colon)...].allSatisfy(\.isNumber) {
            return String(domain[..<colon])
        }
        return domain
    }

    public func virtualHostIndex(host p: UnsafePointer<UInt8>, _ n: Int) -> Int? {
        if !exact.isEmpty, let candidates = exact[Bytes.hashLowercased(p, n)] {
            for c in candidates where Bytes.equalsIgnoringCase(p, n, c.domain) { return c.host }
        }
        for s in suffixes where n > s.suffix.count {
            let start = p + (n - s.suffix.count)
            if Bytes.equalsIgnoringCase(start, s.suffix.count, s.suffix) { return s.host }
        }
        for s in prefixes where n > s.prefix.count {
            if Bytes.equalsIgnoringCase(p, s.prefix.count, s.prefix) { return s.host }
        }
        return defaultHost
    }

    /// The first matching route of the matching virtual host, or nil (404).
    public func route<R: RoutableRequest>(_ request: R) -> Route? {
        let hostIndex: Int?
        if virtualHosts.count == 1 && defaultHost == 0 {
            hostIndex = 0
        } else {
            hostIndex = request.withHost { virtualHostIndex(host: $0, $1) }
        }
        guard let hostIndex else { return nil }
        for route in virtualHosts[hostIndex].routes where route.matches(request) { return route }
        return nil
    }
}
