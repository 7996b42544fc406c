import Foundation

/// Throwaway certificates made once per test process with the `openssl` command: a CA, a server
/// certificate for localhost and 127.0.0.1 (SAN), a client certificate from the same CA, a client
/// certificate from another CA (a rogue client), and a key that matches no certificate. ECDSA
/// P-256, valid for two days, in a temporary directory.
public final class TestCertificates: Sendable {
    public let directory: String
    public var caCert: String { directory + "/ca.crt" }
    public var serverCert: String { directory + "/server.crt" }
    public var serverKey: String { directory + "/server.key" }
    public var clientCert: String { directory + "/client.crt" }
    public var clientKey: String { directory + "/client.key" }
    public var rogueClientCert: String { directory + "/rogue-client.crt" }
    public var rogueClientKey: String { directory + "/rogue-client.key" }
    public var strayKey: String { directory + "/stray.key" }

    private static let made: (certificates: TestCertificates?, failure: String) = {
        do { return (try TestCertificates(), "") } catch { return (nil, "\(error)") }
    }()

    /// The process's certificates, made on first use.
    public static func get() throws -> TestCertificates {
        guard let c = made.certificates else { throw TestError(made.failure) }
        return c
    }

    private init() throws {
        directory = NSTemporaryDirectory() + "tern-test-certs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try makeCA("ca", name: "Tern Test CA")
        try makeCA("rogue-ca", name: "Rogue Test CA")
        try makeLeaf("server", name: "localhost", ca: "ca", extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        try makeLeaf("client", name: "tern-test-client", ca: "ca", extensions: "extendedKeyUsage=clientAuth")
        try makeLeaf("rogue-client", name: "tern-test-client", ca: "rogue-ca", extensions: "extendedKeyUsage=clientAuth")
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", strayKey])
    }

    public func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    private func makeCA(_ base: String, name: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                     "-keyout", "\(directory)/\(base).key", "-out", "\(directory)/\(base).crt", "-subj", "/CN=\(name)",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    func makeLeaf(_ base: String, name: String, ca: String, extensions: String) throws {
        let ext = "\(directory)/\(base).ext"
        try extensions.write(toFile: ext, atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(directory)/\(base).key",
                     "-out", "\(directory)/\(base).csr", "-subj", "/CN=\(name)"])
        // A serial of its own rather than -CAcreateserial: leaves signed at the same time by one CA
        // (a reload test signs while traffic runs) would race on the shared ca.srl file.
        try openssl(["x509", "-req", "-in", "\(directory)/\(base).csr", "-CA", "\(directory)/\(ca).crt", "-CAkey", "\(directory)/\(ca).key",
                     "-set_serial", String(UInt64.random(in: 1...UInt64(Int64.max))), "-days", "2", "-extfile", ext, "-out", "\(directory)/\(base).crt"])
    }

    private func openssl(_ arguments: [String]) throws {
        let (status, output) = try run("/usr/bin/openssl", arguments, timeout: 30, includeStderr: true)
        guard status == 0 else { throw TestError("openssl \(arguments.joined(separator: " ")) failed: \(output)") }
    }
}
