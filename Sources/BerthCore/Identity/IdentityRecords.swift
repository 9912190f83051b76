import Foundation

/// A role of DESIGN §5.
public enum Role: String, Codable, Sendable, CaseIterable {
    case admin, viewer, uploader
}

/// What a caller may do to a registry.
public enum Permission: Sendable {
    case view, pull, push, delete, administer
}

public struct UserRecord: Codable, Sendable, Equatable {
    public var id: String
    public var created: Date
    public var disabled: Bool
}

public struct AccessKeyRecord: Codable, Sendable, Equatable {
    public var id: String
    public var user: String
    /// SHA-256 of the secret.
    public var secretHash: [UInt8]
    public var created: Date
    public var lastUsed: Date?
    public var disabled: Bool
    /// When set, the key stops working at this time (the overlap of a rotation).
    public var expires: Date?

    public func isActive(at now: Date) -> Bool {
        !disabled && (expires.map { now < $0 } ?? true)
    }
}

/// A role bound to a user, for every registry (`registry == nil`) or one.
public struct RoleBinding: Codable, Sendable, Equatable, Hashable {
    public var role: Role
    public var registry: String?

    public init(role: Role, registry: String?) {
        self.role = role
        self.registry = registry
    }

    /// `viewer` or `viewer@prod`.
    public var id: String { registry.map { "\(role.rawValue)@\($0)" } ?? role.rawValue }

    public init?(id: String) {
        let parts = id.split(separator: "@", maxSplits: 1).map(String.init)
        guard let role = parts.first.flatMap(Role.init(rawValue:)) else { return nil }
        self.init(role: role, registry: parts.count == 2 ? parts[1] : nil)
    }
}

/// The union of a user's bindings.
public struct Rights: Sendable, Equatable {
    public var bindings: [RoleBinding]

    public init(bindings: [RoleBinding]) { self.bindings = bindings }

    public static let none = Rights(bindings: [])

    private func roles(for registry: String?) -> [Role] {
        bindings.filter { $0.registry == nil || $0.registry == registry }.map(\.role)
    }

    /// Whether the rights allow `permission` on `registry`.
    public func allows(_ permission: Permission, on registry: String) -> Bool {
        let roles = roles(for: registry)
        switch permission {
        case .view, .pull: return !roles.isEmpty
        case .push: return roles.contains(.admin) || roles.contains(.uploader)
        case .delete, .administer: return roles.contains(.admin)
        }
    }

    /// Rights over the whole appliance: creating registries, users, keys, the audit log.
    public var isGlobalAdmin: Bool { bindings.contains { $0.role == .admin && $0.registry == nil } }

    /// Global admins and global viewers: they may read what concerns the whole appliance (GC runs, every event).
    public var isGlobalReader: Bool { bindings.contains { $0.registry == nil && ($0.role == .admin || $0.role == .viewer) } }

    public func canView(_ registry: String) -> Bool { allows(.view, on: registry) }

    /// The registries the bindings name, or nil when a binding without a
    /// registry reaches every registry.
    public var scopedRegistries: [String]? {
        bindings.contains { $0.registry == nil } ? nil : bindings.compactMap(\.registry)
    }
}

/// Who is calling: a user through one of their keys (directly or by token), or nobody.
public struct Principal: Sendable {
    public var user: String?
    public var accessKey: String?
    public var rights: Rights
    /// For bearer tokens: the repository actions the token grants, by repository name.
    public var tokenAccess: [String: Set<String>]?

    public static let anonymous = Principal(user: nil, accessKey: nil, rights: .none, tokenAccess: nil)

    public var actor: String { user ?? "anonymous" }
}
