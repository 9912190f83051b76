import BerthCore
import BerthStorage
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `/api/v1` registries and system usage.
struct AdminController {
    let registry: Registry
    let support: AdminSupport
    let settings: RouterSettings
    let started = Date()

    struct BackupRequest: Decodable { var name: String? }

    struct RegistryCreate: Decodable {
        var name: String
        var anonymous_pull: Bool?
        var public_uri_enabled: Bool?
    }

    struct RegistryPatch: Decodable {
        var anonymous_pull: Bool?
        var public_uri_enabled: Bool?
    }

    func register(on router: Router<BerthRequestContext>) {
        let api = router.group("api/v1")
        api.post("registries") { request, context in
            try await support.run(request, context) { principal in
                try support.requireGlobalAdmin(principal, "create registries")
                let input = try await support.decode(RegistryCreate.self, request)
                let record = try await registry.createRegistry(
                    input.name, anonymousPull: input.anonymous_pull, publicURIEnabled: input.public_uri_enabled)
                await support.audit(context, "registry.create", input.name, registry: input.name)
                return support.json(describe(record), status: .created, location: "/api/v1/registries/\(input.name)")
            }
        }
        api.get("registries") { request, context in
            try await support.run(request, context) { principal in
                let query = request.query("q")
                let page = try registry.registries(
                    after: request.query("cursor"), limit: try AdminSupport.limit(request),
                    visible: { name in principal.rights.canView(name) && (query.map { $0.isEmpty || name.contains($0) } ?? true) })
                return support.json(["items": page.items.map(describe), "next_cursor": page.next.map { $0 as Any } ?? NSNull()])
            }
        }
        api.get("registries/:registry") { request, context in
            try await support.run(request, context) { principal in
                let name = try existingRegistry(context, principal, .view, "view")
                return support.json(describe(try registry.requireRegistry(name)))
            }
        }
        api.patch("registries/:registry") { request, context in
            try await support.run(request, context) { principal in
                let name = try existingRegistry(context, principal, .administer, "change")
                let input = try await support.decode(RegistryPatch.self, request)
                let record = try await registry.updateRegistry(
                    name, anonymousPull: input.anonymous_pull, publicURIEnabled: input.public_uri_enabled)
                await support.audit(context, "registry.update", name, registry: name)
                return support.json(describe(record))
            }
        }
        api.delete("registries/:registry") { request, context in
            try await support.run(request, context) { principal in
                let name = try existingRegistry(context, principal, .delete, "delete")
                // Its role bindings and job history go with it (`releaseRegistry`): a registry created later under this name starts with none.
                // Once begun it runs to its end whatever the client does: its records go in
                // one write and its bucket after, so a cancellation in between would answer
                // an error for a registry already gone, and never write its audit entry.
                let force = try AdminSupport.flag(request, "force")
                let actor = context.principal.user
                try await Task { try await registry.deleteRegistry(name, force: force, actor: actor) }.value
                await support.audit(context, "registry.delete", name, registry: name)
                return Response(status: .noContent)
            }
        }
        api.post("system/backups") { request, context in try await backup(request, context) }
        api.get("system/info") { request, context in
            try await support.run(request, context) { _ in
                support.json([
                    "version": BerthVersion.version, "build": BerthVersion.build,
                    "storage_engine": "rocksdb (embedded, BlobDB)",
                    "uptime_seconds": Int(Date().timeIntervalSince(started)),
                    "endpoints": [
                        "public": settings.endpoints.public.map { $0 as Any } ?? NSNull(),
                        "private": settings.endpoints.private.map { $0 as Any } ?? NSNull(),
                    ],
                    "listener": ["scheme": settings.scheme, "exposure": settings.exposure.rawValue],
                    "listeners": settings.listeners.map { spec -> [String: Any] in
                        ["address": "\(spec.listener.host):\(spec.listener.port)", "scheme": spec.scheme, "exposure": spec.exposure.rawValue]
                    },
                ])
            }
        }
        api.get("system/usage") { request, context in
            try await support.run(request, context) { principal in
                try support.requireGlobalAdmin(principal, "view system usage")
                let usage = registry.store.objects.usage()
                let registries = try registry.registries(limit: Int.max).items.map { record -> [String: Any] in
                    let bucket = registry.store.objects.usage(bucket: record.name)
                    return ["name": record.name, "logical_bytes": bucket.bytes, "blobs": bucket.objects]
                }
                return support.json([
                    "logical_bytes": usage.logicalBytes, "physical_bytes": usage.physicalBytes,
                    "open_uploads": usage.openUploads, "upload_bytes": usage.uploadBytes, "registries": registries,
                ])
            }
        }
    }

    /// The path's registry, once the caller may `verb` it and it exists
    /// (403 before 404, so names are not probed by status).
    private func existingRegistry(
        _ context: BerthRequestContext, _ principal: Principal, _ permission: Permission, _ verb: String
    ) throws -> String {
        let name = try context.parameter("registry")
        try Names.validateRegistry(name)
        try support.require(principal, permission, on: name, "\(verb) registry '\(name)'")
        _ = try registry.requireRegistry(name)
        return name
    }

    /// What a backup's name may hold: ASCII letters and digits, `-`, `_` and `.`.
    static let backupNameBytes = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.".utf8))

    /// `POST /api/v1/system/backups`: an online backup into the backup directory.
    private func backup(_ request: Request, _ context: BerthRequestContext) async throws -> Response {
        try await support.run(request, context) { principal in
            try support.requireGlobalAdmin(principal, "take backups")
            let input = try await support.decode(BackupRequest.self, request, optional: true)
            let stamp = Date().formatted(.iso8601.dateSeparator(.omitted).timeSeparator(.omitted))  // 20261123T100000Z
            let name = input.name ?? "backup-" + stamp
            guard !name.isEmpty, name.utf8.count <= 128,
                name.utf8.allSatisfy({ Self.backupNameBytes.contains($0) }), !name.hasPrefix(".")
            else {
                throw AdminInputError(message: "'name' must be 1–128 ASCII letters, digits, '-', '_' or '.', not starting with '.'")
            }
            let destination = URL(fileURLWithPath: settings.backupDirectory).appendingPathComponent(name).path
            if FileManager.default.fileExists(atPath: destination) {
                return ErrorResponses.problem(status: 409, code: "CONFLICT", detail: "backup '\(name)' already exists")
            }
            let summary: Backup.Summary
            do {
                summary = try await Backup.create(store: registry.store, dataDir: settings.dataDir, destination: destination)
            } catch let error as BackupError {
                return ErrorResponses.problem(status: 409, code: "CONFLICT", detail: error.description)
            }
            await support.audit(context, "system.backup", destination)
            return support.json(
                [
                    "name": name, "path": summary.path, "created_at": AdminSupport.timestamp(summary.createdAt),
                    "artifacts": summary.artifacts.count, "tags": summary.tags,
                ], status: .created)
        }
    }

    private func describe(_ record: RegistryRecord) -> [String: Any] {
        let usage = registry.store.objects.usage(bucket: record.name)
        let publicURI = record.publicURIEnabled ? settings.endpoints.public.map { "\($0)/\(record.name)" } : nil
        let privateURI = settings.endpoints.private.map { "\($0)/\(record.name)" }
        return [
            "name": record.name,
            "created_at": AdminSupport.timestamp(record.created),
            "public_uri_enabled": record.publicURIEnabled,
            "anonymous_pull": record.anonymousPull,
            "public_uri": publicURI.map { $0 as Any } ?? NSNull(),
            "private_uri": privateURI.map { $0 as Any } ?? NSNull(),
            "commands": [
                "public": publicURI.map { commands($0) as Any } ?? NSNull(),
                "private": privateURI.map { commands($0) as Any } ?? NSNull(),
            ],
            "usage": ["logical_bytes": usage.bytes, "blobs": usage.objects],
        ]
    }

    /// Ready-to-paste client commands for a registry URI (`host[:port]/registry`).
    private func commands(_ uri: String) -> [String: String] {
        let host = String(uri.prefix { $0 != "/" })
        return [
            "docker_login": "docker login \(host) -u <access-key> -p <secret-key>",
            "docker_tag": "docker tag <image>:<tag> \(uri)/<image>:<tag>",
            "docker_push": "docker push \(uri)/<image>:<tag>",
            "docker_pull": "docker pull \(uri)/<image>:<tag>",
            "helm_login": "helm registry login \(host) -u <access-key> -p <secret-key>",
            "helm_push": "helm push <chart>.tgz oci://\(uri)",
            "oras_push": "oras push \(uri)/<artifact>:<tag> <file>",
            "oras_pull": "oras pull \(uri)/<artifact>:<tag>",
        ]
    }
}
