import Foundation

/// Protects matching tags (and the artifacts they point at) from deletes and moves.
public struct ProtectionPolicy: Codable, Sendable, Equatable {
    public var id: String
    public var imagePattern: String
    public var tagPattern: String
    public var enabled: Bool
    public var created: Date

    var label: String { "protection policy '\(id)' (image '\(imagePattern)', tag '\(tagPattern)')" }
}

public enum CleanupRule: String, Codable, Sendable, CaseIterable {
    case keepLastPushed = "keep_last_pushed"
    case keepPushedWithinDays = "keep_pushed_within_days"
    case keepPulledWithinDays = "keep_pulled_within_days"
    case deleteUntagged = "delete_untagged"

    /// Whether the rule takes a `value`.
    public var takesValue: Bool { self != .deleteUntagged }
}

/// Deletes the artifacts of matching images and tags its rule does not keep.
public struct CleanupPolicy: Codable, Sendable, Equatable {
    public var id: String
    public var imagePattern: String
    public var tagPattern: String
    public var rule: CleanupRule
    public var value: Int?
    public var enabled: Bool
    public var created: Date
}

/// A refusal of the lifecycle features, with its problem code and status.
public struct LifecycleError: Error, Sendable, CustomStringConvertible {
    public var code: String
    public var status: Int
    public var message: String

    public var description: String { message }

    public static func invalidPattern(_ field: String, _ error: PatternError) -> Self {
        Self(code: "INVALID_PATTERN", status: 400, message: "'\(field)': \(error)")
    }
    public static func invalidCron(_ error: CronError) -> Self {
        Self(code: "INVALID_CRON", status: 400, message: error.description)
    }
    public static func protected(_ message: String) -> Self { Self(code: "PROTECTED", status: 409, message: message) }
    public static func jobRunning(_ message: String) -> Self { Self(code: "JOB_RUNNING", status: 409, message: message) }
    public static func limit(_ message: String) -> Self { Self(code: "LIMIT", status: 409, message: message) }
    /// A conditional delete found the artifact changed since the decision (internal to cleanup).
    static func changed(_ message: String) -> Self { Self(code: "CHANGED", status: 409, message: message) }
}

/// What a cleanup decided from, checked again under the repository's lock
/// before the delete: the artifact's tags and last push; and no index may
/// list it then.
struct DeletePrecondition: Sendable {
    var tags: Set<String>
    /// When the registry the decision was made in was created: a registry
    /// deleted and created again under its name is another one.
    var registryCreated: Date
    /// The artifact's last push the decision saw (nil: not checked); a push
    /// again since moves it, and the keep rules and grace would see it anew.
    var pushed: Date? = nil
}
