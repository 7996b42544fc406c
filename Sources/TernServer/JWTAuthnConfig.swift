import TernCore
import TernTLS

/// `jwt_authn` (Envoy's JwtAuthentication as MOSN reads it, camelCase): `providers` {name:
/// {`issuer`, `audiences`, `localJwks` {`inlineString` | `filename`}, `forward`, `fromHeaders`}},
/// `rules[]` {`match` {`prefix` | `path`}, `requires`}. JWKS keys become OpenSSL keys here, once.
struct JWTAuthnKind: StreamFilterKind {
    func compile(_ c: JSONObject, context: StreamFilterContext) -> StreamFilter? {
        c.checkPolicyKeys(["providers", "rules"])
        let diagnostics = context.diagnostics
        let errorsBefore = diagnostics.errors.count
        var providerIndex: [String: Int] = [:]
        var providers: [JWTAuthnFilter.Provider] = []
        if let p = c.object("providers") {
            for name in p.dict.keys.sorted() {
                guard let o = p.object(name) else { continue }
                if let provider = compileProvider(o, diagnostics) {
                    providerIndex[name] = providers.count
                    providers.append(provider)
                }
            }
        }
        if providers.isEmpty && diagnostics.errors.count == errorsBefore { diagnostics.error(c.sub("providers"), "at least one provider is required") }
        var rules: [JWTAuthnFilter.Rule] = []
        for r in c.objects("rules") {
            r.checkPolicyKeys(["match", "requires"])
            guard let m = r.object("match") else { diagnostics.error(r.sub("match"), "required"); continue }
            m.checkPolicyKeys(["prefix", "path"])
            let prefix = m.string("prefix"), path = m.string("path")
            guard (prefix == nil) != (path == nil) else { diagnostics.error(m.path, "exactly one of prefix or path is required"); continue }
            // A rule without `requires` lets its requests through unchecked, as in Envoy.
            var required: JWTAuthnFilter.Requirement? = .allowMissingOrFailed
            if let o = r.object("requires") { required = requirement(o, providerIndex, diagnostics) }
            if let requirement = required { rules.append(JWTAuthnFilter.Rule(path: prefix ?? path!, isPrefix: prefix != nil, requirement: requirement)) }
        }
        guard diagnostics.errors.count == errorsBefore else { return nil }
        if rules.isEmpty { diagnostics.warn(c.sub("rules"), "no rules: no request is checked") }
        return .jwtAuthn(JWTAuthnFilter(providers: providers, rules: rules))
    }

    func compileProvider(_ o: JSONObject, _ diagnostics: Diagnostics) -> JWTAuthnFilter.Provider? {
        o.checkPolicyKeys(["issuer", "audiences", "localjwks", "forward", "fromheaders"])
        let errorsBefore = diagnostics.errors.count
        var locations: [(header: String, prefix: String)] = []
        for h in o.objects("fromHeaders") {
            h.checkPolicyKeys(["name", "valueprefix"])
            if let name = h.requiredString("name") { locations.append((name, h.string("valuePrefix") ?? "")) }
        }
        if locations.isEmpty { locations = [("authorization", "Bearer ")] }
        var keys: [any JWTVerificationKey] = []
        if let jwks = o.object("localJwks") {
            jwks.checkPolicyKeys(["inlinestring", "filename"])
            var text: String?
            if let inline = jwks.string("inlineString") { text = inline }
            else if let file = jwks.string("filename") {
                text = readFile(file)
                if text == nil { diagnostics.error(jwks.sub("filename"), "cannot read \(file)") }
            } else { diagnostics.error(jwks.path, "inlineString or filename is required") }
            if let text { keys = parseJWKS(text, path: jwks.sub(jwks.has("inlineString") ? "inlineString" : "filename"), diagnostics) }
        } else {
            diagnostics.error(o.sub("localJwks"), "required: Tern verifies with local keys only (no remoteJwks)")
        }
        guard diagnostics.errors.count == errorsBefore else { return nil }
        return JWTAuthnFilter.Provider(issuer: o.string("issuer").flatMap { $0.isEmpty ? nil : $0 }, audiences: o.strings("audiences") ?? [],
                                       keys: keys, locations: locations, forward: o.bool("forward") ?? false)
    }

    /// A JWKS document: `keys[]` of RSA (`n`, `e`) and EC P-256 (`x`, `y`) keys; anything else is
    /// an error naming the key, so no provider is left without the keys it was meant to have.
    func parseJWKS(_ text: String, path: String, _ diagnostics: Diagnostics) -> [any JWTVerificationKey] {
        guard let value = try? JSONParser.parse(text), let doc = JSONObject(value, path: path, diagnostics: diagnostics) else {
            diagnostics.error(path, "not a JWKS JSON document")
            return []
        }
        var keys: [any JWTVerificationKey] = []
        let list = doc.objects("keys")
        if list.isEmpty { diagnostics.error(doc.sub("keys"), "no keys") }
        for k in list {
            k.checkKeys(known: ["kty", "kid", "alg", "use", "n", "e", "crv", "x", "y"], ignored: ["x5c", "x5t", "x5t#S256", "key_ops"])
            func bytes(_ key: String) -> [UInt8]? {
                guard let s = k.requiredString(key) else { return nil }
                guard let b = try? Base64URL.decode(s), !b.isEmpty else { diagnostics.error(k.sub(key), "not base64url"); return nil }
                return b
            }
            let kid = k.string("kid")
            let kty: String? = k.string("kty")
            switch kty {
            case "RSA"?:
                if let alg = k.string("alg"), alg != "RS256" { diagnostics.error(k.sub("alg"), "\(alg): Tern verifies RS256 and ES256 only"); continue }
                guard let n = bytes("n"), let e = bytes("e") else { continue }
                guard let key = OpenSSLJWTKey.rsa(modulus: n, exponent: e, keyID: kid) else { diagnostics.error(k.path, "not a usable RSA key (2048 bits or more)"); continue }
                keys.append(key)
            case "EC"?:
                guard k.string("crv") == "P-256" else { diagnostics.error(k.sub("crv"), "only P-256 (ES256) is supported"); continue }
                if let alg = k.string("alg"), alg != "ES256" { diagnostics.error(k.sub("alg"), "\(alg): P-256 keys sign ES256"); continue }
                guard let x = bytes("x"), let y = bytes("y") else { continue }
                guard let key = OpenSSLJWTKey.p256(x: x, y: y, keyID: kid) else { diagnostics.error(k.path, "not a point on P-256"); continue }
                keys.append(key)
            case let other?: diagnostics.error(k.sub("kty"), "\(other): Tern verifies RSA and EC keys only")
            case nil: diagnostics.error(k.sub("kty"), "required")
            }
        }
        return keys
    }

    /// `providerName`, `requiresAny`/`requiresAll` {`requirements`: [...]}, `allowMissing`,
    /// `allowMissingOrFailed`; one of them per object.
    func requirement(_ o: JSONObject, _ providers: [String: Int], _ diagnostics: Diagnostics) -> JWTAuthnFilter.Requirement? {
        o.checkPolicyKeys(["providername", "requiresany", "requiresall", "allowmissing", "allowmissingorfailed"])
        let present = o.dict.keys.filter { o.dict[$0] != .null }
        guard present.count == 1, let key = present.first else {
            diagnostics.error(o.path, "exactly one of providerName, requiresAny, requiresAll, allowMissing, allowMissingOrFailed is required")
            return nil
        }
        switch key.lowercased() {
        case "providername":
            guard let name = o.string(key) else { return nil }
            guard let i = providers[name] else { diagnostics.error(o.sub(key), "unknown provider \"\(name)\""); return nil }
            return .provider(i)
        case "allowmissing": return .allowMissing
        case "allowmissingorfailed": return .allowMissingOrFailed
        default:
            guard let group = o.object(key) else { return nil }
            group.checkPolicyKeys(["requirements"])
            let list = group.objects("requirements")
            if list.isEmpty { diagnostics.error(group.sub("requirements"), "at least one requirement is required"); return nil }
            let parts = list.compactMap { requirement($0, providers, diagnostics) }
            guard parts.count == list.count else { return nil }
            return key.lowercased() == "requiresany" ? .any(parts) : .all(parts)
        }
    }
}
