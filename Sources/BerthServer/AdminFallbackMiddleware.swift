import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers

/// Unmatched `/api/v1` requests answer in problem+json: 405 with `Allow` when
/// the path exists with other methods, 404 otherwise (Hummingbird's router
/// only knows 404).
struct AdminFallbackMiddleware: RouterMiddleware {
    typealias Context = BerthRequestContext
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && request.uri.path.hasPrefix("/api/v1") {
            let allowed = routes.methods(for: request.uri.path)
            guard allowed.isEmpty || allowed.contains(request.method) else {
                var response = ErrorResponses.problem(
                    status: 405, code: "METHOD_NOT_ALLOWED", detail: "\(request.uri.path) does not take \(request.method)")
                response.headers[.allow] = allowed.map(\.rawValue).sorted().joined(separator: ", ")
                return response
            }
            return ErrorResponses.problem(status: 404, code: "NOT_FOUND", detail: "no such endpoint: \(request.method) \(request.uri.path)")
        }
    }
}

/// The router's paths and their methods, filled once the routes are registered.
final class RouteTable: Sendable {
    private let entries = NIOLockedValueBox([(segments: [Substring], methods: Set<HTTPRequest.Method>)]())

    func load(_ routes: [Router<BerthRequestContext>.RouteDescription]) {
        var table: [String: Set<HTTPRequest.Method>] = [:]
        for route in routes { table["\(route.path)", default: []].insert(route.method) }
        entries.withLockedValue { entries in
            entries = table.map { path, methods in
                var methods = methods
                if methods.contains(.get) { methods.insert(.head) }
                return (path.split(separator: "/"), methods)
            }
        }
    }

    /// Methods of the route matching `path` (`{name}` segments match anything); empty when none does.
    func methods(for path: String) -> Set<HTTPRequest.Method> {
        let segments = path.split(separator: "/")
        return entries.withLockedValue { entries in
            entries.first { entry in
                entry.segments.count == segments.count
                    && zip(entry.segments, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
            }?.methods ?? []
        }
    }
}
