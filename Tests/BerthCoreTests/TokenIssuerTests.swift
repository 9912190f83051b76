import Foundation
import JWTKit
import Testing

@testable import BerthCore

/// Tokens verify only as Berth issues them: its issuer, at most 12 h.
@Suite struct TokenIssuerTests {
    func claims(iss: String = TokenIssuer.service, lifetime: Double = 3600) -> RegistryTokenClaims {
        let now = Date()
        return RegistryTokenClaims(
            iss: .init(value: iss), sub: .init(value: "admin"), aud: .init(value: [TokenIssuer.service]),
            exp: .init(value: now.addingTimeInterval(lifetime)), nbf: .init(value: now.addingTimeInterval(-1)),
            iat: .init(value: now), jti: .init(value: "t"), access: [], akid: "")
    }

    @Test func onlyBerthsOwnClaimsVerify() async throws {
        try await withScratchRegistry { _, store in
            let issuer = try await TokenIssuer(store: store, lifetime: 3600)
            let issued = try await issuer.issue(subject: "admin", accessKey: nil, access: [])
            #expect(await issuer.verify(issued.token) != nil)
            #expect(await issuer.verify(try await issuer.keys.sign(claims(), kid: "berth")) != nil)
            // Signed with the same key, but naming another issuer or living past 12 h.
            #expect(await issuer.verify(try await issuer.keys.sign(claims(iss: "elsewhere"), kid: "berth")) == nil)
            #expect(await issuer.verify(try await issuer.keys.sign(claims(lifetime: 12 * 3600 + 1), kid: "berth")) == nil)
        }
    }
}
