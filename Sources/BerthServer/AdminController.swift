import BerthCore
import BerthStorage
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The minimal admin API of the core registry: registries and system usage.
/// The full `/api/v1` surface is specified in api-spec/openapi.yaml.
struct AdminController<Context: RequestContext> {
    let registry: Registry

    func register(on router: Router<Context>) {
        let api = router.group("api/v1")
        api.post("registries") { request, _ in try await run { try await createRegistry(request) } }
        api.get("registries") { request, _ in try await run { try listRegistries(request) } }
        api.get("registries/:name") { _, context in
            try await run { try getRegistry(context.parameters.require("name")) }
        }
        api.delete("registries/:name") { request, context in
            try await run {
                try await registry.deleteRegistry(
                    context.parameters.require("name"), force: request.query("force") == "true")
                return Response(status: .noContent)
            }
        }
        api.get("system/usage") { _, _ in
            try await run {
                let usage = registry.store.objects.usage()
                return json(
                    [
                        "logical_bytes": usage.logicalBytes, "physical_bytes": usage.physicalBytes,
                        "open_uploads": usage.openUploads, "upload_bytes": usage.uploadBytes,
                    ], status: .ok)
            }
        }
    }

    private func run(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let error as RegistryError {
            return ErrorResponses.problem(error)
        } catch let error as AdminInputError {
            return ErrorResponses.problem(status: 400, code: "INVALID_REQUEST", detail: error.message)
        }
    }

    private func createRegistry(_ request: Request) async throws -> Response {
        var body = request
        let buffer = try await body.collectBody(upTo: 64 << 10)
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any] else {
            throw AdminInputError(message: "body must be a JSON object")
        }
        guard let name = object["name"] as? String else { throw AdminInputError(message: "'name' is required and must be a string") }
        let record = try await registry.createRegistry(name)
        return json(describe(record), status: .created, location: "/api/v1/registries/\(name)")
    }

    private func listRegistries(_ request: Request) throws -> Response {
        let limit = min(max(Int(request.query("limit") ?? "") ?? 100, 1), 1000)
        let page = try registry.registries(after: request.query("cursor"), limit: limit)
        return json(["items": page.items.map(describe), "next_cursor": page.next ?? NSNull()], status: .ok)
    }

    private func getRegistry(_ name: String) throws -> Response {
        try Names.validateRegistry(name)
        guard let record = try registry.registry(name) else {
            return ErrorResponses.problem(status: 404, code: "NOT_FOUND", detail: "registry '\(name)' does not exist")
        }
        return json(describe(record), status: .ok)
    }

    private func describe(_ record: RegistryRecord) -> [String: Any] {
        let usage = registry.store.objects.usage(bucket: record.name)
        return [
            "name": record.name,
            "created_at": ISO8601DateFormatter().string(from: record.created),
            "public_uri_enabled": record.publicURIEnabled,
            "anonymous_pull": record.anonymousPull,
            "usage": ["logical_bytes": usage.bytes, "blobs": usage.objects],
        ]
    }

    private func json(_ object: [String: Any], status: HTTPResponse.Status, location: String? = nil) -> Response {
        let body = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        var headers: HTTPFields = [.contentType: "application/json"]
        if let location { headers[.location] = location }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

struct AdminInputError: Error {
    var message: String
}
