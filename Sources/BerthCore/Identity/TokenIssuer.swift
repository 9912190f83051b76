import BerthStorage
import Crypto
import Foundation
import JWTKit

/// One entry of a token's `access` claim (the Docker token format).
public struct TokenAccess: Codable, Sendable, Equatable {
    public var type: String
    public var name: String
    public var actions: [String]

    public init(type: String, name: String, actions: [String]) {
        self.type = type
        self.name = name
        self.actions = actions
    }
}

/// The claims of a registry token.
struct RegistryTokenClaims: JWTPayload {
    var iss: IssuerClaim
    var sub: SubjectClaim
    var aud: AudienceClaim
    var exp: ExpirationClaim
    var nbf: NotBeforeClaim
    var iat: IssuedAtClaim
    var jti: IDClaim
    var access: [TokenAccess]
    /// The access key the token was issued to; empty for anonymous tokens.
    var akid: String

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        try nbf.verifyNotBefore()
        try aud.verifyIntendedAudience(includes: TokenIssuer.service)
        // Berth signs only its own tokens, none valid longer than 12 h.
        guard iss.value == TokenIssuer.service else {
            throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "not issued by Berth")
        }
        guard exp.value.timeIntervalSince(iat.value) <= TokenIssuer.maxLifetime else {
            throw JWTError.claimVerificationFailure(failedClaim: exp, reason: "valid for longer than 12 h")
        }
    }
}

/// Issues and verifies ES256 JWTs with a key generated at first start and kept
/// in the `auth` column family.
public struct TokenIssuer: Sendable {
    public static let service = "berth"
    public static let maxLifetime: Double = 12 * 3600
    let keys: JWTKeyCollection
    public let lifetime: Double

    public init(store: Store, lifetime: Double) async throws {
        let slot = Key("S", "token-signing-key").bytes
        let pem: String
        if let stored = try store.db.get(.auth, slot) {
            pem = String(decoding: stored, as: UTF8.self)
        } else {
            pem = P256.Signing.PrivateKey().pemRepresentation
            var batch = WriteBatch()
            batch.put(.auth, slot, Array(pem.utf8))
            try store.db.write(batch, .synced)
        }
        keys = JWTKeyCollection()
        await keys.add(ecdsa: try ES256PrivateKey(pem: pem), kid: "berth")
        self.lifetime = min(max(lifetime, 1), Self.maxLifetime)
    }

    public struct Issued: Sendable {
        public var token: String
        public var expiresIn: Int
        public var issuedAt: Date
    }

    public func issue(subject: String, accessKey: String?, access: [TokenAccess], now: Date = Date()) async throws -> Issued {
        let claims = RegistryTokenClaims(
            iss: .init(value: Self.service), sub: .init(value: subject), aud: .init(value: [Self.service]),
            exp: .init(value: now.addingTimeInterval(lifetime)), nbf: .init(value: now.addingTimeInterval(-1)),
            iat: .init(value: now), jti: .init(value: UUID().uuidString.lowercased()), access: access,
            akid: accessKey ?? "")
        let token = try await keys.sign(claims, kid: "berth")
        return Issued(token: token, expiresIn: Int(lifetime), issuedAt: now)
    }

    /// The verified claims, or nil for a token that is forged, expired or not for this service.
    func verify(_ token: String) async -> RegistryTokenClaims? {
        try? await keys.verify(token, as: RegistryTokenClaims.self)
    }
}
