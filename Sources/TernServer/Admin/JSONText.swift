import TernCore

/// JSON text out of Tern's own values (Foundation is not linked into the product).
enum JSONText {
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// `value` indented by two spaces per level, object keys sorted (stable output to diff).
    static func render(_ value: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d, let isInteger):
            if isInteger, abs(d) < 9.0e15 { return String(Int(d)) }
            return d.isFinite ? "\(d)" : "null"
        case .string(let s): return quote(s)
        case .array(let a):
            if a.isEmpty { return "[]" }
            return "[\n" + a.map { inner + render($0, indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case .object(let o):
            if o.isEmpty { return "{}" }
            return "{\n" + o.keys.sorted().map { inner + quote($0) + ": " + render(o[$0]!, indent: inner) }.joined(separator: ",\n") + "\n" + indent + "}"
        }
    }

    /// An object of integer counters, keys in the order given, then `nested` members (rendered
    /// JSON, given the indent of the counters' lines).
    static func counters(_ pairs: [(String, Int)], nested: [(String, (String) -> String)] = [], indent: String) -> String {
        let inner = indent + "  "
        let lines = pairs.map { inner + quote($0.0) + ": " + String($0.1) } + nested.map { inner + quote($0.0) + ": " + $0.1(inner) }
        if lines.isEmpty { return "{}" }
        return "{\n" + lines.joined(separator: ",\n") + "\n" + indent + "}"
    }
}
