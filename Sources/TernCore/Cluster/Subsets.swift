/// MOSN's `lb_subset_config.fall_back_policy`: where a request goes when its route's
/// `metadata_match` names no subset that has hosts.
public enum SubsetFallback: Int, Sendable, CaseIterable {
    /// No host: the request fails (HTTP 503, bolt error).
    case noFallback = 0
    /// Any host of the cluster.
    case anyEndpoint = 1
    /// The hosts matching `default_subset`.
    case defaultSubset = 2

    public var name: String {
        switch self {
        case .noFallback: return "NO_FALLBACK"
        case .anyEndpoint: return "ANY_ENDPOINT"
        case .defaultSubset: return "DEFAULT_SUBSET"
        }
    }
}

/// A set of metadata key/value pairs (a route's `metadata_match`, a subset's identity), sorted
/// by key so that two equal sets compare and hash equal whatever order they were written in.
public struct MetadataCriteria: Hashable, Sendable, CustomStringConvertible {
    public let pairs: [Pair]
    public struct Pair: Hashable, Sendable {
        public let key: String
        public let value: String
    }

    public init(_ map: [String: String]) {
        pairs = map.map { Pair(key: $0.key, value: $0.value) }.sorted { $0.key < $1.key }
    }

    public var isEmpty: Bool { pairs.isEmpty }
    public var description: String { "{" + pairs.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "}" }

    /// Whether a host's metadata holds every pair.
    func matches(_ metadata: [String: String]) -> Bool {
        pairs.allSatisfy { metadata[$0.key] == $0.value }
    }
}

/// Which hosts of a cluster a route's requests may use; decided at config load, so a request
/// only switches on it.
public enum HostSubset: Sendable, Equatable {
    /// No `metadata_match` (or the cluster has no subsets): every host.
    case all
    /// One precomputed subset: an index into the cluster's `SubsetTable.subsets`.
    case subset(Int)
    /// The criteria name no subset with hosts: the cluster's fallback policy decides.
    case fallback
}

/// A cluster's subsets (MOSN's subset load balancer), computed from its hosts and
/// `lb_subset_config` when the config is loaded. Each selector (a list of metadata keys) makes
/// one subset per distinct tuple of values among the hosts that carry all those keys; a route's
/// criteria find their subset by exact key/value tuple through a dictionary, once, at load.
/// Immutable and shared by the workers; each worker builds one balancer per subset.
public struct SubsetTable: Sendable {
    public let fallback: SubsetFallback
    /// Host indices of each subset, in the cluster's order; never empty.
    public let subsets: [[Int]]
    /// The key/value tuple of each subset (parallel to `subsets`).
    public let criteria: [MetadataCriteria]
    /// DEFAULT_SUBSET: the hosts matching `default_subset` (all of them when it is empty, as in
    /// MOSN); empty for the other policies.
    public let defaultHosts: [Int]
    private let lookup: [MetadataCriteria: Int]

    /// `selectors`: MOSN's `subset_selectors`; a selector's key order does not matter and
    /// repeated selectors count once.
    public init(hosts: [HostConfig], selectors: [[String]], fallback: SubsetFallback, defaultSubset: [String: String]) {
        self.fallback = fallback
        var seenSelectors = Set<[String]>()
        var lookup: [MetadataCriteria: Int] = [:]
        var subsets: [[Int]] = []
        var criteria: [MetadataCriteria] = []
        for selector in selectors {
            let keys = Array(Set(selector)).sorted()
            guard !keys.isEmpty, seenSelectors.insert(keys).inserted else { continue }
            for (index, host) in hosts.enumerated() {
                var tuple: [String: String] = [:]
                for key in keys {
                    guard let value = host.metadata[key] else { break }
                    tuple[key] = value
                }
                guard tuple.count == keys.count else { continue }
                let c = MetadataCriteria(tuple)
                if let existing = lookup[c] {
                    subsets[existing].append(index)
                } else {
                    lookup[c] = subsets.count
                    subsets.append([index])
                    criteria.append(c)
                }
            }
        }
        self.lookup = lookup
        self.subsets = subsets
        self.criteria = criteria
        let defaultCriteria = MetadataCriteria(defaultSubset)
        defaultHosts = fallback == .defaultSubset ? hosts.indices.filter { defaultCriteria.matches(hosts[$0].metadata) } : []
    }

    /// The subset a route's `metadata_match` names (MOSN's lookup: the criteria's keys must be
    /// exactly one selector's keys and its values those of hosts that exist).
    public func resolve(_ criteria: MetadataCriteria) -> HostSubset {
        if criteria.isEmpty { return .all }
        if let index = lookup[criteria] { return .subset(index) }
        return .fallback
    }
}

/// 64-bit hashing for the hash balancers: FNV-1a over the bytes, then a finalising mix so that
/// nearby inputs spread over the whole range (tables index by the low bits).
public enum HashKey {
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9e3779b97f4a7c15
        z = (z ^ (z >> 30)) &* 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) &* 0x94d049bb133111eb
        return z ^ (z >> 31)
    }

    @inline(__always)
    public static func fnv(_ p: UnsafePointer<UInt8>, _ count: Int, seed: UInt64 = 0xcbf29ce484222325) -> UInt64 {
        var h = seed
        for i in 0..<count { h = (h ^ UInt64(p[i])) &* 0x100000001b3 }
        return h
    }

    public static func of(_ text: String, seed: UInt64 = 0xcbf29ce484222325) -> UInt64 {
        var bytes = Array(text.utf8)
        if bytes.isEmpty { bytes = [0] }
        return mix(bytes.withUnsafeBufferPointer { fnv($0.baseAddress!, text.utf8.count, seed: seed) })
    }
}
