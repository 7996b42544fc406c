import COpenSSL

/// The OpenSSL build Tern links against.
public enum TLSLibrary {
    public static var version: String {
        guard let text = OpenSSL_version(Int32(OPENSSL_VERSION)) else { return "unknown" }
        return String(cString: text)
    }

    /// Empties this thread's OpenSSL error queue and returns the reasons in it, oldest first
    /// ("certificate verify failed; ..."), or nil when it was empty. OpenSSL needs the queue empty
    /// before the next I/O call on the thread, so every failure path calls this.
    static func takeErrors() -> String? {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            if let r = ERR_reason_error_string(code) { reasons.append(String(cString: r)) }
            else { reasons.append("OpenSSL error \(String(code, radix: 16))") }
        }
        return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
    }
}
