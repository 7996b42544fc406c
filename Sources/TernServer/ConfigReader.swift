import TernCore

/// Problems found while reading a config: errors stop the process before it listens, warnings name
/// keys Tern accepts but does not act on. Each names its JSON path.
/// A problem found twice (a key read by two compilers, a listener shared by two chains) is kept
/// once, so each line reaches the user once.
public final class Diagnostics {
    public private(set) var errors: [String] = []
    public private(set) var warnings: [String] = []
    private var seen: Set<String> = []
    public init() {}
    func error(_ path: String, _ message: String) { record("\(path): \(message)", in: &errors) }
    func warn(_ path: String, _ message: String) { record("\(path): \(message)", in: &warnings) }
    private func record(_ line: String, in list: inout [String]) {
        if seen.insert(line).inserted { list.append(line) }
    }
}

/// Longest duration any key takes: larger values are typos (or overflow bait), never intent.
let maxDurationMS: Int64 = 24 * 3_600_000

/// A JSON object at a known path. Readers report wrong types as errors at the key's path and
/// unknown keys as warnings, so every problem names where it is.
struct JSONObject {
    let dict: [String: JSONValue]
    let path: String
    let diagnostics: Diagnostics

    init?(_ value: JSONValue?, path: String, diagnostics: Diagnostics) {
        guard let value else { return nil }
        guard case .object(let dict) = value else {
            diagnostics.error(path, "expected an object")
            return nil
        }
        self.dict = dict
        self.path = path
        self.diagnostics = diagnostics
    }

    func sub(_ key: String) -> String { path + "." + key }

    /// Warns for every key that is neither read (`known`) nor explicitly accepted-and-ignored.
    /// Keys compare case-insensitively, as Go's encoding/json matches them for MOSN. Every level
    /// that calls this lists all the keys MOSN has there, so an unknown key that is a near miss of
    /// one of them is a typo whose setting would silently not apply: that is an error.
    func checkKeys(known: Set<String>, ignored: Set<String> = [], note: String = "not supported by Tern yet; ignored") {
        for key in dict.keys.sorted() where !known.contains(key.lowercased()) {
            if ignored.contains(key.lowercased()) { diagnostics.warn(sub(key), note); continue }
            if let intended = nearestKey(to: key, among: known.union(ignored)) {
                diagnostics.error(sub(key), "unknown key; did you mean `\(intended)`?")
            } else {
                diagnostics.warn(sub(key), "unknown key; ignored")
            }
        }
    }

    /// Refuses a key whose meaning is security or routing while Tern cannot honour it: accepting
    /// it with a warning would run the config weaker than written.
    func refuse(_ key: String, what: String) {
        diagnostics.error(sub(key), "not supported by Tern yet (\(what)); remove it or run MOSN")
    }

    /// Whether `key` holds a non-empty array (or any other non-null, non-empty value).
    func isNonEmpty(_ key: String) -> Bool {
        switch present(key) {
        case nil: return false
        case .array(let a)?: return !a.isEmpty
        case .object(let o)?: return !o.isEmpty
        case .string(let s)?: return !s.isEmpty
        case .bool(let b)?: return b
        default: return true
        }
    }

    /// Whether `key` holds a TLS context (or, for a list, any context) with `status: true`.
    func enablesTLS(_ key: String) -> Bool {
        func on(_ v: JSONValue) -> Bool {
            guard case .object(let o) = v else { return false }
            return o.first(where: { $0.key.lowercased() == "status" })?.value == .bool(true)
        }
        switch present(key) {
        case .array(let a)?: return a.contains(where: on)
        case let v?: return on(v)
        case nil: return false
        }
    }

    func has(_ key: String) -> Bool { present(key) != nil }

    /// The value at `key`; JSON null counts as absent, as in MOSN's Go decoding.
    func present(_ key: String) -> JSONValue? {
        // Exact spelling first; then any capitalisation ("Name" works in MOSN, so it works here).
        guard let v = dict[key] ?? dict.first(where: { $0.key.lowercased() == key })?.value, v != .null else { return nil }
        return v
    }

    func string(_ key: String) -> String? {
        guard let v = present(key) else { return nil }
        guard case .string(let s) = v else { diagnostics.error(sub(key), "expected a string"); return nil }
        return s
    }

    func requiredString(_ key: String) -> String? {
        guard has(key) else { diagnostics.error(sub(key), "required"); return nil }
        return string(key)
    }

    func bool(_ key: String) -> Bool? {
        guard let v = present(key) else { return nil }
        if case .bool(let b) = v { return b }
        diagnostics.error(sub(key), "expected true or false")
        return nil
    }

    func double(_ key: String) -> Double? {
        guard let v = present(key) else { return nil }
        guard case .number(let d, _) = v else { diagnostics.error(sub(key), "expected a number"); return nil }
        return d
    }

    func int(_ key: String, min: Int = Int.min, max: Int = Int.max) -> Int? {
        guard let v = present(key) else { return nil }
        guard case .number(let d, _) = v, d == d.rounded(), abs(d) < 9.0e15 else {
            diagnostics.error(sub(key), "expected an integer")
            return nil
        }
        let i = Int(d)
        if i < min || i > max { diagnostics.error(sub(key), "must be between \(min) and \(max), got \(i)"); return nil }
        return i
    }

    /// An `ip:port` address, or `unix:/path` (`unix:@name`: an abstract socket) as MOSN writes a
    /// cluster host on a unix socket; `allowPortZero` for listeners (the OS picks a port).
    func address(_ key: String, allowPortZero: Bool) -> SocketAddress? {
        guard let text = requiredString(key) else { return nil }
        if text.hasPrefix("unix:") { return unixAddress(key, path: String(text.dropFirst(5)), text: text) }
        if text.hasPrefix("/") || text.hasPrefix("@") {
            diagnostics.error(sub(key), "\"\(text)\" is a unix socket path: a cluster host names it \"unix:\(text)\", a listener takes it with \"network\": \"unix\"")
            return nil
        }
        guard let address = SocketAddress.parse(text) else {
            diagnostics.error(sub(key), "invalid address \"\(text)\" (expected ip:port, port 0-65535)")
            return nil
        }
        if address.port == 0 && !allowPortZero {
            diagnostics.error(sub(key), "port 0 in \"\(text)\": an upstream needs a real port")
            return nil
        }
        return address
    }

    /// A unix listener's address: a path (`unix:` in front is accepted too), `@name` for an
    /// abstract socket.
    func unixListenAddress(_ key: String) -> SocketAddress? {
        guard let text = requiredString(key) else { return nil }
        return unixAddress(key, path: text.hasPrefix("unix:") ? String(text.dropFirst(5)) : text, text: text)
    }

    private func unixAddress(_ key: String, path: String, text: String) -> SocketAddress? {
        do {
            return try SocketAddress.unix(path: path)
        } catch {
            diagnostics.error(sub(key), "invalid address \"\(text)\": \(error)")
            return nil
        }
    }

    /// A Go duration string ("1s", "250ms", "1m30s"), in milliseconds, between `min` and `max`.
    func duration(_ key: String, min: Int64 = 0, max: Int64 = maxDurationMS) -> Int64? {
        guard let v = present(key) else { return nil }
        // MOSN strips the quotes and hands the text to Go's ParseDuration, so a bare 0 is valid.
        if case .number(0, _) = v { return 0 }
        guard case .string(let s) = v else { diagnostics.error(sub(key), "expected a duration string such as \"1s\""); return nil }
        guard let ms = parseGoDuration(s) else { diagnostics.error(sub(key), "invalid duration \"\(s)\""); return nil }
        if ms < min || ms > max {
            diagnostics.error(sub(key), "must be between \(formatDuration(min)) and \(formatDuration(max)), got \"\(s)\"")
            return nil
        }
        return ms
    }

    func object(_ key: String) -> JSONObject? {
        guard let v = present(key) else { return nil }
        return JSONObject(v, path: sub(key), diagnostics: diagnostics)
    }

    func array(_ key: String) -> [(value: JSONValue, path: String)]? {
        guard let v = present(key) else { return nil }
        guard case .array(let a) = v else { diagnostics.error(sub(key), "expected an array"); return nil }
        return a.enumerated().map { ($0.element, "\(path).\(key)[\($0.offset)]") }
    }

    func objects(_ key: String) -> [JSONObject] {
        (array(key) ?? []).compactMap { JSONObject($0.value, path: $0.path, diagnostics: diagnostics) }
    }

    func strings(_ key: String) -> [String]? {
        guard let items = array(key) else { return nil }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item.value else { diagnostics.error(item.path, "expected a string"); continue }
            out.append(s)
        }
        return out
    }

    /// {"k": "v", ...} with string values.
    func stringMap(_ key: String) -> [String: String]? {
        guard let o = object(key) else { return nil }
        var out: [String: String] = [:]
        for (k, v) in o.dict {
            if case .string(let s) = v { out[k] = s } else { diagnostics.error(o.sub(k), "expected a string") }
        }
        return out
    }
}

/// Parses Go's time.Duration text form into milliseconds (sub-millisecond parts round up to 1 ms).
func parseGoDuration(_ text: String) -> Int64? {
    var s = Substring(text)
    if s == "0" { return 0 }
    var totalNS: Double = 0
    guard !s.isEmpty else { return nil }
    while !s.isEmpty {
        let number = s.prefix { $0.isNumber || $0 == "." }
        guard !number.isEmpty, let value = Double(number) else { return nil }
        s = s.dropFirst(number.count)
        let unit = s.prefix { !$0.isNumber && $0 != "." }
        s = s.dropFirst(unit.count)
        let scale: Double
        switch unit {
        case "ns": scale = 1
        case "us", "µs": scale = 1e3
        case "ms": scale = 1e6
        case "s": scale = 1e9
        case "m": scale = 60e9
        case "h": scale = 3600e9
        default: return nil
        }
        totalNS += value * scale
    }
    // Past Int64 nanoseconds (about 292 years) Go refuses a duration; converting it would trap.
    guard totalNS <= Double(Int64.max) else { return nil }
    let ms = Int64((totalNS / 1e6).rounded(.up))
    return ms
}

/// Milliseconds as a Go duration string, for messages.
func formatDuration(_ ms: Int64) -> String {
    if ms % 3_600_000 == 0 && ms > 0 { return "\(ms / 3_600_000)h" }
    if ms % 1000 == 0 && ms > 0 { return "\(ms / 1000)s" }
    return "\(ms)ms"
}

/// The known key `key` is most likely a misspelling of: the same letters ignoring case and
/// underscores, or within two edits (one for keys of four or five letters and none for shorter
/// ones, where more edits reach unrelated words: `path` and `name`, `id` and `pid`).
func nearestKey(to key: String, among known: Set<String>) -> String? {
    let folded = Array(key.lowercased().utf8.filter { $0 != UInt8(ascii: "_") && $0 != UInt8(ascii: "-") })
    var best: (key: String, distance: Int)?
    for candidate in known.sorted() {
        let target = Array(candidate.utf8.filter { $0 != UInt8(ascii: "_") })
        let limit = target.count <= 3 ? 0 : target.count <= 5 ? 1 : 2
        let d = editDistance(folded, target, limit: limit)
        if d <= limit && (best == nil || d < best!.distance) { best = (candidate, d) }
    }
    return best?.key
}

/// Optimal string alignment distance (a swap of neighbours counts one edit), giving up past `limit`.
func editDistance(_ a: [UInt8], _ b: [UInt8], limit: Int) -> Int {
    if abs(a.count - b.count) > limit { return limit + 1 }
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous2 = [Int](repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = min(current[j], previous2[j - 2] + 1)
            }
        }
        (previous2, previous, current) = (previous, current, previous2)
    }
    return previous[b.count]
}
