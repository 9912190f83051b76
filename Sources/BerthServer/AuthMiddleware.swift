import BerthCore
import HTTPTypes
import Hummingbird

/// Turns the `Authorization` header into the context's principal on `/v2`,
/// `/api/v1` and, unless it is open (`metrics_access: anonymous`), `/metrics`
/// (Basic only on the last two: tokens are for `/v2`). Bad credentials end the
/// request here (401, or 429 when throttled); no credentials go on as
/// anonymous, and each route decides.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = BerthRequestContext
    let access: AccessControl
    let challenge: Challenge
    let authenticatesMetrics: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        let isRegistry = path == "/v2" || path.hasPrefix("/v2/")
        // As the router sees it: empty path components are skipped (`/metrics/`, `//metrics`).
        let isMetrics = path.split(separator: "/").elementsEqual(["metrics"])
        guard isRegistry || path.hasPrefix("/api/v1") || (isMetrics && authenticatesMetrics) else {
            return try await next(request, context)
        }
        var context = context
        switch await access.authenticate(authorization: request.headers[.authorization], source: context.source) {
        case .anonymous:
            break
        case .authenticated(let principal, let method):
            // A token's scope names repositories and pull/push/delete, nothing of the
            // admin API: there a token would act with every right of its key's user.
            if !isRegistry, method != "basic" {
                return challenge.admin(request, detail: "\(isMetrics ? "/metrics" : "the admin API") takes an access key and secret (Basic), not a token")
            }
            context.principal = principal
            context.trace.actor = principal.actor
            if isRegistry, path == "/v2/" || path == "/v2", method == "basic" {
                await access.audit.record(actor: principal.actor, source: context.source, action: "login", target: "/v2/")
            }
        case .failed(let reason):
            return isRegistry
                ? challenge.registry(request, RegistryError(.unauthorized, "authentication failed: \(reason)"), scope: nil)
                : challenge.admin(request, detail: "authentication failed: \(reason)")
        case .throttled(let retryAfter):
            var response = isRegistry
                ? ErrorResponses.oci(
                    RegistryError(.tooManyRequests, "too many failed authentications; retry in \(retryAfter) s"),
                    head: request.method == .head)
                : ErrorResponses.problem(status: 429, code: "TOO_MANY_REQUESTS", detail: "too many failed authentications; retry in \(retryAfter) s")
            response.headers[.retryAfter] = String(retryAfter)
            return response
        }
        return try await next(request, context)
    }
}

/// Builds 401 answers with the `WWW-Authenticate` challenge Docker clients follow.
struct Challenge: Sendable {
    /// `http` or `https`: the listener's scheme, for the realm URL.
    let scheme: String

    /// The scheme the client used: a TLS-terminating proxy in front of a plain
    /// listener says so in `X-Forwarded-Proto`. Taking it from any caller is
    /// safe: the realm only tells that caller where to ask for its own token.
    private func scheme(of request: Request) -> String {
        switch request.headers[.xForwardedProto]?.lowercased() {
        case "https": "https"
        case "http": "http"
        default: scheme
        }
    }

    func header(_ request: Request, scope: String?, insufficientScope: Bool = false) -> String {
        let host = request.head.authority ?? "localhost"
        var value = "Bearer realm=\"\(scheme(of: request))://\(host)/auth/token\",service=\"\(TokenIssuer.service)\""
        if let scope { value += ",scope=\"\(scope)\"" }
        if insufficientScope { value += ",error=\"insufficient_scope\"" }
        return value
    }

    func registry(_ request: Request, _ error: RegistryError, scope: String?, insufficientScope: Bool = false) -> Response {
        var response = ErrorResponses.oci(error, head: request.method == .head)
        response.headers[.wwwAuthenticate] = header(request, scope: scope, insufficientScope: insufficientScope)
        return response
    }

    /// The admin API's (and `/metrics`') 401: a Basic challenge, since only an
    /// access key and secret work there. A bearer challenge would send a
    /// client for a token that these routes refuse.
    func admin(_ request: Request, detail: String) -> Response {
        var response = ErrorResponses.problem(status: 401, code: "UNAUTHORIZED", detail: detail)
        response.headers[.wwwAuthenticate] = Self.basic
        return response
    }

    /// The challenge where only Basic credentials work (also `/auth/token`'s).
    static let basic = "Basic realm=\"berth\", charset=\"UTF-8\""
}
