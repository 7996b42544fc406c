import Glibc

/// A public key from a provider's JWKS, turned into the crypto library's form at config load (in
/// TernTLS, so TernCore has no OpenSSL). One dynamic call per verified token; the signature check
/// itself costs far more.
public protocol JWTVerificationKey: AnyObject, Sendable {
    var algorithm: JWTToken.Algorithm { get }
    var keyID: [UInt8]? { get }
    /// Whether `signature` (as the token carries it: RSASSA-PKCS1-v1_5, or ES256's raw r||s) signs
    /// `signingInput` with SHA-256 under this key.
    func verify(signingInput: UnsafeBufferPointer<UInt8>, signature: [UInt8]) -> Bool
}

/// MOSN's `jwt_authn` (Envoy's JwtAuthentication): the first rule whose path matches names the
/// requirement (providers, any/all of them, or missing allowed); a request that fails it gets 401
/// with `www-authenticate: Bearer` and never reaches an upstream.
public final class JWTAuthnFilter: Sendable {
    public final class Provider: Sendable {
        public let issuer: [UInt8]?
        public let audiences: [[UInt8]]
        public let keys: [any JWTVerificationKey]
        /// Where the token is: lowercased header names, each with the prefix before the token.
        public let locations: [(header: [UInt8], prefix: [UInt8])]
        /// Envoy's `forward`: false (its default) removes the token's headers before the request
        /// goes upstream.
        public let forward: Bool

        public init(issuer: String?, audiences: [String], keys: [any JWTVerificationKey], locations: [(header: String, prefix: String)],
                    forward: Bool = true) {
            self.issuer = issuer.map { Array($0.utf8) }
            self.audiences = audiences.map { Array($0.utf8) }
            self.keys = keys
            self.locations = locations.map { (Bytes.lowercased($0.header), Array($0.prefix.utf8)) }
            self.forward = forward
        }
    }

    public indirect enum Requirement: Sendable {
        case provider(Int)
        case any([Requirement])
        case all([Requirement])
        /// Passes when no provider finds a token; fails when one is there but not valid.
        case allowMissing
        /// Always passes (tokens are still looked at, nothing depends on them).
        case allowMissingOrFailed
    }

    public struct Rule: Sendable {
        public let path: [UInt8]
        public let isPrefix: Bool
        public let requirement: Requirement
        public init(path: String, isPrefix: Bool, requirement: Requirement) {
            self.path = Array(path.utf8)
            self.isPrefix = isPrefix
            self.requirement = requirement
        }
    }

    /// Clock skew allowed on `exp` and `nbf`, as Envoy's default.
    public static let leewaySeconds: Int64 = 60

    public let providers: [Provider]
    public let rules: [Rule]
    public let unauthorized = LocalAnswer(status: 401, headers: [HeaderToAdd(name: "www-authenticate", value: "Bearer", append: false)],
                                          body: "tern: jwt missing or not valid (jwt_authn)\n", code: "jwt_unauthorized")
    public var phase: FilterPhase { .beforeRoute }

    public init(providers: [Provider], rules: [Rule]) {
        self.providers = providers
        self.rules = rules
    }

    /// Lowercased names of the headers that carry the tokens of providers with `forward: false`.
    public var strippedHeaders: [[UInt8]] {
        var names: [[UInt8]] = []
        for p in providers where !p.forward {
            for l in p.locations where !names.contains(l.header) { names.append(l.header) }
        }
        return names
    }

    public enum TokenState: UInt8 { case unchecked, missing, valid, invalid }

    public func decide<R: StreamRequest>(_ request: R) -> FilterVerdict {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        return decide(request, now: Int64(now.tv_sec))
    }

    public func decide<R: StreamRequest>(_ request: R, now: Int64) -> FilterVerdict {
        let requirement: Requirement? = request.withPath { p, n in
            // A bolt call has no path: it is matched as "/", so catch-all rules check it too
            // rather than let it by.
            if n == 0 { return Self.rootPath.withUnsafeBufferPointer { firstRequirement($0.baseAddress!, 1) } }
            return firstRequirement(p, n)
        }
        guard let requirement else { return .proceed }
        var states = [TokenState](repeating: .unchecked, count: providers.count)
        return satisfies(requirement, request, now, &states) ? .proceed : .answer(unauthorized)
    }

    static let rootPath: [UInt8] = [UInt8(ascii: "/")]

    func firstRequirement(_ p: UnsafePointer<UInt8>, _ n: Int) -> Requirement? {
        for rule in rules where rule.isPrefix ? Bytes.hasPrefix(p, n, rule.path) : Bytes.equals(p, n, rule.path) {
            return rule.requirement
        }
        return nil
    }

    func satisfies<R: StreamRequest>(_ r: Requirement, _ request: R, _ now: Int64, _ states: inout [TokenState]) -> Bool {
        switch r {
        case .provider(let i): return state(i, request, now, &states) == .valid
        case .any(let list): return list.contains { satisfies($0, request, now, &states) }
        case .all(let list): return list.allSatisfy { satisfies($0, request, now, &states) }
        case .allowMissingOrFailed: return true
        case .allowMissing:
            return providers.indices.allSatisfy { state($0, request, now, &states) == .missing }
        }
    }

    func state<R: StreamRequest>(_ i: Int, _ request: R, _ now: Int64, _ states: inout [TokenState]) -> TokenState {
        if states[i] == .unchecked { states[i] = check(providers[i], request, now) }
        return states[i]
    }

    /// The provider's token, from its first location that has one, checked.
    public func check<R: StreamRequest>(_ provider: Provider, _ request: R, _ now: Int64) -> TokenState {
        for location in provider.locations {
            let found: TokenState? = request.withHeader(lowercasedName: location.header) { p, n in
                guard Bytes.hasPrefix(p, n, location.prefix) else { return nil }
                var start = location.prefix.count
                while start < n, p[start] == 32 { start += 1 }
                if start == n { return nil }
                return Self.verify(UnsafeBufferPointer(start: p + start, count: n - start), provider, now) ? .valid : .invalid
            } ?? nil
            if let found { return found }
        }
        return .missing
    }

    /// Signature first (by `kid` when the token names one), then `exp`, `nbf`, `iss`, `aud`.
    public static func verify(_ text: UnsafeBufferPointer<UInt8>, _ provider: Provider, _ now: Int64) -> Bool {
        guard let token = try? JWTToken.parse(text) else { return false }
        let input = UnsafeBufferPointer(rebasing: text[0..<token.signingInputLength])
        var signed = false
        for key in provider.keys where key.algorithm == token.algorithm && (token.keyID == nil || key.keyID == nil || key.keyID! == token.keyID!) {
            if key.verify(signingInput: input, signature: token.signature) { signed = true; break }
        }
        guard signed else { return false }
        if let exp = token.expiresAt, now > exp + leewaySeconds { return false }
        if let nbf = token.notBefore, now + leewaySeconds < nbf { return false }
        if let issuer = provider.issuer, token.issuer != issuer { return false }
        if !provider.audiences.isEmpty && !token.audiences.contains(where: { provider.audiences.contains($0) }) { return false }
        return true
    }
}
