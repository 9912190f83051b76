import BerthStorage
import Crypto
import Foundation

/// Changes to a policy; nil leaves a field as it is.
public struct PolicyChanges: Sendable {
    public var imagePattern: String?
    public var tagPattern: String?
    public var rule: CleanupRule?
    /// `.some(nil)` clears the value.
    public var value: Int??
    public var enabled: Bool?

    public init(
        imagePattern: String? = nil, tagPattern: String? = nil, rule: CleanupRule? = nil, value: Int?? = nil,
        enabled: Bool? = nil
    ) {
        self.imagePattern = imagePattern
        self.tagPattern = tagPattern
        self.rule = rule
        self.value = value
        self.enabled = enabled
    }
}

/// The schedule of a job: a cron expression, or none.
public struct ScheduleRecord: Codable, Sendable, Equatable {
    public var cron: String?
}

extension Registry {
    static let policyLimit = 100

    // MARK: Protection policies

    public func protectionPolicies(registry name: String) throws -> [ProtectionPolicy] {
        _ = try requireRegistry(name)
        return try storedPolicies(ProtectionPolicy.self, kind: "Q", registry: name).sorted { ($0.created, $0.id) < ($1.created, $1.id) }
    }

    public func protectionPolicy(registry name: String, id: String) throws -> ProtectionPolicy {
        _ = try requireRegistry(name)
        guard let policy = try read(ProtectionPolicy.self, CatalogKey.protectionPolicy(name, id)) else {
            throw RegistryError(.nameUnknown, "protection policy '\(id)' does not exist in registry '\(name)'")
        }
        return policy
    }

    public func createProtectionPolicy(registry name: String, changes: PolicyChanges) async throws -> ProtectionPolicy {
        try await locks.withLock("policies:" + name) {
            guard let imagePattern = changes.imagePattern else { throw InvalidRequest(message: "'image_pattern' is required") }
            let policy = ProtectionPolicy(
                id: Self.policyID("pp"), imagePattern: imagePattern, tagPattern: changes.tagPattern ?? "**",
                enabled: changes.enabled ?? true, created: Date())
            try await saveProtection(policy, registry: name, isNew: true)
            return policy
        }
    }

    public func updateProtectionPolicy(registry name: String, id: String, changes: PolicyChanges) async throws -> ProtectionPolicy {
        try await locks.withLock("policies:" + name) {
            var policy = try protectionPolicy(registry: name, id: id)
            if let value = changes.imagePattern { policy.imagePattern = value }
            if let value = changes.tagPattern { policy.tagPattern = value }
            if let value = changes.enabled { policy.enabled = value }
            try await saveProtection(policy, registry: name, isNew: false)
            return policy
        }
    }

    private func saveProtection(_ policy: ProtectionPolicy, registry name: String, isNew: Bool) async throws {
        try Self.validatePattern(policy.imagePattern, "image_pattern")
        try Self.validatePattern(policy.tagPattern, "tag_pattern")
        let others = try protectionPolicies(registry: name).filter { $0.id != policy.id }
        if let twin = others.first(where: { $0.imagePattern == policy.imagePattern && $0.tagPattern == policy.tagPattern }) {
            throw RegistryError(
                .conflict, "protection policy '\(twin.id)' already has image pattern '\(twin.imagePattern)' and tag pattern '\(twin.tagPattern)'")
        }
        if isNew, others.count >= Self.policyLimit {
            throw LifecycleError.limit("a registry has at most \(Self.policyLimit) protection policies")
        }
        var batch = WriteBatch()
        batch.put(.catalog, CatalogKey.protectionPolicy(name, policy.id).bytes, RecordCodec.encode(policy))
        try await write(batch)
    }

    public func deleteProtectionPolicy(registry name: String, id: String) async throws {
        try await locks.withLock("policies:" + name) {
            _ = try protectionPolicy(registry: name, id: id)
            var batch = WriteBatch()
            batch.delete(.catalog, CatalogKey.protectionPolicy(name, id).bytes)
            try await write(batch)
        }
    }

    // MARK: Cleanup policies

    public func cleanupPolicies(registry name: String) throws -> [CleanupPolicy] {
        _ = try requireRegistry(name)
        return try storedPolicies(CleanupPolicy.self, kind: "C", registry: name).sorted { ($0.created, $0.id) < ($1.created, $1.id) }
    }

    public func cleanupPolicy(registry name: String, id: String) throws -> CleanupPolicy {
        _ = try requireRegistry(name)
        guard let policy = try read(CleanupPolicy.self, CatalogKey.cleanupPolicy(name, id)) else {
            throw RegistryError(.nameUnknown, "cleanup policy '\(id)' does not exist in registry '\(name)'")
        }
        return policy
    }

    public func createCleanupPolicy(registry name: String, changes: PolicyChanges) async throws -> CleanupPolicy {
        try await locks.withLock("policies:" + name) {
            guard let imagePattern = changes.imagePattern else { throw InvalidRequest(message: "'image_pattern' is required") }
            guard let rule = changes.rule else { throw InvalidRequest(message: "'rule' is required") }
            let policy = CleanupPolicy(
                id: Self.policyID("cp"), imagePattern: imagePattern, tagPattern: changes.tagPattern ?? "**", rule: rule,
                value: changes.value ?? nil, enabled: changes.enabled ?? true, created: Date())
            try await saveCleanup(policy, registry: name, isNew: true)
            return policy
        }
    }

    public func updateCleanupPolicy(registry name: String, id: String, changes: PolicyChanges) async throws -> CleanupPolicy {
        try await locks.withLock("policies:" + name) {
            var policy = try cleanupPolicy(registry: name, id: id)
            if let value = changes.imagePattern { policy.imagePattern = value }
            if let value = changes.tagPattern { policy.tagPattern = value }
            // `rule` and `value` change together, so a change never pairs a
            // rule with a value chosen for another one.
            let value = changes.value ?? nil
            if let rule = changes.rule {
                policy.rule = rule
                policy.value = value
            } else if value != nil {
                throw InvalidRequest(message: "'value' changes together with 'rule': send both")
            }
            if let value = changes.enabled { policy.enabled = value }
            try await saveCleanup(policy, registry: name, isNew: false)
            return policy
        }
    }

    private func saveCleanup(_ policy: CleanupPolicy, registry name: String, isNew: Bool) async throws {
        try Self.validatePattern(policy.imagePattern, "image_pattern")
        try Self.validatePattern(policy.tagPattern, "tag_pattern")
        if policy.rule.takesValue {
            guard let value = policy.value, (1...10_000).contains(value) else {
                throw InvalidRequest(message: "rule '\(policy.rule.rawValue)' needs an integer 'value' from 1 to 10000")
            }
        } else if policy.value != nil {
            throw InvalidRequest(message: "rule '\(policy.rule.rawValue)' takes no 'value'")
        }
        let others = try cleanupPolicies(registry: name).filter { $0.id != policy.id }
        if let twin = others.first(where: {
            ($0.imagePattern, $0.tagPattern, $0.rule, $0.value) == (policy.imagePattern, policy.tagPattern, policy.rule, policy.value)
        }) {
            throw RegistryError(.conflict, "cleanup policy '\(twin.id)' already has the same image pattern, tag pattern and rule")
        }
        if isNew, others.count >= Self.policyLimit {
            throw LifecycleError.limit("a registry has at most \(Self.policyLimit) cleanup policies")
        }
        var batch = WriteBatch()
        batch.put(.catalog, CatalogKey.cleanupPolicy(name, policy.id).bytes, RecordCodec.encode(policy))
        try await write(batch)
    }

    public func deleteCleanupPolicy(registry name: String, id: String) async throws {
        try await locks.withLock("policies:" + name) {
            _ = try cleanupPolicy(registry: name, id: id)
            var batch = WriteBatch()
            batch.delete(.catalog, CatalogKey.cleanupPolicy(name, id).bytes)
            try await write(batch)
        }
    }

    // MARK: Schedules

    /// A registry's cleanup schedule.
    public func cleanupSchedule(registry name: String) throws -> CronExpression? {
        try requireRegistry(name).cleanupSchedule.flatMap { try? CronExpression($0) }
    }

    public func setCleanupSchedule(registry name: String, cron: String?) async throws -> CronExpression? {
        let expression = try Self.parseCron(cron)
        return try await locks.withLock("registry:" + name) {
            var record = try requireRegistry(name)
            record.cleanupSchedule = expression?.source
            var batch = WriteBatch()
            batch.put(.catalog, CatalogKey.registry(name).bytes, RecordCodec.encode(record))
            try await write(batch)
            return expression
        }
    }

    /// The stored GC schedule, or nil when none was ever set (the configured default applies).
    public func storedGCSchedule() throws -> ScheduleRecord? {
        try read(ScheduleRecord.self, CatalogKey.schedule("gc"))
    }

    public func setGCSchedule(cron: String?) async throws -> CronExpression? {
        let expression = try Self.parseCron(cron)
        var batch = WriteBatch()
        batch.put(.catalog, CatalogKey.schedule("gc").bytes, RecordCodec.encode(ScheduleRecord(cron: expression?.source)))
        try await write(batch)
        return expression
    }

    // MARK: Helpers

    static func parseCron(_ text: String?) throws -> CronExpression? {
        guard let text else { return nil }
        do {
            return try CronExpression(text)
        } catch {
            throw LifecycleError.invalidCron(error)
        }
    }

    static func validatePattern(_ text: String, _ field: String) throws {
        do {
            _ = try Pattern(text)
        } catch {
            throw LifecycleError.invalidPattern(field, error)
        }
    }

    static func policyID(_ prefix: String) -> String {
        prefix + "-" + SymmetricKey(size: .bits128).withUnsafeBytes { Array($0.prefix(6)) }
            .map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    private func storedPolicies<T: Decodable>(_ type: T.Type, kind: Character, registry name: String) throws -> [T] {
        var policies: [T] = []
        try db.scan(.catalog, prefix: Key(kind, name).childPrefix) { _, value in
            policies.append(try RecordCodec.decode(type, value))
            return true
        }
        return policies
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

extension Registry {
    /// Every registry with a cleanup schedule, and the schedule.
    public func cleanupSchedules() throws -> [(registry: String, schedule: CronExpression)] {
        var result: [(String, CronExpression)] = []
        try db.scan(.catalog, prefix: Key("R").childPrefix) { _, value in
            let record = try RecordCodec.decode(RegistryRecord.self, value)
            if let text = record.cleanupSchedule, let expression = try? CronExpression(text) {
                result.append((record.name, expression))
            }
            return true
        }
        return result
    }
}
