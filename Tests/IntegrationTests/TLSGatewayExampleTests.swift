import Foundation
import Testing
import TernTestSupport

/// examples/tls-gateway as shipped: its make-certs.sh makes the certificates (into a temporary
/// directory, not the source tree), its two configs run unchanged but for that directory, on their
/// fixed ports. Part of ExampleTests so that it never runs beside the other examples on 2045/2046/8080.
extension ExampleTests {
    static let gatewayExample = TestPaths.root + "/examples/tls-gateway"

    /// The example's config with its certificate paths pointing at `certs`.
    func gatewayConfig(_ name: String, certs: String) throws -> String {
        try String(contentsOfFile: Self.gatewayExample + "/\(name).json", encoding: .utf8)
            .replacingOccurrences(of: "examples/tls-gateway/certs/", with: certs + "/")
    }

    @Test func tlsGatewayCarriesHTTPAndBoltOverMutualTLSAndRefusesOtherClients() throws {
        for port: UInt16 in [2045, 2046, 8080, 8081] {
            try #require(!canConnect(port), "port \(port) is taken by another process; the example needs it")
        }
        let certs = NSTemporaryDirectory() + "tern-tls-gateway-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: certs) }
        let made = try run(Self.gatewayExample + "/make-certs.sh", [certs], timeout: 60, includeStderr: true)
        try #require(made.0 == 0, "make-certs.sh: \(made.1)")

        let httpApp = try ChildProcess("/usr/bin/env", ["python3", TestPaths.root + "/examples/http-sample/upstream.py"], name: "http-app")
        defer { httpApp.stop() }
        let rpcApp = try ChildProcess(venvPython, [boltPeers, "server", "8081"], name: "rpc-app")
        defer { rpcApp.stop() }
        try #require(waitUntil(timeout: 15) { canConnect(8080) && canConnect(8081) }, "apps: \(httpApp.output) \(rpcApp.output)")
        let east = try TernProcess(config: gatewayConfig("server", certs: certs), waitFor: [2046])
        defer { east.stop() }
        let west = try TernProcess(config: gatewayConfig("client", certs: certs), waitFor: [2045], extraArguments: ["-l", "DEBUG"])
        defer { west.stop() }

        // HTTP and bolt from the west side's local apps, through both Terns.
        let http = try run("/usr/bin/curl", ["-sS", "--max-time", "10", "http://127.0.0.1:2045/hello"], includeStderr: true)
        #expect(http.1 == "hello from the app: path=/hello x-via-tern=east-gateway-mtls\n", "\(http.1)\n\(west.child.output.suffix(2000))")
        let caller = try ChildProcess(venvPython, [boltPeers, "client", "2045", "20", "4"], name: "bolt-caller")
        #expect(caller.waitForExit(timeout: 60) == 0, "\(caller.output)\n\(west.child.output.suffix(2000))")
        #expect(caller.output.contains("ok 80"), "\(caller.output)")
        // The hop between them is TLS: the HTTP pool and the bolt pool (one per worker that took a
        // caller) opened TLS connections.
        let established = west.child.output.components(separatedBy: "TLS with 127.0.0.1:2046 established (TLSv1.3").count - 1
        #expect(established >= 2, "\(west.child.output.suffix(3000))")

        // Straight to the east side's port: only the mesh's client certificate gets through.
        let direct = ["-sS", "--max-time", "10", "--resolve", "gateway.east.tern.local:2046:127.0.0.1",
                      "--cacert", certs + "/ca.crt", "https://gateway.east.tern.local:2046/direct"]
        let mesh = try run("/usr/bin/curl", ["--cert", certs + "/client.crt", "--key", certs + "/client.key"] + direct, includeStderr: true)
        #expect(mesh.1 == "hello from the app: path=/direct x-via-tern=east-gateway-mtls\n", "\(mesh.1)")

        let anonymous = try run("/usr/bin/curl", direct, includeStderr: true)
        #expect(anonymous.0 != 0 && !anonymous.1.contains("hello from the app"), "\(anonymous.1)")
        #expect(waitUntil(timeout: 5) { east.child.output.contains("failed: peer did not return a certificate") }, "\(east.child.output)")

        let rogue = try run("/usr/bin/curl", ["--cert", certs + "/rogue-client.crt", "--key", certs + "/rogue-client.key"] + direct, includeStderr: true)
        #expect(rogue.0 != 0 && !rogue.1.contains("hello from the app"), "\(rogue.1)")
        #expect(waitUntil(timeout: 5) {
            east.child.output.contains("certificate verify failed (client certificate: unable to get local issuer certificate)")
        }, "\(east.child.output)")

        let plain = try run("/usr/bin/curl", ["-sS", "--max-time", "10", "http://127.0.0.1:2046/plain"], includeStderr: true)
        #expect(plain.0 != 0 && !plain.1.contains("hello from the app"), "\(plain.1)")

        // The refused clients ended only their own connections.
        #expect(try run("/usr/bin/curl", ["-sS", "--max-time", "10", "http://127.0.0.1:2045/again"]).1.contains("path=/again"))
        west.stop()
        east.stop()
    }
}
