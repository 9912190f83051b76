import Foundation

/// Authentication and authorization for every request: credentials to a
/// ``Principal``, and a principal plus an action to a decision.
public final class AccessControl: Sendable {
    public let identity: Identity
    public let tokens: TokenIssuer
    public let throttle: AuthThrottle
    public let audit: AuditLog
    let registry: Registry

    public init(registry: Registry, identity: Identity, tokens: TokenIssuer, throttle: AuthThrottle, audit: AuditLog) {
        self.registry = registry
        self.identity = identity
        self.tokens = tokens
        self.throttle = throttle
        self.audit = audit
    }

    public enum Authentication: Sendable {
        /// No credentials were presented.
        case anonymous
        case authenticated(Principal, method: String)
        /// Credentials were presented and are not valid.
        case failed(reason: String)
        /// Too many failures from this source or on this key.
        case throttled(retryAfter: Int)
    }

    /// Resolves an `Authorization` header. Failures are counted and audited.
    public func authenticate(authorization: String?, source: String) async -> Authentication {
        guard let authorization, !authorization.isEmpty else { return .anonymous }
        let basic = Self.basicCredentials(authorization)
        if let wait = throttle.retryAfter(source: source, accessKey: basic?.0) { return .throttled(retryAfter: wait) }
        let result: Authentication
        if let (key, secret) = basic {
            if let principal = identity.authenticate(accessKey: key, secret: secret) {
                throttle.recordSuccess(source: source, accessKey: key)
                result = .authenticated(principal, method: "basic")
            } else {
                result = .failed(reason: "invalid access key or secret")
            }
        } else if authorization.hasASCIICaseInsensitivePrefix("bearer ") {
            let token = String(authorization.dropFirst(7).trimmingHTTPWhitespace())
            result = await principal(bearer: token).map { .authenticated($0, method: "bearer") }
                ?? .failed(reason: "invalid or expired token")
        } else {
            result = .failed(reason: "unsupported authorization scheme")
        }
        if case .failed(let reason) = result {
            // Failures count per key only for keys that exist: guessing at a made-up key
            // gets nowhere anyway, and each new string would be a table entry.
            let knownKey = basic.flatMap { identity.key($0.0) != nil ? $0.0 : nil }
            throttle.recordFailure(source: source, accessKey: knownKey)
            // The key id is the caller's claim, not an identity: it goes in `target`, the actor stays anonymous.
            // Only if it looks like a key id: swapped fields (`-u <secret> -p <key>`) would put a secret in the log.
            let claimed = basic.map { knownKey ?? (Identity.looksLikeKeyID($0.0) ? $0.0 : "malformed key id") }
            await audit.record(
                actor: "anonymous", source: source, action: "auth.failure", target: claimed ?? "token",
                outcome: "failure", detail: reason)
        }
        return result
    }

    /// The caller behind a bearer token, if it verifies and its key and user are still active.
    func principal(bearer token: String) async -> Principal? {
        guard let claims = await tokens.verify(token) else { return nil }
        var access: [String: Set<String>] = [:]
        for entry in claims.access where entry.type == "repository" {
            access[entry.name, default: []].formUnion(entry.actions)
        }
        if claims.akid.isEmpty {
            var anonymous = Principal.anonymous
            anonymous.tokenAccess = access
            return anonymous
        }
        guard var principal = identity.principal(forKey: claims.akid), principal.user == claims.sub.value else { return nil }
        principal.tokenAccess = access
        return principal
    }

    static func basicCredentials(_ header: String) -> (String, String)? {
        guard header.hasASCIICaseInsensitivePrefix("basic ") else { return nil }
        guard let data = Data(base64Encoded: String(header.dropFirst(6).trimmingHTTPWhitespace())),
            let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return ("", "") }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    // MARK: Authorization

    public enum Decision: Sendable, Equatable {
        case allow
        /// Not authenticated (or the token lacks the scope): 401 with a challenge.
        case challenge(insufficientScope: Bool)
        /// Authenticated, but not allowed: 403.
        case deny
    }

    /// May `principal` do `permission` on repository `name` of `registryName`?
    public func decide(_ principal: Principal, _ permission: Permission, registry registryName: String, repository name: String?) -> Decision {
        // Read only where it matters: users' rights come from their bindings.
        func anonymousPull() -> Bool { (try? registry.registry(registryName))??.anonymousPull ?? false }
        let readOnly = permission == .pull || permission == .view
        // A signed-in user's rights, and what anyone may read: `docker login` must not take pulls away.
        func userDecision() -> Decision {
            principal.rights.allows(permission, on: registryName) || readOnly && anonymousPull() ? .allow : .deny
        }
        if let tokenAccess = principal.tokenAccess, let name {
            let needed = Self.action(for: permission)
            guard let granted = tokenAccess[name], granted.contains(needed) || granted.contains("*") else {
                return .challenge(insufficientScope: true)
            }
            // Rights may have changed since the token was issued.
            if principal.user == nil { return readOnly && anonymousPull() ? .allow : .challenge(insufficientScope: true) }
            return userDecision()
        }
        if principal.user != nil { return userDecision() }
        if readOnly && principal.tokenAccess == nil && anonymousPull() { return .allow }
        return .challenge(insufficientScope: false)
    }

    /// The token action that stands for a permission.
    public static func action(for permission: Permission) -> String {
        switch permission {
        case .view, .pull: return "pull"
        case .push: return "push"
        case .delete, .administer: return "delete"
        }
    }

    // MARK: Tokens

    /// Grants, for each requested scope, the actions the caller may take.
    public func grant(_ principal: Principal, scopes: [String]) -> [TokenAccess] {
        var grants: [TokenAccess] = []
        for scope in scopes {
            let parts = scope.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 3 else { continue }
            let type = parts[0]
            let name = parts[1..<(parts.count - 1)].joined(separator: ":")
            let requested = Set(parts[parts.count - 1].split(separator: ",").map(String.init))
            if type == "registry", name == "catalog" {
                grants.append(TokenAccess(type: type, name: name, actions: principal.user != nil ? ["*"] : []))
                continue
            }
            guard type == "repository", let (registryName, _) = try? Names.splitRepository(name) else { continue }
            var actions: [String] = []
            let candidates: [(String, Permission)] = [("pull", .pull), ("push", .push), ("delete", .delete)]
            for (action, permission) in candidates where requested.contains(action) || requested.contains("*") {
                var unscoped = principal
                unscoped.tokenAccess = nil
                if decide(unscoped, permission, registry: registryName, repository: name) == .allow { actions.append(action) }
            }
            grants.append(TokenAccess(type: type, name: name, actions: actions))
        }
        return grants
    }
}
