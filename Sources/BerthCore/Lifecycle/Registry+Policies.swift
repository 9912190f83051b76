import BerthStorage
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

/// What storage needs of a kind of registry policy.
protocol RegistryPolicy: Codable, Sendable {
    var id: String { get }
    var imagePattern: String { get }
    var tagPattern: String { get }
    var created: Date { get }
    /// "protection policy" or "cleanup policy".
    static var noun: String { get }
    /// The kind letter of its catalog keys (`CatalogKey`).
    static var keyKind: Character { get }
    /// Whether the two policies would do the same (a duplicate is refused).
    func sameEffect(as other: Self) -> Bool
    /// The fields `sameEffect` compares, for the refusal's message.
    static var sameEffectFields: String { get }
    /// Checks the fields only this kind has.
    func validateOwnFields() throws
}

extension ProtectionPolicy: RegistryPolicy {
    static let noun = "protection policy"
    static let keyKind: Character = "Q"
    static let sameEffectFields = "image_pattern and tag_pattern"
    func sameEffect(as other: Self) -> Bool { (imagePattern, tagPattern) == (other.imagePattern, other.tagPattern) }
    func validateOwnFields() {}
}

extension CleanupPolicy: RegistryPolicy {
    static let noun = "cleanup policy"
    static let keyKind: Character = "C"
    static let sameEffectFields = "image_pattern, tag_pattern, rule and value"
    func sameEffect(as other: Self) -> Bool {
        (imagePattern, tagPattern, rule, value) == (other.imagePattern, other.tagPattern, other.rule, other.value)
    }

    /// A rule that takes a value has one from 1 to 10,000; the others have none.
    func validateOwnFields() throws {
        if rule.takesValue {
            guard let value, (1...10_000).contains(value) else {
                throw InvalidRequest(message: "rule '\(rule.rawValue)' needs an integer 'value' from 1 to 10000")
            }
        } else if value != nil {
            throw InvalidRequest(message: "rule '\(rule.rawValue)' takes no 'value'")
        }
    }
}

extension Registry {
    static let policyLimit = 100

    // MARK: Protection policies

    public func protectionPolicies(registry name: String) throws -> [ProtectionPolicy] {
        try policies(ProtectionPolicy.self, registry: name)
    }

    public func protectionPolicy(registry name: String, id: String) throws -> ProtectionPolicy {
        try policy(ProtectionPolicy.self, registry: name, id: id)
    }

    public func createProtectionPolicy(registry name: String, changes: PolicyChanges) async throws -> ProtectionPolicy {
        try await locks.withLock("policies:" + name) {
            let created = try requireRegistry(name).created
            guard let imagePattern = changes.imagePattern else { throw InvalidRequest(message: "'image_pattern' is required") }
            let policy = ProtectionPolicy(
                id: Self.policyID("pp"), imagePattern: imagePattern, tagPattern: changes.tagPattern ?? "**",
                enabled: changes.enabled ?? true, created: Date())
            try await save(policy, registry: name, created: created, isNew: true)
            return policy
        }
    }

    public func updateProtectionPolicy(registry name: String, id: String, changes: PolicyChanges) async throws -> ProtectionPolicy {
        try await locks.withLock("policies:" + name) {
            let created = try requireRegistry(name).created
            var policy = try protectionPolicy(registry: name, id: id)
            if let value = changes.imagePattern { policy.imagePattern = value }
            if let value = changes.tagPattern { policy.tagPattern = value }
            if let value = changes.enabled { policy.enabled = value }
            try await save(policy, registry: name, created: created, isNew: false)
            return policy
        }
    }

    public func deleteProtectionPolicy(registry name: String, id: String) async throws {
        try await deletePolicy(ProtectionPolicy.self, registry: name, id: id)
    }

    // MARK: Cleanup policies

    public func cleanupPolicies(registry name: String) throws -> [CleanupPolicy] {
        try policies(CleanupPolicy.self, registry: name)
    }

    public func cleanupPolicy(registry name: String, id: String) throws -> CleanupPolicy {
        try policy(CleanupPolicy.self, registry: name, id: id)
    }

    public func createCleanupPolicy(registry name: String, changes: PolicyChanges) async throws -> CleanupPolicy {
        try await locks.withLock("policies:" + name) {
            let created = try requireRegistry(name).created
            guard let imagePattern = changes.imagePattern else { throw InvalidRequest(message: "'image_pattern' is required") }
            guard let rule = changes.rule else { throw InvalidRequest(message: "'rule' is required") }
            let policy = CleanupPolicy(
                id: Self.policyID("cp"), imagePattern: imagePattern, tagPattern: changes.tagPattern ?? "**", rule: rule,
                value: changes.value ?? nil, enabled: changes.enabled ?? true, created: Date())
            try await save(policy, registry: name, created: created, isNew: true)
            return policy
        }
    }

    public func updateCleanupPolicy(registry name: String, id: String, changes: PolicyChanges) async throws -> CleanupPolicy {
        try await locks.withLock("policies:" + name) {
            let created = try requireRegistry(name).created
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
            try await save(policy, registry: name, created: created, isNew: false)
            return policy
        }
    }

    public func deleteCleanupPolicy(registry name: String, id: String) async throws {
        try await deletePolicy(CleanupPolicy.self, registry: name, id: id)
    }

    // MARK: Storage shared by both kinds

    /// A registry's policies of one kind, oldest first.
    private func policies<P: RegistryPolicy>(_ type: P.Type, registry name: String) throws -> [P] {
        _ = try requireRegistry(name)
        return try storedPolicies(type, registry: name).sorted { ($0.created, $0.id) < ($1.created, $1.id) }
    }

    /// The stored policies of one kind, in key order (for checks on the push
    /// path, which has already found the registry).
    func storedPolicies<P: RegistryPolicy>(_ type: P.Type, registry name: String) throws -> [P] {
        var policies: [P] = []
        try db.scan(.catalog, prefix: CatalogKey.policies(P.self, name).childPrefix) { _, value in
            policies.append(try RecordCodec.decode(type, value))
            return true
        }
        return policies
    }

    private func policy<P: RegistryPolicy>(_ type: P.Type, registry name: String, id: String) throws -> P {
        _ = try requireRegistry(name)
        guard let policy = try read(type, CatalogKey.policy(P.self, name, id)) else {
            throw RegistryError(.nameUnknown, "\(P.noun) '\(id)' does not exist in registry '\(name)'")
        }
        return policy
    }

    /// Validates and writes a policy into the registry created at `created`,
    /// read before anything the change rests on; call under the registry's `policies:` lock.
    private func save<P: RegistryPolicy>(_ policy: P, registry name: String, created: Date, isNew: Bool) async throws {
        try Self.validatePattern(policy.imagePattern, "image_pattern")
        try Self.validatePattern(policy.tagPattern, "tag_pattern")
        try policy.validateOwnFields()
        let others = try policies(P.self, registry: name).filter { $0.id != policy.id }
        if let twin = others.first(where: { $0.sameEffect(as: policy) }) {
            throw RegistryError(.conflict, "\(P.noun) '\(twin.id)' already does the same (\(P.sameEffectFields))")
        }
        if isNew, others.count >= Self.policyLimit {
            throw LifecycleError.limit("a registry has at most \(Self.policyLimit) \(P.noun)s")
        }
        var batch = WriteBatch()
        batch.put(.catalog, CatalogKey.policy(P.self, name, policy.id).bytes, RecordCodec.encode(policy))
        try await write(batch, into: name, created: created)
    }

    private func deletePolicy<P: RegistryPolicy>(_ type: P.Type, registry name: String, id: String) async throws {
        try await locks.withLock("policies:" + name) {
            let created = try requireRegistry(name).created
            _ = try policy(type, registry: name, id: id)
            var batch = WriteBatch()
            batch.delete(.catalog, CatalogKey.policy(P.self, name, id).bytes)
            try await write(batch, into: name, created: created)
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
            return try CronExpression(text, strict: true)  // a client's new schedule
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

    /// `pp-` or `cp-` and 12 random hexadecimal digits.
    static func policyID(_ prefix: String) -> String {
        prefix + "-" + (0..<6).map { _ in UInt8.random(in: 0...255) }.hexString
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
