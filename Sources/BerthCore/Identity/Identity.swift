import BerthStorage
import Crypto
import Foundation
import NIOConcurrencyHelpers

/// Users, access keys and role bindings (column family `auth`), with an
/// in-memory copy for the per-request checks.
///
/// Key schema: `U\0<user>` → ``UserRecord``; `K\0<access key id>` →
/// ``AccessKeyRecord``; `B\0<user>\0<binding id>` → ``RoleBinding``.
public final class Identity: Sendable {
    public static let maxKeysPerUser = 5
    static let keyAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    static let secretAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

    /// Whether `text` has the shape of the key ids Berth generates (`AK` and 20 base32 letters).
    public static func looksLikeKeyID(_ text: String) -> Bool {
        let characters = Array(text)
        return characters.count == 22 && text.hasPrefix("AK") && characters.dropFirst(2).allSatisfy(keyAlphabet.contains)
    }

    struct State {
        var users: [String: UserRecord] = [:]
        var keys: [String: AccessKeyRecord] = [:]
        var bindings: [String: [RoleBinding]] = [:]
    }

    let store: Store
    private let state: NIOLockedValueBox<State>
    private let writes = KeyedLocks()

    public init(store: Store) throws {
        self.store = store
        var state = State()
        try store.db.scan(.auth, prefix: Key("U").childPrefix) { _, value in
            let user = try RecordCodec.decode(UserRecord.self, value)
            state.users[user.id] = user
            return true
        }
        try store.db.scan(.auth, prefix: Key("K").childPrefix) { _, value in
            let key = try RecordCodec.decode(AccessKeyRecord.self, value)
            state.keys[key.id] = key
            return true
        }
        try store.db.scan(.auth, prefix: Key("B").childPrefix) { key, value in
            let user = Key.components(key)[0]
            state.bindings[user, default: []].append(try RecordCodec.decode(RoleBinding.self, value))
            return true
        }
        self.state = NIOLockedValueBox(state)
    }

    private func write(_ batch: WriteBatch) async throws {
        try await store.pool.run { [db = store.db] in try db.write(batch, .synced) }
    }

    /// Serializes identity changes; they are rare, and each reads what it changes.
    private func change<T>(_ body: () async throws -> T) async throws -> T {
        try await writes.withLock("identity", body)
    }

    /// Whether some enabled user holds the global admin role and a key that
    /// works and is not retiring: without one, nobody could manage users,
    /// keys or roles again (bootstrap runs only on an empty store).
    private static func hasWorkingAdmin(_ state: State, now: Date) -> Bool {
        state.bindings.contains { user, bindings in
            bindings.contains { $0.role == .admin && $0.registry == nil }
                && state.users[user].map { !$0.disabled } == true
                && state.keys.values.contains { $0.user == user && $0.isActive(at: now) && $0.expires == nil }
        }
    }

    /// Refuses (409) a change that would leave no working global admin where
    /// there is one now. Call inside ``change(_:)``, before writing.
    private func keepWorkingAdmin(_ what: String, after apply: (inout State) -> Void) throws {
        let now = Date()
        let current = state.withLockedValue { $0 }
        var next = current
        apply(&next)
        if Self.hasWorkingAdmin(current, now: now), !Self.hasWorkingAdmin(next, now: now) {
            throw IdentityError.conflict(
                "\(what) would leave no enabled user with the global admin role and a working access key")
        }
    }

    // MARK: Bootstrap

    /// Creates user `admin` with a global admin binding and one key when there
    /// are no users yet, in one write. Returns the new key (with its secret) or nil.
    ///
    /// `save` stores the key's secret (the credentials file) before the store
    /// knows the key: a crash in between leaves no user, and the next start
    /// bootstraps again, where three separate writes could leave an admin
    /// without a binding or a key nobody ever saw, locking everyone out.
    public func bootstrapIfEmpty(saving save: (NewAccessKey) async throws -> Void) async throws -> NewAccessKey? {
        try await change {
            guard state.withLockedValue({ $0.users.isEmpty }) else { return nil }
            let user = UserRecord(id: "admin", created: Date(), disabled: false)
            let binding = RoleBinding(role: .admin, registry: nil)
            let key = Self.generateKey(user: user.id)
            try await save(key)
            var batch = WriteBatch()
            batch.put(.auth, Key("U", user.id).bytes, RecordCodec.encode(user))
            batch.put(.auth, Key("B", user.id, binding.id).bytes, RecordCodec.encode(binding))
            batch.put(.auth, Key("K", key.record.id).bytes, RecordCodec.encode(key.record))
            try await write(batch)
            state.withLockedValue { state in
                state.users[user.id] = user
                state.bindings[user.id] = [binding]
                state.keys[key.record.id] = key.record
            }
            return key
        }
    }

    // MARK: Users

    public func validateUserName(_ name: String) throws {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count), Names.isLowerAlnum(bytes[0]),
            bytes.allSatisfy({ Names.isLowerAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
        else {
            throw IdentityError.invalid(
                "user name '\(name)' must be 1–64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
        }
    }

    public func createUser(_ name: String) async throws -> UserRecord {
        try validateUserName(name)
        return try await change {
            if user(name) != nil { throw IdentityError.conflict("user '\(name)' already exists") }
            let record = UserRecord(id: name, created: Date(), disabled: false)
            var batch = WriteBatch()
            batch.put(.auth, Key("U", name).bytes, RecordCodec.encode(record))
            try await write(batch)
            state.withLockedValue { $0.users[name] = record }
            return record
        }
    }

    public func user(_ id: String) -> UserRecord? { state.withLockedValue { $0.users[id] } }

    public func users() -> [UserRecord] {
        state.withLockedValue { Array($0.users.values) }.sorted { $0.id < $1.id }
    }

    public func setUserDisabled(_ id: String, _ disabled: Bool) async throws -> UserRecord {
        try await change {
            guard var record = user(id) else { throw IdentityError.notFound("user '\(id)' does not exist") }
            record.disabled = disabled
            if disabled { try keepWorkingAdmin("disabling user '\(id)'") { $0.users[id] = record } }
            var batch = WriteBatch()
            batch.put(.auth, Key("U", id).bytes, RecordCodec.encode(record))
            try await write(batch)
            state.withLockedValue { $0.users[id] = record }
            return record
        }
    }

    /// Deletes a user with its keys and bindings.
    public func deleteUser(_ id: String) async throws {
        try await change {
            guard user(id) != nil else { throw IdentityError.notFound("user '\(id)' does not exist") }
            try keepWorkingAdmin("deleting user '\(id)'") { $0.users[id] = nil }
            var batch = WriteBatch()
            batch.delete(.auth, Key("U", id).bytes)
            for key in keys(user: id) { batch.delete(.auth, Key("K", key.id).bytes) }
            batch.deleteRange(.auth, from: Key("B", id).childPrefix, to: Key("B", id).bytes + [1])
            try await write(batch)
            state.withLockedValue { state in
                state.users[id] = nil
                state.bindings[id] = nil
                state.keys = state.keys.filter { $0.value.user != id }
            }
        }
    }

    // MARK: Access keys

    /// A key as created: the only time its secret is known.
    public struct NewAccessKey: Sendable {
        public var record: AccessKeyRecord
        public var secret: String
    }

    public func keys(user: String) -> [AccessKeyRecord] {
        state.withLockedValue { $0.keys.values.filter { $0.user == user } }.sorted { $0.created < $1.created }
    }

    public func key(_ id: String) -> AccessKeyRecord? { state.withLockedValue { $0.keys[id] } }

    public func createKey(user: String) async throws -> NewAccessKey {
        try await change {
            let key = try newKey(user: user)
            try await put([key.record])
            return key
        }
    }

    /// A key for `user`, not yet stored. `replacing` names a key being retired
    /// by rotation: it does not count against the limit.
    private func newKey(user: String, replacing: String? = nil) throws -> NewAccessKey {
        guard self.user(user) != nil else { throw IdentityError.notFound("user '\(user)' does not exist") }
        guard keys(user: user).filter({ $0.id != replacing }).count < Self.maxKeysPerUser else {
            throw IdentityError.keyLimit("user '\(user)' already has \(Self.maxKeysPerUser) access keys; delete one first")
        }
        return Self.generateKey(user: user)
    }

    private static func generateKey(user: String) -> NewAccessKey {
        var generator = SystemRandomNumberGenerator()
        let id = "AK" + String((0..<20).map { _ in keyAlphabet.randomElement(using: &generator)! })
        let secret = String((0..<40).map { _ in secretAlphabet.randomElement(using: &generator)! })
        let record = AccessKeyRecord(
            id: id, user: user, secretHash: Array(SHA256.hash(data: Array(secret.utf8))), created: Date(),
            lastUsed: nil, disabled: false, expires: nil)
        return NewAccessKey(record: record, secret: secret)
    }

    /// Stores key records in one synced write.
    private func put(_ records: [AccessKeyRecord]) async throws {
        var batch = WriteBatch()
        for record in records { batch.put(.auth, Key("K", record.id).bytes, RecordCodec.encode(record)) }
        try await write(batch)
        state.withLockedValue { state in for record in records { state.keys[record.id] = record } }
    }

    private func ownedKey(user: String, id: String) throws -> AccessKeyRecord {
        guard let key = key(id), key.user == user else {
            throw IdentityError.notFound("access key '\(id)' of user '\(user)' does not exist")
        }
        return key
    }

    /// Disables a key, or enables one that does not work (disabled, or past a
    /// rotation's overlap). Enabling a key that works changes nothing: a key in
    /// its rotation's overlap keeps its retirement time. A key retired by a
    /// rotation did not count against the limit when its successor was issued,
    /// so enabling a key is refused while the user's other working keys fill it.
    public func setKeyDisabled(user: String, id: String, _ disabled: Bool) async throws -> AccessKeyRecord {
        try await change {
            var key = try ownedKey(user: user, id: id)
            let now = Date()
            if !disabled, key.isActive(at: now) { return key }
            if !disabled, keys(user: user).filter({ $0.id != id && $0.isActive(at: now) }).count >= Self.maxKeysPerUser {
                throw IdentityError.keyLimit(
                    "user '\(user)' already has \(Self.maxKeysPerUser) working access keys; disable or delete one before enabling '\(id)'")
            }
            key.disabled = disabled
            if !disabled { key.expires = nil }
            if disabled { try keepWorkingAdmin("disabling access key '\(id)'") { [key] in $0.keys[id] = key } }
            try await put([key])
            return key
        }
    }

    public func deleteKey(user: String, id: String) async throws {
        try await change {
            _ = try ownedKey(user: user, id: id)
            try keepWorkingAdmin("deleting access key '\(id)'") { $0.keys[id] = nil }
            var batch = WriteBatch()
            batch.delete(.auth, Key("K", id).bytes)
            try await write(batch)
            state.withLockedValue { _ = $0.keys.removeValue(forKey: id) }
        }
    }

    /// Issues a new key and retires the old one, at once or after `overlap` seconds.
    ///
    /// A rotation never extends the old key's life: one that no longer works
    /// stays so, and one already retiring keeps the earlier of the two times.
    public func rotateKey(user: String, id: String, overlap: Double) async throws -> NewAccessKey {
        try await change {
            var old = try ownedKey(user: user, id: id)
            let now = Date()
            if old.isActive(at: now) {
                if overlap <= 0 {
                    old.disabled = true
                } else {
                    old.expires = min(old.expires ?? .distantFuture, now.addingTimeInterval(overlap))
                }
            }
            // One write: retiring the old key and storing its successor apart
            // could leave a user with neither after a crash.
            let new = try newKey(user: user, replacing: id)
            try await put([old, new.record])
            return new
        }
    }

    /// Records that a key was used, at most once a minute per key.
    ///
    /// The write takes the lock every key change takes and stores the record
    /// as it is then: a copy from before the secret was checked would undo a
    /// disable, rotation or delete made in between, on disk, so the revoked
    /// key would work again after a restart.
    func touch(_ key: AccessKeyRecord, now: Date) {
        if let last = key.lastUsed, now.timeIntervalSince(last) < 60 { return }
        state.withLockedValue { $0.keys[key.id]?.lastUsed = now }
        Task { [self] in
            try? await change {
                guard let current = self.key(key.id) else { return }
                var batch = WriteBatch()
                batch.put(.auth, Key("K", current.id).bytes, RecordCodec.encode(current))
                try await store.pool.run { [db = store.db, batch] in try db.write(batch, .logged) }
            }
        }
    }

    // MARK: Role bindings

    public func bindings(user: String) -> [RoleBinding] {
        state.withLockedValue { $0.bindings[user] ?? [] }.sorted { $0.id < $1.id }
    }

    public func addBinding(user: String, _ binding: RoleBinding) async throws -> RoleBinding {
        try await change {
            guard self.user(user) != nil else { throw IdentityError.notFound("user '\(user)' does not exist") }
            if bindings(user: user).contains(binding) {
                throw IdentityError.conflict("user '\(user)' already has role '\(binding.id)'")
            }
            var batch = WriteBatch()
            batch.put(.auth, Key("B", user, binding.id).bytes, RecordCodec.encode(binding))
            try await write(batch)
            state.withLockedValue { $0.bindings[user, default: []].append(binding) }
            return binding
        }
    }

    /// Removes every binding scoped to `registry`, which is being deleted (a
    /// registry created later under its name must not inherit them); what
    /// `Registry` calls as its `releaseRegistry`.
    @Sendable public func releaseRegistry(_ registry: String) async throws {
        try await change {
            let doomed = state.withLockedValue { state in
                state.bindings.flatMap { user, bindings in bindings.filter { $0.registry == registry }.map { (user, $0) } }
            }
            guard !doomed.isEmpty else { return }
            var batch = WriteBatch()
            for (user, binding) in doomed { batch.delete(.auth, Key("B", user, binding.id).bytes) }
            try await write(batch)
            state.withLockedValue { state in
                for (user, binding) in doomed { state.bindings[user]?.removeAll { $0 == binding } }
            }
        }
    }

    public func removeBinding(user: String, id: String) async throws {
        try await change {
            guard let binding = bindings(user: user).first(where: { $0.id == id }) else {
                throw IdentityError.notFound("user '\(user)' has no role '\(id)'")
            }
            try keepWorkingAdmin("removing role '\(id)' from user '\(user)'") { $0.bindings[user]?.removeAll { $0 == binding } }
            var batch = WriteBatch()
            batch.delete(.auth, Key("B", user, binding.id).bytes)
            try await write(batch)
            state.withLockedValue { $0.bindings[user]?.removeAll { $0 == binding } }
        }
    }

    // MARK: Authentication

    /// Checks an access key and secret; returns the caller or nil.
    public func authenticate(accessKey: String, secret: String, now: Date = Date()) -> Principal? {
        guard let key = key(accessKey) else {
            // Spend the same work as a real check so timing does not tell which keys exist.
            _ = constantTimeEqual(Array(SHA256.hash(data: Array(secret.utf8))), [UInt8](repeating: 0, count: 32))
            return nil
        }
        let presented = Array(SHA256.hash(data: Array(secret.utf8)))
        guard constantTimeEqual(presented, key.secretHash), let principal = principal(forKey: accessKey, now: now) else {
            return nil
        }
        touch(key, now: now)
        return principal
    }

    /// The caller behind a key that is active now and whose user is enabled.
    public func principal(forKey accessKey: String, now: Date = Date()) -> Principal? {
        state.withLockedValue { state in
            guard let key = state.keys[accessKey], key.isActive(at: now),
                let user = state.users[key.user], !user.disabled
            else { return nil }
            return Principal(
                user: user.id, accessKey: key.id, rights: Rights(bindings: state.bindings[user.id] ?? []), tokenAccess: nil)
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<a.count { difference |= a[i] ^ b[i] }
    return difference == 0
}

public enum IdentityError: Error, Sendable {
    case invalid(String)
    case notFound(String)
    case conflict(String)
    case keyLimit(String)
}
