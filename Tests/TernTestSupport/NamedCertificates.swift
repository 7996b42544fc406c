import Foundation

extension TestCertificates {
    /// A server certificate from the test CA for `dnsNames` (subjectAltName), with `commonName`
    /// as its subject, made on first use under `base` in the certificates' directory.
    public func serverLeaf(_ base: String, commonName: String, dnsNames: [String]) throws -> (cert: String, key: String) {
        let paths = (directory + "/\(base).crt", directory + "/\(base).key")
        if FileManager.default.fileExists(atPath: paths.0) { return paths }
        let names = dnsNames.map { "DNS:\($0)" }.joined(separator: ",")
        try makeLeaf(base, name: commonName, ca: "ca", extensions: (names.isEmpty ? "" : "subjectAltName=\(names)\n") + "extendedKeyUsage=serverAuth")
        return paths
    }
}
