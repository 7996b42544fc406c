import TernTLS

public enum TernVersion {
    public static let version = "0.1.0"
    public static var description: String { "tern version \(version) (MOSN-compatible config; \(TLSLibrary.version))" }
}
