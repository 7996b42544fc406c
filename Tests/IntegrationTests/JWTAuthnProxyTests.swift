import Foundation
import Glibc
import Testing
import TernTestSupport

/// `jwt_authn` end to end: tokens made with the openssl CLI; a valid one reaches the upstream,
/// every bad or missing one gets 401 with `www-authenticate: Bearer` and the upstream sees nothing.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class JWTAuthnProxyTests {
    let upstream: PythonUpstream
    let tern: TernProcess
    let port = freePort()
    /// The same filter without `forward` (Envoy's default, false): the token header is removed.
    let strippingPort = freePort()
    let keyDirectory = NSTemporaryDirectory() + "tern-jwt-it-\(UUID().uuidString)"

    init() throws {
        upstream = try PythonUpstream()
        try FileManager.default.createDirectory(atPath: keyDirectory, withIntermediateDirectories: true)
        let (status, jwks) = try run("/usr/bin/env", ["python3", TestPaths.peers + "/jwt_tool.py", "keys", keyDirectory], timeout: 60)
        guard status == 0 else { throw TestError("jwt_tool keys: \(jwks)") }
        // The JWKS from a file this time (the unit tests use inlineString).
        try jwks.write(toFile: keyDirectory + "/jwks.json", atomically: true, encoding: .utf8)
        let jwksFile = keyDirectory + "/jwks.json"
        let (mainPort, stripPort) = (port, strippingPort)
        func listener(_ name: String, _ port: UInt16, forward: String) -> String {
            """
            { "name": "\(name)", "address": "127.0.0.1:\(port)", "bind_port": true,
                "stream_filters": [{ "type": "jwt_authn", "config": {
                   "providers": { "main": { "issuer": "https://issuer.example", "audiences": ["tern"]\(forward),
                                            "localJwks": { "filename": "\(jwksFile)" } } },
                   "rules": [ { "match": { "prefix": "/public" } },
                              { "match": { "prefix": "/" }, "requires": { "providerName": "main" } } ] } }],
                "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1",
                   "upstream_protocol": "Http1", "router_config_name": "r" } }] }] }
            """
        }
        let config = """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                           "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "up", "timeout": "5s"} }] }] }],
            "listeners": [\(listener("l", mainPort, forward: ", \"forward\": true")), \(listener("strip", stripPort, forward: ""))] }],
          "cluster_manager": { "clusters": [
             { "name": "up", "type": "SIMPLE", "connect_timeout": "2s", "hosts": [{ "address": "127.0.0.1:\(upstream.port)" }] }] } }
        """
        tern = try TernProcess(config: config, waitFor: [port, strippingPort], extraArguments: ["--workers", "1"])
    }

    deinit {
        tern.stop()
        upstream.stop()
        try? FileManager.default.removeItem(atPath: keyDirectory)
    }

    func token(_ claims: String, alg: String = "RS256", key: String = "rsa") throws -> String {
        try run("/usr/bin/env", ["python3", TestPaths.peers + "/jwt_tool.py", "token", keyDirectory, alg, key, claims], timeout: 30).1
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func claims(iss: String = "https://issuer.example", aud: String = "tern", exp: Int = 600, nbf: Int = -10) -> String {
        let now = Int(Date().timeIntervalSince1970)
        return "{\"iss\": \"\(iss)\", \"aud\": \"\(aud)\", \"exp\": \(now + exp), \"nbf\": \(now + nbf)}"
    }

    /// Status, the www-authenticate header and the body, through curl.
    func get(_ path: String, token: String?) throws -> (status: Int, challenge: String?) {
        let headerFile = keyDirectory + "/h-\(UUID().uuidString)"
        let out = try run("/usr/bin/curl", ["-s", "--max-time", "20", "-o", "/dev/null", "-D", headerFile, "-w", "%{http_code}"]
                          + (token.map { ["-H", "Authorization: Bearer \($0)"] } ?? []) + ["http://127.0.0.1:\(port)\(path)"]).1
        let headers = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
        let challenge = headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("www-authenticate:") }
            .map { $0.dropFirst("www-authenticate:".count).trimmingCharacters(in: .whitespaces) }
        return (Int(out) ?? -1, challenge)
    }

    @Test func validTokensReachTheUpstreamAndBadOnesGet401WithoutReachingIt() throws {
        let run = UUID().uuidString.prefix(8)
        let valid = try get("/ok-rs-\(run)", token: try token(claims()))
        #expect(valid.status == 200 && valid.challenge == nil)
        #expect(try get("/ok-es-\(run)", token: try token(claims(), alg: "ES256", key: "ec")).status == 200)
        #expect(try get("/public-\(run)", token: nil).status == 200)   // a rule without requires
        let bad: [(String, String?)] = [
            ("missing", nil),
            ("expired", try token(claims(exp: -600))),
            ("notyet", try token(claims(nbf: 600))),
            ("wrongkey", try token(claims(), key: "other")),
            ("audience", try token(claims(aud: "someone-else"))),
            ("issuer", try token(claims(iss: "https://evil.example"))),
            ("garbage", "not.a.token"),
        ]
        for (name, t) in bad {
            let r = try get("/bad-\(name)-\(run)", token: t)
            #expect(r.status == 401 && r.challenge == "Bearer", "\(name): \(r)")
        }
        #expect(waitUntil(timeout: 5) { self.upstream.requestLog.contains { $0.hasSuffix("/public-\(run)") } })
        let seen = upstream.requestLog
        #expect(seen.contains { $0.hasSuffix("/ok-rs-\(run)") } && seen.contains { $0.hasSuffix("/ok-es-\(run)") })
        #expect(!seen.contains { $0.contains("/bad-") }, "\(seen.suffix(10))")
    }

    /// The header names the upstream saw (its x-upstream-seen-headers answer header), via `port`.
    func seenHeaders(_ port: UInt16, token: String) throws -> String {
        let out = try run("/usr/bin/curl", ["-s", "--max-time", "20", "-o", "/dev/null", "-D", "-", "-H", "Authorization: Bearer \(token)",
                                            "-H", "X-Other: kept", "http://127.0.0.1:\(port)/seen"]).1
        return out.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-upstream-seen-headers:") }.map(String.init) ?? "none in: \(out)"
    }

    /// `forward: true` passes the token on; without it (Envoy's default) the header is removed
    /// before the request goes upstream, other headers kept.
    @Test func forwardFalseRemovesTheTokenHeaderBeforeTheUpstream() throws {
        let t = try token(claims())
        let forwarded = try seenHeaders(port, token: t)
        #expect(forwarded.contains("authorization") && forwarded.contains("x-other"), "\(forwarded)")
        let stripped = try seenHeaders(strippingPort, token: t)
        #expect(!stripped.contains("authorization") && stripped.contains("x-other"), "\(stripped)")
    }
}
