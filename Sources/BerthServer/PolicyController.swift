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
        }
        var tags: [Item]
    }

    func register(on router: Router<BerthRequestContext>) {
        let base = router.group("api/v1/registries/:registry")
        let gate = RegistryGate(support: support)

        base.get("protection-policies") { request, context in
            try await gate.read(request, context) { name in
                support.json(["items": try registry.protectionPolicies(registry: name).map(describe)])
            }
        }
        base.post("protection-policies") { request, context in
            try await gate.change(request, context) { name in
                let body = try await support.decode(PolicyBody.self, request)
                let policy = try await registry.createProtectionPolicy(registry: name, changes: try body.changes(allowRule: false))
                await support.audit(context, "protection-policy.create", policy.id, registry: name)
                return support.json(
                    describe(policy), status: .created, location: "/api/v1/registries/\(name)/protection-policies/\(policy.id)")
            }
        }
        base.get("protection-policies/:id") { request, context in
            try await gate.read(request, context) { name in
                support.json(describe(try registry.protectionPolicy(registry: name, id: try context.parameter("id"))))
            }
        }
        base.patch("protection-policies/:id") { request, context in
            try await gate.change(request, context) { name in
                let id = try context.parameter("id")
                _ = try registry.protectionPolicy(registry: name, id: id)
                let body = try await support.decode(PolicyBody.self, request)
                let policy = try await registry.updateProtectionPolicy(registry: name, id: id, changes: try body.changes(allowRule: false))
                await support.audit(context, "protection-policy.update", id, registry: name)
                return support.json(describe(policy))
            }
        }
        base.delete("protection-policies/:id") { request, context in
            try await gate.change(request, context) { name in
                let id = try context.parameter("id")
                try await registry.deleteProtectionPolicy(registry: name, id: id)
                await support.audit(context, "protection-policy.delete", id, registry: name)
                return Response(status: .noContent)
            }
        }

        base.get("cleanup-policies") { request, context in
            try await gate.read(request, context) { name in
                support.json(["items": try registry.cleanupPolicies(registry: name).map(describe)])
            }
        }
        base.post("cleanup-policies") { request, context in
            try await gate.change(request, context) { name in
                let body = try await support.decode(PolicyBody.self, request)
                let policy = try await registry.createCleanupPolicy(registry: name, changes: try body.changes(allowRule: true))
                await support.audit(context, "cleanup-policy.create", policy.id, registry: name)
                return support.json(
                    describe(policy), status: .created, location: "/api/v1/registries/\(name)/cleanup-policies/\(policy.id)")
            }
        }
        base.get("cleanup-policies/:id") { request, context in
            try await gate.read(request, context) { name in
                support.json(describe(try registry.cleanupPolicy(registry: name, id: try context.parameter("id"))))
            }
        }
        base.patch("cleanup-policies/:id") { request, context in
            try await gate.change(request, context) { name in
                let id = try context.parameter("id")
                _ = try registry.cleanupPolicy(registry: name, id: id)
                let body = try await support.decode(PolicyBody.self, request)
                let policy = try await registry.updateCleanupPolicy(registry: name, id: id, changes: try body.changes(allowRule: true))
                await support.audit(context, "cleanup-policy.update", id, registry: name)
                return support.json(describe(policy))
            }
        }
        base.delete("cleanup-policies/:id") { request, context in
            try await gate.change(request, context) { name in
                let id = try context.parameter("id")
                try await registry.deleteCleanupPolicy(registry: name, id: id)
                await support.audit(context, "cleanup-policy.delete", id, registry: name)
                return Response(status: .noContent)
            }
        }

        base.get("old-tags") { request, context in
            try await gate.read(request, context) { name in
                guard let text = request.query("before") else { throw InvalidRequest(message: "'before' is required (RFC 3339)") }
                guard let before = AdminSupport.parseTimestamp(text) else {
                    throw InvalidRequest(message: "'before' must be an RFC 3339 date-time, got '\(text)'")
                }
                let page = try registry.oldTags(
                    registry: name, before: before, excludeLatest: try AdminSupport.flag(request, "exclude_latest"),
                    cursor: request.query("cursor"), limit: try AdminSupport.limit(request))
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
                let deleted = try await registry.deleteTags(
                    registry: name, body.tags.map { ($0.image, $0.tag) }, actor: context.principal.actor)
                await support.audit(context, "tag.delete-old", "\(deleted) tags", registry: name)
                return support.json(["deleted": deleted])
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
