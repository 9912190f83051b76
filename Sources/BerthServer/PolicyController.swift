import BerthCore
import Foundation
import HTTPTypes
import Hummingbird

/// `/api/v1/registries/{registry}/...`: protection and cleanup policies, and
/// the old-tag cleanup. Reading needs any role on the registry, changing
/// needs its admin. See docs/lifecycle.md.
struct PolicyController {
    let registry: Registry
    let support: AdminSupport

    /// A policy body: every field optional here; creation checks what it needs.
    /// `value` tells "absent" from "null".
    struct PolicyBody: Decodable {
        var imagePattern: String?
        var tagPattern: String?
        var rule: String?
        var value: Int??
        var enabled: Bool?

        enum CodingKeys: String, CodingKey {
            case imagePattern = "image_pattern", tagPattern = "tag_pattern", rule, value, enabled
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            imagePattern = try container.decodeIfPresent(String.self, forKey: .imagePattern)
            tagPattern = try container.decodeIfPresent(String.self, forKey: .tagPattern)
            rule = try container.decodeIfPresent(String.self, forKey: .rule)
            enabled = try container.decodeIfPresent(Bool.self, forKey: .enabled)
            if container.contains(.value) {
                value = .some(try container.decodeNil(forKey: .value) ? nil : try container.decode(Int.self, forKey: .value))
            }
        }

        func changes(allowRule: Bool) throws -> PolicyChanges {
            var rule: CleanupRule?
            if let text = self.rule {
                guard allowRule, let parsed = CleanupRule(rawValue: text) else {
                    let names = CleanupRule.allCases.map(\.rawValue).joined(separator: ", ")
                    throw InvalidRequest(message: allowRule ? "'rule' must be one of \(names), got '\(text)'" : "'rule' is not a field of protection policies")
                }
                rule = parsed
            }
            if !allowRule, value != nil { throw InvalidRequest(message: "'value' is not a field of protection policies") }
            return PolicyChanges(imagePattern: imagePattern, tagPattern: tagPattern, rule: rule, value: value, enabled: enabled)
        }
    }

    struct TagSelection: Decodable {
        struct Item: Decodable {
            var image: String
            var tag: String
            /// The digest the tag must still point to (as listed), if given.
            var digest: String?
        }
        var tags: [Item]
        /// The tags must have been last changed before this RFC 3339 time, if given.
        var before: String?
    }

    func register(on router: Router<BerthRequestContext>) {
        let base = router.group("api/v1/registries/:registry")
        let gate = RegistryGate(support: support)

        let protection = PolicyKind<ProtectionPolicy>(
            path: "protection-policies", auditName: "protection-policy", takesRule: false, id: \.id, describe: describe,
            list: { try registry.protectionPolicies(registry: $0) },
            get: { try registry.protectionPolicy(registry: $0, id: $1) },
            create: { try await registry.createProtectionPolicy(registry: $0, changes: $1) },
            update: { try await registry.updateProtectionPolicy(registry: $0, id: $1, changes: $2) },
            delete: { try await registry.deleteProtectionPolicy(registry: $0, id: $1) })
        let cleanup = PolicyKind<CleanupPolicy>(
            path: "cleanup-policies", auditName: "cleanup-policy", takesRule: true, id: \.id, describe: describe,
            list: { try registry.cleanupPolicies(registry: $0) },
            get: { try registry.cleanupPolicy(registry: $0, id: $1) },
            create: { try await registry.createCleanupPolicy(registry: $0, changes: $1) },
            update: { try await registry.updateCleanupPolicy(registry: $0, id: $1, changes: $2) },
            delete: { try await registry.deleteCleanupPolicy(registry: $0, id: $1) })
        register(protection, on: base, gate: gate)
        register(cleanup, on: base, gate: gate)

        base.get("old-tags") { request, context in
            try await gate.read(request, context) { name in
                guard let text = request.query("before") else { throw InvalidRequest(message: "'before' is required (RFC 3339)") }
                let before = try AdminSupport.parseTimestamp(text, field: "before")
                let (excludeLatest, cursor, limit) =
                    (try AdminSupport.flag(request, "exclude_latest"), request.query("cursor"), try AdminSupport.limit(request))
                // It reads every tag of the registry when few are old: on the blocking pool.
                let page = try await registry.store.pool.run { [registry] in
                    try registry.oldTags(registry: name, before: before, excludeLatest: excludeLatest, cursor: cursor, limit: limit)
                }
                return support.json([
                    "items": page.items.map { tag -> [String: Any] in
                        [
                            "image": tag.image, "tag": tag.tag, "digest": tag.digest,
                            "updated_at": AdminSupport.timestamp(tag.updated), "protected": tag.protected,
                        ]
                    },
                    "next_cursor": page.next.map { $0 as Any } ?? NSNull(),
                ])
            }
        }
        base.post("old-tags/delete") { request, context in
            try await gate.change(request, context) { name in
                let body = try await support.decode(TagSelection.self, request)
                guard (1...1000).contains(body.tags.count) else {
                    throw InvalidRequest(message: "'tags' must list 1 to 1000 tags, got \(body.tags.count)")
                }
                let before = try body.before.map { try AdminSupport.parseTimestamp($0, field: "before") }
                let deleted = try await registry.deleteTags(
                    registry: name, body.tags.map { TagDeletion(image: $0.image, tag: $0.tag, digest: $0.digest) },
                    changedBefore: before, actor: context.principal.user)
                await support.audit(context, "tag.delete-old", "\(deleted) tags", registry: name)
                return support.json(["deleted": deleted])
            }
        }
    }

    /// The five routes of one kind of policy: list, create, get, change, delete.
    private func register<Policy>(_ kind: PolicyKind<Policy>, on base: RouterGroup<BerthRequestContext>, gate: RegistryGate) {
        base.get(RouterPath(kind.path)) { request, context in
            try await gate.read(request, context) { name in
                support.json(["items": try kind.list(name).map(kind.describe)])
            }
        }
        base.post(RouterPath(kind.path)) { request, context in
            try await gate.change(request, context) { name in
                let body = try await support.decode(PolicyBody.self, request)
                let policy = try await kind.create(name, try body.changes(allowRule: kind.takesRule))
                let id = kind.id(policy)
                await support.audit(context, "\(kind.auditName).create", id, registry: name)
                return support.json(kind.describe(policy), status: .created, location: "/api/v1/registries/\(name)/\(kind.path)/\(id)")
            }
        }
        base.get(RouterPath(kind.path + "/:id")) { request, context in
            try await gate.read(request, context) { name in
                support.json(kind.describe(try kind.get(name, try context.parameter("id"))))
            }
        }
        base.patch(RouterPath(kind.path + "/:id")) { request, context in
            try await gate.change(request, context) { name in
                let id = try context.parameter("id")
                _ = try kind.get(name, id)  // 404 before a body error
                let body = try await support.decode(PolicyBody.self, request)
                let policy = try await kind.update(name, id, try body.changes(allowRule: kind.takesRule))
                await support.audit(context, "\(kind.auditName).update", id, registry: name)
                return support.json(kind.describe(policy))
            }
        }
        base.delete(RouterPath(kind.path + "/:id")) { request, context in
            try await gate.change(request, context) { name in
                let id = try context.parameter("id")
                try await kind.delete(name, id)
                await support.audit(context, "\(kind.auditName).delete", id, registry: name)
                return Response(status: .noContent)
            }
        }
    }

    private func describe(_ policy: ProtectionPolicy) -> [String: Any] {
        [
            "id": policy.id, "image_pattern": policy.imagePattern, "tag_pattern": policy.tagPattern,
            "enabled": policy.enabled, "created_at": AdminSupport.timestamp(policy.created),
        ]
    }

    private func describe(_ policy: CleanupPolicy) -> [String: Any] {
        [
            "id": policy.id, "image_pattern": policy.imagePattern, "tag_pattern": policy.tagPattern,
            "rule": policy.rule.rawValue, "value": policy.value ?? NSNull(), "enabled": policy.enabled,
            "created_at": AdminSupport.timestamp(policy.created),
        ]
    }
}

/// One kind of registry policy as the routes see it: its path, its audit
/// name, whether it has a rule, and the registry's operations on it.
private struct PolicyKind<Policy>: Sendable {
    let path: String
    let auditName: String
    let takesRule: Bool
    let id: @Sendable (Policy) -> String
    let describe: @Sendable (Policy) -> [String: Any]
    let list: @Sendable (_ registry: String) throws -> [Policy]
    let get: @Sendable (_ registry: String, _ id: String) throws -> Policy
    let create: @Sendable (_ registry: String, PolicyChanges) async throws -> Policy
    let update: @Sendable (_ registry: String, _ id: String, PolicyChanges) async throws -> Policy
    let delete: @Sendable (_ registry: String, _ id: String) async throws -> Void
}

/// The permission gate of registry-scoped admin routes: any role reads, the registry's admin changes.
struct RegistryGate: Sendable {
    let support: AdminSupport

    func read(
        _ request: Request, _ context: BerthRequestContext, _ body: (String) async throws -> Response
    ) async throws -> Response {
        try await gate(.view, request, context, body)
    }

    func change(
        _ request: Request, _ context: BerthRequestContext, _ body: (String) async throws -> Response
    ) async throws -> Response {
        try await gate(.administer, request, context, body)
    }

    private func gate(
        _ permission: Permission, _ request: Request, _ context: BerthRequestContext,
        _ body: (String) async throws -> Response
    ) async throws -> Response {
        try await support.run(request, context) { principal in
            let registryName = try context.parameter("registry")
            try Names.validateRegistry(registryName)
            let what = permission == .view ? "view" : "change"
            try support.require(principal, permission, on: registryName, "\(what) registry '\(registryName)'")
            return try await body(registryName)
        }
    }
}
