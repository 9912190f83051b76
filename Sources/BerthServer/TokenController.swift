import BerthCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `/auth/token`: Docker's token endpoint (GET with Basic) and the OAuth2
/// password grant (POST form).
struct TokenController {
    let access: AccessControl

    func register(on router: Router<BerthRequestContext>) {
        router.get("auth/token") { request, context in
            let scopes = request.uri.queryParameters.getAll("scope").flatMap { value in
                String(value).split(separator: " ").map { String($0) }
            }
            return await issue(authorization: request.headers[.authorization], scopes: scopes, context: context)
        }
        router.post("auth/token") { request, context in
            var request = request
            guard let body = try await request.collectBody(atMost: 64 << 10) else {
                return Self.error(413, "invalid_request", "token requests are limited to 64 KiB")
            }
            let form = Self.parseForm(String(buffer: body))
            switch form["grant_type"] {
            case "password":
                guard let username = form["username"], let password = form["password"] else {
                    return Self.error(400, "invalid_request", "username and password are required")
                }
                let basic = "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
                let scopes = (form["scope"] ?? "").split(separator: " ").map(String.init)
                return await issue(authorization: basic, scopes: scopes, context: context)
            case .some(let grant):
                return Self.error(400, "unsupported_grant_type", "grant_type '\(grant)' is not supported; use 'password'")
            case .none:
                return Self.error(400, "invalid_request", "grant_type is required")
            }
        }
    }

    private func issue(authorization: String?, scopes: [String], context: BerthRequestContext) async -> Response {
        let principal: Principal
        switch await access.authenticate(authorization: authorization, source: context.source) {
        case .anonymous:
            principal = .anonymous
        case .authenticated(let who, let method):
            // A token is not a credential for a new one: it would be renewed forever,
            // each time with every right of its key's user, whatever its own scope.
            guard method == "basic" else {
                var response = Self.error(401, "invalid_client", "tokens are issued for an access key and secret (Basic), not for a token")
                response.headers[.wwwAuthenticate] = Challenge.basic
                return response
            }
            principal = who
            // The request's log line names who asked, as for every authenticated request.
            context.trace.actor = who.actor
        case .failed(let reason):
            var response = Self.error(401, "invalid_client", "authentication failed: \(reason)")
            response.headers[.wwwAuthenticate] = Challenge.basic
            return response
        case .throttled(let retryAfter):
            var response = Self.error(429, "too_many_requests", "too many failed authentications; retry in \(retryAfter) s")
            response.headers[.retryAfter] = String(retryAfter)
            return response
        }
        var plain = principal
        plain.tokenAccess = nil
        let grants = access.grant(plain, scopes: scopes)
        do {
            let issued = try await access.tokens.issue(subject: principal.user ?? "", accessKey: principal.accessKey, access: grants)
            if principal.user != nil {
                await access.audit.record(
                    actor: principal.actor, source: context.source, action: "token.issue",
                    target: scopes.isEmpty ? "-" : scopes.joined(separator: " "))
            }
            let object: [String: Any] = [
                "token": issued.token, "access_token": issued.token, "expires_in": issued.expiresIn,
                "issued_at": AdminSupport.timestamp(issued.issuedAt),
            ]
            let data = JSONText.bytes(object)
            return Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        } catch {
            return Self.error(500, "server_error", "could not sign the token")
        }
    }

    static func error(_ status: Int, _ code: String, _ description: String) -> Response {
        let data = JSONText.bytes(["error": code, "error_description": description])
        return Response(
            status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func parseForm(_ text: String) -> [String: String] {
        var form: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            if let key = parts.first { form[key] = parts.count > 1 ? parts[1] : "" }
        }
        return form
    }
}
