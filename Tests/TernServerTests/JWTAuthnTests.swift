import Foundation
import Testing
@testable import TernServer
@testable import TernCore
import TernTestSupport

/// Keys and tokens made once with the openssl CLI (Tests/IntegrationTests/peers/jwt_tool.py).
final class JWTTestKeys: Sendable {
    static let shared = try! JWTTestKeys()
    let directory: String
    let jwks: String

    init() throws {
        directory = NSTemporaryDirectory() + "tern-jwt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (status, out) = try run("/usr/bin/env", ["python3", TestPaths.peers + "/jwt_tool.py", "keys", directory], timeout: 60)
        guard status == 0 else { throw TestError("jwt_tool keys: \(out)") }
        jwks = out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func token(_ claims: String, alg: String = "RS256", key: String = "rsa", header: String? = nil) -> String {
        let args = [TestPaths.peers + "/jwt_tool.py", "token", directory, alg, key, claims] + (header.map { [$0] } ?? [])
        return (try! run("/usr/bin/env", ["python3"] + args, timeout: 30)).1.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

struct JWTAuthnTests {
    let base = StreamFilterTests()
    let at = "$.servers[0].listeners[0].stream_filters[0].config"
    let now: Int64 = 1_800_000_000

    func parse(_ s: String) -> JWTToken.Failure? {
        let b = Array(s.utf8)
        do { _ = try b.withUnsafeBufferPointer { p throws(JWTToken.Failure) in try JWTToken.parse(p) }; return nil } catch { return error }
    }

    func b64(_ s: String) -> String {
        Data(s.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    // MARK: the token decoder

    @Test func malformedTokensAreRefusedBeforeAnyKeyIsTried() {
        let h = b64("{\"alg\":\"RS256\"}"), p = b64("{\"iss\":\"x\"}")
        #expect(parse("\(h).\(p).c2ln") == nil)
        #expect(parse("abc") == .notThreeParts)
        #expect(parse("\(h).\(p)") == .notThreeParts)
        #expect(parse("\(h).\(p).c2ln.c2ln") == .notThreeParts)
        #expect(parse("\(h)..c2ln") == .notThreeParts)
        #expect(parse("\(h).\(p).") == .notThreeParts)
        #expect(parse("\(h).\(p).c2l=") == .badBase64)          // padding
        #expect(parse("\(h).\(p).c2l+") == .badBase64)          // standard alphabet
        #expect(parse("\(h).\(p).c") == .badBase64)             // a length no encoding has
        #expect(parse("\(h).\(p).c2lv") == nil)
        #expect(parse("\(h).\(p).c2m") == .badBase64)           // non-zero leftover bits
        #expect(parse(String(repeating: "a", count: 9000) + ".\(p).c2ln") == .tooLong)
        #expect(parse("\(b64("{\"alg\":\"none\"}")).\(p).c2ln") == .unsupportedAlgorithm)
        #expect(parse("\(b64("{\"alg\":\"HS256\"}")).\(p).c2ln") == .unsupportedAlgorithm)
        #expect(parse("\(b64("{\"typ\":\"JWT\"}")).\(p).c2ln") == .unsupportedAlgorithm)
        #expect(parse("\(b64("{\"alg\":\"RS256\",\"crit\":[\"exp\"]}")).\(p).c2ln") == .criticalExtension)
        #expect(parse("\(b64("{\"alg\":\"RS256\"")).\(p).c2ln") == .badJSON)
        #expect(parse("\(b64("[\"RS256\"]")).\(p).c2ln") == .badJSON)
        #expect(parse("\(h).\(b64("{\"x\":" + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "}")).c2ln") == .badJSON)   // too deep
        #expect(parse("\(h).\(b64("{\"x\":[[[1]]], \"y\": {\"z\": \"\\u00e9\"}}")).c2ln") == nil)
        #expect(parse("\(h).\(b64("{\"exp\":\"soon\"}")).c2ln") == .badClaim)
        #expect(parse("\(h).\(b64("{\"aud\":5}")).c2ln") == .badClaim)
        #expect(parse("\(h).\(b64("{\"iss\":\"x\"} trailing")).c2ln") == .badJSON)
    }

    @Test func claimsAreRead() throws {
        let text = Array("\(b64("{\"alg\":\"ES256\",\"kid\":\"k1\"}")).\(b64("{\"iss\":\"me\",\"aud\":[\"a\",\"b\"],\"exp\":1700000000.5,\"nbf\":10,\"other\":{\"deep\":[1,2]}}")).c2ln".utf8)
        let t = try text.withUnsafeBufferPointer { p throws(JWTToken.Failure) in try JWTToken.parse(p) }
        #expect(t.algorithm == .es256 && t.keyID == Array("k1".utf8) && t.issuer == Array("me".utf8))
        #expect(t.audiences == [Array("a".utf8), Array("b".utf8)] && t.expiresAt == 1_700_000_000 && t.notBefore == 10)
        #expect(t.signature == Array("sig".utf8))
    }

    // MARK: config

    func jwt(_ config: String) -> String { "{\"type\": \"jwt_authn\", \"config\": {\(config)}}" }

    func provider(_ extra: String = "") -> String {
        // The JWKS as a JSON string (it holds no backslashes).
        let inline = "\"" + JWTTestKeys.shared.jwks.replacingOccurrences(of: "\"", with: "\\\"") + "\""
        return "\"issuer\": \"https://issuer.example\", \"audiences\": [\"tern\"], \"localJwks\": {\"inlineString\": \(inline)}\(extra)"
    }

    func filter(_ config: String) throws -> JWTAuthnFilter {
        let p = try base.plan(jwt(config))
        guard case .jwtAuthn(let f) = try #require(p.beforeRoute.first) else { throw TestError("not jwt_authn") }
        return f
    }

    @Test func configErrorsNameTheirPath() {
        let r = load(base.withFilters(jwt("""
            "providers": {"p": {"issuer": "i", "localJwks": {"inlineString": "{\\"keys\\": [{\\"kty\\": \\"oct\\", \\"k\\": \\"AA\\"}]}"}},
                          "q": {"remoteJwks": {"httpUri": {"uri": "https://x"}}},
                          "r": {"localJwks": {"inlineString": "not json"}}},
            "rules": [{"match": {"prefix": "/", "regex": "x"}, "requires": {"providerName": "p"}},
                      {"match": {"prefix": "/a"}, "requires": {"providerName": "nope"}},
                      {"match": {"prefix": "/b"}, "requires": {"requiresAny": {"requirements": [{"providerName": "p", "allowMissing": {}}]}}},
                      {"match": {"prefix": "/c"}, "requires": {"requiresAll": {}}}],
            "bypass": true
            """)))
        #expect(r.plan == nil)
        #expect(hasError(r, at: "\(at).bypass"), "\(r.diagnostics.errors)")
        #expect(hasError(r, at: "\(at).providers.p.localJwks.inlineString.keys[0].kty", saying: "oct"))
        #expect(hasError(r, at: "\(at).providers.q.remoteJwks"))
        #expect(hasError(r, at: "\(at).providers.r.localJwks.inlineString", saying: "JWKS"))
        #expect(hasError(r, at: "\(at).rules[0].match.regex"))
        #expect(hasError(r, at: "\(at).rules[1].requires.providerName", saying: "nope"))
        #expect(hasError(r, at: "\(at).rules[2].requires.requiresAny.requirements[0]", saying: "exactly one"))
        #expect(hasError(r, at: "\(at).rules[3].requires.requiresAll.requirements"))
    }

    /// forward false (or absent) strips the token header from HTTP requests; a listener whose proxy
    /// may take bolt (whose header maps go upstream unchanged) must say forward: true.
    @Test func forwardFalseStripsOnHTTPAndIsRefusedWhereBoltMayCome() throws {
        let stripping = try base.plan(jwt("\"providers\": {\"p\": {\(provider())}}, \"rules\": []"))
        #expect(stripping.strippedRequestHeaders == [Array("authorization".utf8)])
        let forwarding = try base.plan(jwt("\"providers\": {\"p\": {\(provider(", \"forward\": true"))}}, \"rules\": []"))
        #expect(forwarding.strippedRequestHeaders.isEmpty)
        let auto = base.withFilters(jwt("\"providers\": {\"p\": {\(provider())}}, \"rules\": []"))
            .replacingOccurrences(of: "\"downstream_protocol\": \"Http1\"", with: "\"downstream_protocol\": \"Auto\"")
        let r = load(auto)
        #expect(r.plan == nil && r.diagnostics.errors.contains { $0.contains("listeners[0].stream_filters") && $0.contains("forward: true") },
                "\(r.diagnostics.errors)")
    }

    // MARK: verification

    func status(_ f: JWTAuthnFilter, _ token: String?, path: String = "/api", header: String = "authorization", prefix: String = "Bearer ") -> Int? {
        let r = FakeRequest(path: path, headers: token.map { [(header, prefix + $0)] } ?? [])
        if case .answer(let a) = f.decide(r, now: now) { return a.status }
        return nil
    }

    func claims(iss: String = "https://issuer.example", aud: String = "\"tern\"", exp: Int64? = nil, nbf: Int64? = nil) -> String {
        "{\"iss\": \"\(iss)\", \"aud\": \(aud), \"exp\": \(exp ?? now + 600)\(nbf.map { ", \"nbf\": \($0)" } ?? "")}"
    }

    @Test func signaturesExpiryIssuerAndAudienceAreChecked() throws {
        let keys = JWTTestKeys.shared
        let f = try filter("\"providers\": {\"p\": {\(provider())}}, \"rules\": [{\"match\": {\"prefix\": \"/api\"}, \"requires\": {\"providerName\": \"p\"}}]")
        #expect(f.unauthorized.headers.first?.lowercasedName == Array("www-authenticate".utf8))
        #expect(status(f, keys.token(claims())) == nil)                                       // RS256
        #expect(status(f, keys.token(claims(), alg: "ES256", key: "ec")) == nil)                   // ES256 (r||s)
        #expect(status(f, keys.token(claims(aud: "[\"x\", \"tern\"]"))) == nil)
        #expect(status(f, keys.token(claims(exp: now - 30))) == nil)                          // within the 60 s leeway
        #expect(status(f, keys.token(claims(exp: now - 120))) == 401)                         // expired
        #expect(status(f, keys.token(claims(nbf: now + 600))) == 401)                         // not yet valid
        #expect(status(f, keys.token(claims(iss: "https://other"))) == 401)
        #expect(status(f, keys.token(claims(aud: "\"someone-else\""))) == 401)
        #expect(status(f, keys.token(claims(), key: "other")) == 401)                         // a key not in the JWKS
        #expect(status(f, keys.token(claims(), alg: "ES256", key: "rsa")) == 401)                  // RS256 signature, ES256 header
        let good = keys.token(claims())
        var tampered = Array(good.utf8); tampered[tampered.count / 2] ^= 1
        #expect(status(f, String(decoding: tampered, as: UTF8.self)) == 401)
        let ec = keys.token(claims(), alg: "ES256", key: "ec")
        var ecTampered = Array(ec.utf8); ecTampered[ecTampered.count - 5] ^= 1
        #expect(status(f, String(decoding: ecTampered, as: UTF8.self)) == 401)
        #expect(status(f, nil) == 401)                                                        // missing
        #expect(status(f, good, prefix: "Basic ") == 401)
        #expect(status(f, "\(good.split(separator: ".")[0]).\(good.split(separator: ".")[1]).") == 401)
        #expect(status(f, keys.token(claims(), header: "{\"alg\": \"none\"}")) == 401)
        #expect(status(f, nil, path: "/public") == nil)                                       // no rule matches
    }

    @Test func requirementsCombineAsEnvoys() throws {
        let keys = JWTTestKeys.shared
        // MOSN's jwtauthn sample: a valid token or none at all.
        let sample = try filter("""
            "providers": {"origins-0": {\(provider())}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requiresAny": {"requirements": [{"providerName": "origins-0"}, {"allowMissing": {}}]}}}]
            """)
        #expect(status(sample, nil) == nil)
        #expect(status(sample, "token") == 401)
        #expect(status(sample, keys.token(claims())) == nil)
        // A bolt call (no path) is matched as "/": the catch-all rule checks its header map too.
        #expect(status(sample, "token", path: "") == 401)
        #expect(status(sample, keys.token(claims()), path: "") == nil)
        let lenient = try filter("\"providers\": {\"p\": {\(provider())}}, \"rules\": [{\"match\": {\"path\": \"/api\"}, \"requires\": {\"allowMissingOrFailed\": {}}}]")
        #expect(status(lenient, "token") == nil)
        let custom = try filter("""
            "providers": {"p": {\(provider(", \"fromHeaders\": [{\"name\": \"x-jwt\", \"valuePrefix\": \"\"}], \"forward\": true"))}},
            "rules": [{"match": {"path": "/api"}, "requires": {"requiresAll": {"requirements": [{"providerName": "p"}]}}}]
            """)
        #expect(status(custom, keys.token(claims()), header: "x-jwt", prefix: "") == nil)
        #expect(status(custom, keys.token(claims())) == 401)            // Authorization is not where this provider looks
        #expect(status(custom, nil, path: "/api/x") == nil)             // `path` is exact
    }
}
