import BerthCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// What the admin controllers share: authentication gates, JSON in and out,
/// and the mapping of domain errors to problem+json.
struct AdminSupport: Sendable {
    let access: AccessControl
    let challenge: Challenge

    /// A refusal that ends an admin request.
    struct Refusal: Error {
        var response: Response
        var target = "-"
        var registry: String?
    }

    /// Runs a handler, turning every expected error into its problem+json answer.
    func run(
        _ request: Request, _ context: BerthRequestContext, _ body: (Principal) async throws -> Response
    ) async throws -> Response {
        do {
            guard context.principal.user != nil else {
                throw Refusal(response: challenge.admin(request, detail: "authentication required"))
            }
            return try await body(context.principal)
        } catch let refusal as Refusal {
            if refusal.response.status == .forbidden {
                await access.audit.record(
                    actor: context.principal.actor, source: context.source, action: "auth.failure",
                    target: refusal.target, registry: refusal.registry, outcome: "denied")
            }
            return refusal.response
        } catch let error as RegistryError {
            return ErrorResponses.problem(error)
        } catch let error as IdentityError {
            switch error {
            case .invalid(let message): return ErrorResponses.problem(status: 400, code: "INVALID_REQUEST", detail: message)
            case .notFound(let message): return ErrorResponses.problem(status: 404, code: "NOT_FOUND", detail: message)
            case .conflict(let message): return ErrorResponses.problem(status: 409, code: "CONFLICT", detail: message)
            case .keyLimit(let message): return ErrorResponses.problem(status: 409, code: "ACCESS_KEY_LIMIT", detail: message)
            }
        } catch let error as AdminInputError {
            return ErrorResponses.problem(status: 400, code: "INVALID_REQUEST", detail: error.message)
        } catch let error as InvalidRequest {
            return ErrorResponses.problem(status: 400, code: "INVALID_REQUEST", detail: error.message)
        } catch let error as TagImmutableError {
            return ErrorResponses.problem(status: 409, code: "TAG_IMMUTABLE", detail: error.description)
        } catch let error as LifecycleError {
            return ErrorResponses.problem(status: error.status, code: error.code, detail: error.message)
        }
    }

    func forbidden(_ principal: Principal, _ what: String, registry: String? = nil) -> Refusal {
        Refusal(
            response: ErrorResponses.problem(status: 403, code: "FORBIDDEN", detail: "\(principal.actor) may not \(what)"),
            target: what, registry: registry)
    }

    func requireGlobalAdmin(_ principal: Principal, _ what: String) throws {
        guard principal.rights.isGlobalAdmin else { throw forbidden(principal, what) }
    }

    func require(_ principal: Principal, _ permission: Permission, on registry: String, _ what: String) throws {
        guard principal.rights.allows(permission, on: registry) else { throw forbidden(principal, what, registry: registry) }
    }

    /// Records a change the request made, synced before its answer.
    func audit(_ context: BerthRequestContext, _ action: String, _ target: String, registry: String? = nil) async {
        await access.audit.record(
            actor: context.principal.actor, source: context.source, action: action, target: target, registry: registry,
            durability: .synced)
    }

    /// The request body decoded as `T`; type errors name the field. An empty
    /// body reads as `{}` only where the body is optional.
    func decode<T: Decodable>(_ type: T.Type, _ request: Request, optional: Bool = false) async throws -> T {
        var request = request
        // Refused unread when its declared length is over (the connection closes after the 413).
        guard let buffer = try await request.collectBody(atMost: 1 << 20) else {
            throw Refusal(response: ErrorResponses.problem(status: 413, code: "TOO_LARGE", detail: "request bodies are limited to 1 MiB"))
        }
        if buffer.readableBytes == 0 && !optional { throw AdminInputError(message: "a JSON body is required") }
        let data = buffer.readableBytes == 0 ? Data("{}".utf8) : Data(buffer.readableBytesView)
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch DecodingError.keyNotFound(let key, _) {
            throw AdminInputError(message: "'\(key.stringValue)' is required")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw AdminInputError(message: "'\(field)' has the wrong type: \(context.debugDescription)")
        } catch {
            throw AdminInputError(message: "body must be a JSON object")
        }
    }

    func json(_ object: Any, status: HTTPResponse.Status = .ok, location: String? = nil) -> Response {
        let body = JSONText.bytes(object)
        var headers: HTTPFields = [.contentType: "application/json"]
        if let location { headers[.location] = location }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// An RFC 3339 date-time in UTC, whole seconds (`2026-11-23T10:00:00Z`), or null.
    static func timestamp(_ date: Date?) -> Any {
        guard let date else { return NSNull() }
        // Not ISO8601DateFormatter: it sets up ICU on every call (70 µs, half
        // of an image listing's time).
        return date.formatted(.iso8601)
    }

    /// An RFC 3339 date-time, with or without fractional seconds.
    static func parseTimestamp(_ text: String) -> Date? {
        RFC3339.date(text)
    }

    /// `text` as an RFC 3339 date-time; anything else is refused, naming `field`.
    static func parseTimestamp(_ text: String, field: String) throws -> Date {
        guard let date = parseTimestamp(text) else {
            throw InvalidRequest(message: "'\(field)' must be an RFC 3339 date-time, got '\(text)'")
        }
        return date
    }

    /// The `limit` query parameter: 1–1000, default 100; anything else is refused.
    static func limit(_ request: Request) throws -> Int {
        guard let text = request.query("limit") else { return 100 }
        guard let limit = Int(text), (1...1000).contains(limit) else {
            throw InvalidRequest(message: "'limit' must be an integer from 1 to 1000, got '\(text)'")
        }
        return limit
    }

    /// A boolean query parameter: `true` or `false`, default false; anything else is refused.
    static func flag(_ request: Request, _ name: String) throws -> Bool {
        switch request.query(name) {
        case nil, "false": return false
        case "true": return true
        case .some(let other): throw InvalidRequest(message: "'\(name)' must be true or false, got '\(other)'")
        }
    }
}

extension BerthRequestContext {
    /// A path parameter, percent-decoded (`%3A` in a digest, `%2F` in an image name, `%40` in a binding id).
    func parameter(_ name: String) throws -> String {
        let raw = try parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else {
            throw InvalidRequest(message: "path parameter '\(name)' is not valid percent-encoding")
        }
        return decoded
    }
}

struct AdminInputError: Error {
    var message: String
}

