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

    /// Both sides' half-close and close: close_notify once, best effort (a full socket buffer just
    /// drops it), never after a failure; on close the TLS state is freed at once rather than with
    /// the connection object.
    static func shutdown(_ ssl: inout OpaquePointer?, failed: Bool, closeNotifySent: inout Bool, closing: Bool) {
        guard let s = ssl else { return }
        if !failed && !closeNotifySent && SSL_is_init_finished(s) == 1 {
            closeNotifySent = true
            _ = SSL_shutdown(s)
            _ = takeErrors()
        }
        if closing {
            SSL_free(s)
            ssl = nil
        }
    }
}
