import BerthCore
import Foundation
import HTTPTypes
import Hummingbird

/// `/api/v1` users, access keys, role bindings, `me` and the audit log.
struct IdentityController {
    let access: AccessControl
    let support: AdminSupport
    var identity: Identity { access.identity }

    struct UserCreate: Decodable { var name: String }
    struct UserPatch: Decodable { var disabled: Bool? }
    struct KeyPatch: Decodable { var disabled: Bool? }
    struct Rotation: Decodable { var overlap_seconds: Double? }
    struct BindingCreate: Decodable {
        var role: String
        var registry: String?
    }

    func register(on router: Router<BerthRequestContext>) {
        let api = router.group("api/v1")
        api.get("me") { request, context in
            try await support.run(request, context) { principal in
                let user = identity.user(principal.user ?? "")
                return support.json([
                    "user": user.map(describe) ?? NSNull(),
                    "access_key": principal.accessKey.map { $0 as Any } ?? NSNull(),
                    "roles": principal.rights.bindings.map(describe),
                ])
            }
        }
        api.post("users") { request, context in
            try await admin(request, context, "manage users") {
                let input = try await support.decode(UserCreate.self, request)
                let user = try await identity.createUser(input.name)
                await support.audit(context, "user.create", user.id)
                return support.json(describe(user), status: .created, location: "/api/v1/users/\(user.id)")
            }
        }
        api.get("users") { request, context in
            try await admin(request, context, "manage users") {
                let cursor = request.query("cursor")
                let all = identity.users().filter { cursor == nil || $0.id > cursor! }
                let limit = try AdminSupport.limit(request)
                let page = Array(all.prefix(limit))
                let next: Any = all.count > limit ? page.last!.id : NSNull()
                return support.json(["items": page.map(describe), "next_cursor": next])
            }
        }
        api.get("users/:user") { request, context in
            try await admin(request, context, "manage users") {
                support.json(describe(try user(context)))
            }
        }
        api.patch("users/:user") { request, context in
            try await admin(request, context, "manage users") {
                let id = try user(context).id
                let input = try await support.decode(UserPatch.self, request)
                var record = try user(context)
                if let disabled = input.disabled {
                    record = try await identity.setUserDisabled(id, disabled)
                    await support.audit(context, "user.update", id, registry: nil)
                }
                return support.json(describe(record))
            }
        }
        api.delete("users/:user") { request, context in
            try await admin(request, context, "manage users") {
                let id = try user(context).id
                guard id != context.principal.user else {
                    return ErrorResponses.problem(status: 409, code: "CONFLICT", detail: "you cannot delete yourself")
                }
                try await identity.deleteUser(id)
                await support.audit(context, "user.delete", id)
                return Response(status: .noContent)
            }
        }
        api.post("users/:user/access-keys") { request, context in
            try await admin(request, context, "manage access keys") {
                let key = try await identity.createKey(user: try user(context).id)
                await support.audit(context, "key.create", key.record.id)
                return support.json(
                    describe(key), status: .created, location: "/api/v1/users/\(key.record.user)/access-keys/\(key.record.id)"
                ).secret()
            }
        }
        api.get("users/:user/access-keys") { request, context in
            try await admin(request, context, "manage access keys") {
                support.json(["items": identity.keys(user: try user(context).id).map(describe), "next_cursor": NSNull()])
            }
        }
        api.patch("users/:user/access-keys/:key") { request, context in
            try await admin(request, context, "manage access keys") {
                let id = try user(context).id
                let keyID = try context.parameter("key")
                let input = try await support.decode(KeyPatch.self, request)
                guard let disabled = input.disabled else {
                    guard let key = identity.key(keyID), key.user == id else {
                        throw IdentityError.notFound("access key '\(keyID)' of user '\(id)' does not exist")
                    }
                    return support.json(describe(key))
                }
                let key = try await identity.setKeyDisabled(user: id, id: keyID, disabled)
                await support.audit(context, "key.update", keyID)
                return support.json(describe(key))
            }
        }
        api.delete("users/:user/access-keys/:key") { request, context in
            try await admin(request, context, "manage access keys") {
                let keyID = try context.parameter("key")
                try await identity.deleteKey(user: try user(context).id, id: keyID)
                await support.audit(context, "key.delete", keyID)
                return Response(status: .noContent)
            }
        }
        api.post("users/:user/access-keys/:key/rotate") { request, context in
            try await admin(request, context, "manage access keys") {
                let keyID = try context.parameter("key")
                let input = try await support.decode(Rotation.self, request, optional: true)
                let overlap = input.overlap_seconds ?? 0
                guard overlap >= 0, overlap <= 30 * 86400 else {
                    throw AdminInputError(message: "'overlap_seconds' must be between 0 and 2592000")
                }
                let key = try await identity.rotateKey(user: try user(context).id, id: keyID, overlap: overlap)
                await support.audit(context, "key.rotate", keyID)
                return support.json(describe(key), status: .created).secret()
            }
        }
        api.get("users/:user/roles") { request, context in
            try await admin(request, context, "manage role bindings") {
                support.json(["items": identity.bindings(user: try user(context).id).map(describe), "next_cursor": NSNull()])
            }
        }
        api.post("users/:user/roles") { request, context in
            try await admin(request, context, "manage role bindings") {
                let id = try user(context).id
                let input = try await support.decode(BindingCreate.self, request)
                guard let role = Role(rawValue: input.role) else {
                    throw AdminInputError(message: "'role' must be one of admin, viewer, uploader")
                }
                if let registry = input.registry { try Names.validateRegistry(registry) }
                let binding = try await identity.addBinding(user: id, RoleBinding(role: role, registry: input.registry))
                await support.audit(context, "role.add", "\(id):\(binding.id)", registry: binding.registry)
                return support.json(describe(binding), status: .created)
            }
        }
        api.delete("users/:user/roles/:binding") { request, context in
            try await admin(request, context, "manage role bindings") {
                let id = try user(context).id
                let bindingID = try context.parameter("binding")
                try await identity.removeBinding(user: id, id: bindingID)
                await support.audit(context, "role.remove", "\(id):\(bindingID)", registry: RoleBinding(id: bindingID)?.registry)
                return Response(status: .noContent)
            }
        }
        api.get("audit-logs") { request, context in
            try await admin(request, context, "read the audit log") {
                let filter = AuditLog.Filter(
                    actor: request.query("actor"), action: request.query("action"), registry: request.query("registry"),
                    since: try date(request, "since"), until: try date(request, "until"))
                let page = try await access.audit.entries(filter, before: request.query("cursor"), limit: try AdminSupport.limit(request))
                return support.json(["items": page.items.map(describe), "next_cursor": page.next.map { $0 as Any } ?? NSNull()])
            }
        }
    }

    private func admin(
        _ request: Request, _ context: BerthRequestContext, _ what: String, _ body: () async throws -> Response
    ) async throws -> Response {
        try await support.run(request, context) { principal in
            try support.requireGlobalAdmin(principal, what)
            return try await body()
        }
    }

    private func user(_ context: BerthRequestContext) throws -> UserRecord {
        let id = try context.parameter("user")
        guard let user = identity.user(id) else { throw IdentityError.notFound("user '\(id)' does not exist") }
        return user
    }

    private func date(_ request: Request, _ name: String) throws -> Date? {
        guard let text = request.query(name) else { return nil }
        guard let date = AdminSupport.parseTimestamp(text) else {
            throw AdminInputError(message: "'\(name)' must be an RFC 3339 timestamp, got '\(text)'")
        }
        return date
    }

    private func describe(_ user: UserRecord) -> [String: Any] {
        ["id": user.id, "name": user.id, "created_at": AdminSupport.timestamp(user.created), "disabled": user.disabled]
    }

    private func describe(_ key: AccessKeyRecord) -> [String: Any] {
        [
            "access_key": key.id, "user": key.user, "created_at": AdminSupport.timestamp(key.created),
            "last_used_at": AdminSupport.timestamp(key.lastUsed), "disabled": !key.isActive(at: Date()),
            "expires_at": AdminSupport.timestamp(key.expires),
            "older_than_90_days": Date().timeIntervalSince(key.created) > 90 * 86400,
        ]
    }

    private func describe(_ key: Identity.NewAccessKey) -> [String: Any] {
        var object = describe(key.record)
        object["secret_key"] = key.secret
        return object
    }

    private func describe(_ binding: RoleBinding) -> [String: Any] {
        ["id": binding.id, "role": binding.role.rawValue, "registry": binding.registry ?? NSNull()]
    }

    private func describe(_ entry: AuditEntry) -> [String: Any] {
        [
            "id": entry.id, "time": AdminSupport.timestamp(entry.time), "actor": entry.actor, "source": entry.source,
            "action": entry.action, "target": entry.target, "registry": entry.registry ?? NSNull(),
            "outcome": entry.outcome, "detail": entry.detail ?? NSNull(),
        ]
    }
}

extension Response {
    /// A response carrying a new secret key: no cache or proxy may keep it
    /// (`Cache-Control: no-store`, as the token endpoint's).
    fileprivate func secret() -> Response {
        var response = self
        response.headers[.cacheControl] = "no-store"
        return response
    }
}
