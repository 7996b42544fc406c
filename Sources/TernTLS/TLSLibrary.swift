import COpenSSL

/// The OpenSSL build Tern links against. TLS transport sockets come in a later issue; this keeps
/// the system-library target wired and building from the start.
public enum TLSLibrary {
    public static var version: String {
        guard let text = OpenSSL_version(Int32(OPENSSL_VERSION)) else { return "unknown" }
        return String(cString: text)
    }
}
