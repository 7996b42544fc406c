/// Problems found while reading a config: errors stop the process before it listens, warnings name
/// keys Tern accepts but does not act on. Each names its JSON path.
public final class Diagnostics {
    public private(set) var errors: [String] = []
    public private(set) var warnings: [String] = []
    public init() {}
    func error(_ path: String, _ message: String) { errors.append("\(path): \(message)") }
    func warn(_ path: String, _ message: String) { warnings.append("\(path): \(message)") }
}

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
    /// Keys compare case-insensitively, as Go's encoding/json matches them for MOSN.
    func checkKeys(known: Set<String>, ignored: Set<String> = [], note: String = "not supported by Tern yet; ignored") {
        for key in dict.keys.sorted() where !known.contains(key.lowercased()) {
            if ignored.contains(key.lowercased()) { diagnostics.warn(sub(key), note) }
            else { diagnostics.warn(sub(key), "unknown key; ignored") }
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

    /// A Go duration string ("1s", "250ms", "1m30s"), in milliseconds.
    func duration(_ key: String) -> Int64? {
        guard let v = present(key) else { return nil }
        guard case .string(let s) = v else { diagnostics.error(sub(key), "expected a duration string such as \"1s\""); return nil }
        guard let ms = parseGoDuration(s) else { diagnostics.error(sub(key), "invalid duration \"\(s)\""); return nil }
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
    let ms = Int64((totalNS / 1e6).rounded(.up))
    return ms
}
