import BerthCore
import Foundation
import HTTPTypes
import Hummingbird

/// `/api/v1/registries/{registry}/images/...`: images, artifacts and tags.
/// Image names with `/` travel as one percent-encoded path segment.
struct ImagesController {
    let registry: Registry
    let jobs: JobRunner
    let support: AdminSupport

    struct ImagePatch: Decodable {
        var short_description: String?
        var description: String?
        var tag_mutability: String?
    }

    struct TagCreate: Decodable {
        var name: String
        var digest: String
    }

    /// Runs a read that scans a registry or an image (usage, listings sorted
    /// or filtered in full) on the blocking pool, off the task threads.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await registry.store.pool.run(body)
    }

    func register(on router: Router<BerthRequestContext>) {
        let base = router.group("api/v1/registries/:registry")
        base.get("usage") { request, context in
            try await read(request, context) { registryName in
                let usage = try await blocking { try registry.usage(registry: registryName) }
                return support.json([
                    "logical_bytes": usage.logicalBytes, "blobs": usage.blobs, "images": usage.images,
                    "artifacts": usage.artifacts, "tags": usage.tags,
                ])
            }
        }
        base.get("images") { request, context in
            try await read(request, context) { registryName in
                guard let order = ImageOrder(rawValue: request.query("sort") ?? "name") else {
                    throw InvalidRequest(message: "'sort' must be name, updated or pulls")
                }
                let (query, after, limit) = (request.query("q"), request.query("cursor"), try AdminSupport.limit(request))
                let page = try await blocking {
                    try registry.images(registry: registryName, query: query, order: order, cursor: after, limit: limit)
                }
                return support.json(["items": page.items.map { describe($0, full: false) }, "next_cursor": cursor(page.next)])
            }
        }
        base.get("images/:image") { request, context in
            try await read(request, context) { _ in support.json(describe(try registry.image(try name(context)), full: true)) }
        }
        base.patch("images/:image") { request, context in
            try await change(request, context) { _ in
                let input = try await support.decode(ImagePatch.self, request)
                var immutable: Bool?
                switch input.tag_mutability {
                case nil: immutable = nil
                case "mutable": immutable = false
                case "immutable": immutable = true
                case .some(let other): throw InvalidRequest(message: "'tag_mutability' must be mutable or immutable, got '\(other)'")
                }
                let image = try await registry.updateImage(
                    try name(context), shortDescription: input.short_description, description: input.description,
                    tagsImmutable: immutable)
                await support.audit(context, "image.update", image.record.name, registry: try context.parameter("registry"))
                return support.json(describe(image, full: true))
            }
        }
        base.delete("images/:image") { request, context in
            try await change(request, context) { registryName in
                let image = try name(context)
                try await registry.deleteImage(image, actor: context.principal.user)
                jobs.noteDelete()
                await support.audit(context, "image.delete", image, registry: registryName)
                return Response(status: .noContent)
            }
        }
        base.get("images/:image/artifacts") { request, context in
            try await read(request, context) { _ in
                let (image, after, limit) = (try name(context), request.query("cursor"), try AdminSupport.limit(request))
                let page = try await blocking { try registry.artifacts(image: image, cursor: after, limit: limit) }
                return support.json(["items": page.items.map(describe), "next_cursor": cursor(page.next)])
            }
        }
        base.get("images/:image/artifacts/:digest") { request, context in
            try await read(request, context) { _ in
                let (summary, content, config, layers) = try await registry.artifact(
                    image: try name(context), digest: try context.parameter("digest"))
                var object = describe(summary)
                object["manifest"] = (try? JSONSerialization.jsonObject(with: Data(content.bytes))) ?? NSNull()
                object["config"] = config.map { c -> [String: Any] in
                    [
                        "os": c.os ?? NSNull(), "architecture": c.architecture ?? NSNull(),
                        "created": c.created ?? NSNull(), "labels": c.labels,
                    ]
                } ?? NSNull()
                object["layers"] = layers.map { ["digest": $0.digest, "media_type": $0.mediaType, "size": $0.size] }
                return support.json(object)
            }
        }
        base.delete("images/:image/artifacts/:digest") { request, context in
            try await change(request, context) { registryName in
                let image = try name(context)
                let digest = try ContentDigest(parsing: try context.parameter("digest")).description
                guard try registry.manifestRecord(name: image, digest: digest) != nil else {
                    throw RegistryError(.manifestUnknown, "artifact \(digest) is not in image '\(image)'")
                }
                try await registry.deleteManifest(name: image, reference: digest, actor: context.principal.user)
                jobs.noteDelete()
                await support.audit(context, "manifest.delete", "\(image)@\(digest)", registry: registryName)
                return Response(status: .noContent)
            }
        }
        base.get("images/:image/artifacts/:digest/tags") { request, context in
            try await read(request, context) { _ in
                let image = try name(context)
                let digest = try ContentDigest(parsing: try context.parameter("digest")).description
                guard try registry.manifestRecord(name: image, digest: digest) != nil else {
                    throw RegistryError(.manifestUnknown, "artifact \(digest) is not in image '\(image)'")
                }
                let tags = try await blocking { try registry.tagRecords(of: digest, image: image) }
                return support.json(["items": tags.map(describe), "next_cursor": NSNull()])
            }
        }
        base.get("images/:image/tags") { request, context in
            try await read(request, context) { _ in
                let page = try registry.tagRecords(
                    image: try name(context), query: request.query("q"), after: request.query("cursor"),
                    limit: try AdminSupport.limit(request))
                return support.json(["items": page.items.map(describe), "next_cursor": cursor(page.next)])
            }
        }
        base.post("images/:image/tags") { request, context in
            try await change(request, context) { registryName in
                let input = try await support.decode(TagCreate.self, request)
                let tag = try await registry.setTag(
                    image: try name(context), tag: input.name, digest: input.digest, actor: context.principal.user)
                await support.audit(context, "tag.create", "\(try name(context)):\(tag.name)", registry: registryName)
                return support.json(describe(tag), status: .created)
            }
        }
        base.delete("images/:image/tags/:tag") { request, context in
            try await change(request, context) { registryName in
                let image = try name(context)
                let tag = try context.parameter("tag")
                _ = try registry.requireImage(image)
                try await registry.deleteTag(name: image, tag: tag, actor: context.principal.user)
                await support.audit(context, "tag.delete", "\(image):\(tag)", registry: registryName)
                return Response(status: .noContent)
            }
        }
    }

    // MARK: Gates

    /// Reading needs any role on the registry.
    private func read(
        _ request: Request, _ context: BerthRequestContext, _ body: (String) async throws -> Response
    ) async throws -> Response {
        try await RegistryGate(support: support).read(request, context, body)
    }

    /// Changing needs admin of the registry.
    private func change(
        _ request: Request, _ context: BerthRequestContext, _ body: (String) async throws -> Response
    ) async throws -> Response {
        try await RegistryGate(support: support).change(request, context, body)
    }

    /// The full `<registry>/<image>` name from the path. A name no image can
    /// have is simply not found.
    private func name(_ context: BerthRequestContext) throws -> String {
        let name = try context.parameter("registry") + "/" + context.parameter("image")
        do {
            _ = try Names.splitRepository(name)
        } catch {
            throw RegistryError(.nameUnknown, "image '\(name)' does not exist: \(error.message)")
        }
        return name
    }

    private func cursor(_ next: String?) -> Any { next.map { $0 as Any } ?? NSNull() }

    // MARK: Bodies

    private func describe(_ image: ImageSummary, full: Bool) -> [String: Any] {
        let record = image.record
        let registryName = String(record.name.prefix { $0 != "/" })
        var object: [String: Any] = [
            "name": String(record.name.dropFirst(registryName.count + 1)), "registry": registryName,
            "full_name": record.name, "created_at": AdminSupport.timestamp(record.created),
            "updated_at": AdminSupport.timestamp(record.updated), "artifacts": image.artifacts, "tags": image.tags,
            "pull_count": image.pulls.count, "last_pulled_at": AdminSupport.timestamp(image.pulls.last),
            "short_description": record.shortDescription ?? "",
            "tag_mutability": record.tagsImmutable == true ? "immutable" : "mutable",
        ]
        if full { object["description"] = record.description ?? "" }
        return object
    }

    private func describe(_ artifact: ArtifactSummary) -> [String: Any] {
        [
            "digest": artifact.record.digest, "media_type": artifact.record.mediaType,
            "artifact_type": artifact.record.artifactType ?? NSNull(), "size": artifact.size, "tags": artifact.tags,
            "pushed_at": AdminSupport.timestamp(artifact.record.created), "pull_count": artifact.pulls.count,
            "last_pulled_at": AdminSupport.timestamp(artifact.pulls.last),
            "platforms": artifact.platforms.map { p -> [String: Any] in
                var platform: [String: Any] = ["os": p.os, "architecture": p.architecture]
                if let variant = p.variant { platform["variant"] = variant }
                return platform
            },
            "referrers": artifact.referrers,
        ]
    }

    private func describe(_ tag: TagRecord) -> [String: Any] {
        ["name": tag.name, "digest": tag.digest, "updated_at": AdminSupport.timestamp(tag.updated)]
    }
}
