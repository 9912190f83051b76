import BerthCore
import BerthStorage
import Foundation
import Testing

private func withIdentity(_ body: (Identity, Store) async throws -> Void) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-id-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try Store(directory: directory, threads: 2)
    try await body(try Identity(store: store), store)
    try await store.shutdown()
}

@Suite struct RightsTests {
    @Test func matrixOfDesignSection5() {
        let admin = Rights(bindings: [RoleBinding(role: .admin, registry: nil)])
        let viewer = Rights(bindings: [RoleBinding(role: .viewer, registry: nil)])
        let uploader = Rights(bindings: [RoleBinding(role: .uploader, registry: nil)])
        let scoped = Rights(bindings: [RoleBinding(role: .admin, registry: "rb")])
        for permission in [Permission.view, .pull, .push, .delete, .administer] {
            #expect(admin.allows(permission, on: "ra"))
            #expect(scoped.allows(permission, on: "rb"))
            #expect(!scoped.allows(permission, on: "ra"))
            #expect(!Rights.none.allows(permission, on: "ra"))
        }
        #expect(viewer.allows(.pull, on: "ra") && viewer.allows(.view, on: "ra"))
        #expect(!viewer.allows(.push, on: "ra") && !viewer.allows(.delete, on: "ra"))
        #expect(uploader.allows(.push, on: "ra") && uploader.allows(.pull, on: "ra"))
        #expect(!uploader.allows(.delete, on: "ra") && !uploader.allows(.administer, on: "ra"))
        #expect(admin.isGlobalAdmin && !scoped.isGlobalAdmin && !viewer.isGlobalAdmin)
        // Rights are the union of bindings.
        let both = Rights(bindings: [RoleBinding(role: .viewer, registry: nil), RoleBinding(role: .uploader, registry: "ra")])
        #expect(both.allows(.push, on: "ra") && !both.allows(.push, on: "rb"))
    }

    @Test func bindingIDs() {
        #expect(RoleBinding(id: "viewer@prod") == RoleBinding(role: .viewer, registry: "prod"))
        #expect(RoleBinding(id: "admin") == RoleBinding(role: .admin, registry: nil))
        #expect(RoleBinding(id: "owner") == nil)
    }
}

@Suite struct IdentityTests {
    @Test func keysAuthenticateAndObeyTheLimit() async throws {
        try await withIdentity { identity, _ in
            _ = try await identity.createUser("alice")
            let key = try await identity.createKey(user: "alice")
            #expect(key.record.id.count == 22 && key.record.id.hasPrefix("AK"))
            #expect(key.secret.count == 40)
            #expect(key.record.secretHash != Array(key.secret.utf8))
            #expect(identity.authenticate(accessKey: key.record.id, secret: key.secret)?.user == "alice")
            #expect(identity.authenticate(accessKey: key.record.id, secret: key.secret + "x") == nil)
            #expect(identity.authenticate(accessKey: "AKNOPE", secret: key.secret) == nil)
            for _ in 0..<4 { _ = try await identity.createKey(user: "alice") }
            await #expect(throws: IdentityError.self) { _ = try await identity.createKey(user: "alice") }
        }
    }

    /// A key used just before it is disabled or deleted stays disabled or
    /// deleted on disk: the use's `lastUsed` write once put back the record as
    /// it was before, so the key worked again after a restart.
    @Test func aUseRacingARevocationDoesNotUndoIt() async throws {
        try await withIdentity { identity, store in
            _ = try await identity.createUser("carol")
            var disabled: [String] = []
            var deleted: [String] = []
            for round in 0..<8 {
                let key = try await identity.createKey(user: "carol")
                #expect(identity.authenticate(accessKey: key.record.id, secret: key.secret) != nil)
                if round.isMultiple(of: 2) {
                    _ = try await identity.setKeyDisabled(user: "carol", id: key.record.id, true)
                    disabled.append(key.record.id)
                } else {
                    try await identity.deleteKey(user: "carol", id: key.record.id)
                    deleted.append(key.record.id)
                }
            }
            try await Task.sleep(for: .milliseconds(200))  // the uses' writes are done
            let reloaded = try Identity(store: store)
            for id in disabled { #expect(reloaded.key(id)?.disabled == true) }
            for id in deleted { #expect(reloaded.key(id) == nil) }
        }
    }

    @Test func disablingAndRotationStopKeys() async throws {
        try await withIdentity { identity, _ in
            _ = try await identity.createUser("bob")
            let key = try await identity.createKey(user: "bob")
            _ = try await identity.setKeyDisabled(user: "bob", id: key.record.id, true)
            #expect(identity.principal(forKey: key.record.id) == nil)
            _ = try await identity.setKeyDisabled(user: "bob", id: key.record.id, false)
            let fresh = try await identity.rotateKey(user: "bob", id: key.record.id, overlap: 60)
            #expect(identity.principal(forKey: key.record.id) != nil)  // within the overlap
            #expect(identity.principal(forKey: key.record.id, now: Date().addingTimeInterval(61)) == nil)
            #expect(identity.authenticate(accessKey: fresh.record.id, secret: fresh.secret) != nil)
            _ = try await identity.setUserDisabled("bob", true)
            #expect(identity.principal(forKey: fresh.record.id) == nil)
        }
    }

    /// Rotating again never extends the old key: a retiring key keeps the
    /// earlier retirement, and a disabled one stays disabled.
    @Test func rotationNeverRevivesOrExtendsTheOldKey() async throws {
        try await withIdentity { identity, _ in
            _ = try await identity.createUser("bob")
            let key = try await identity.createKey(user: "bob")
            let id = key.record.id
            _ = try await identity.rotateKey(user: "bob", id: id, overlap: 60)
            _ = try await identity.rotateKey(user: "bob", id: id, overlap: 30 * 86_400)
            #expect(identity.principal(forKey: id, now: Date().addingTimeInterval(61)) == nil)
            // Retired by its overlap running out, then rotated again: it stays retired.
            _ = try await identity.createUser("carol")
            let short = try await identity.createKey(user: "carol")
            _ = try await identity.rotateKey(user: "carol", id: short.record.id, overlap: 0.01)
            try await Task.sleep(for: .milliseconds(50))
            #expect(identity.principal(forKey: short.record.id) == nil)
            _ = try await identity.rotateKey(user: "carol", id: short.record.id, overlap: 30 * 86_400)
            #expect(identity.principal(forKey: short.record.id) == nil)
        }
    }

    @Test func stateSurvivesReopen() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-id-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var created: Identity.NewAccessKey?
        do {
            let store = try Store(directory: directory, threads: 2)
            let identity = try Identity(store: store)
            // A start whose credential could not be saved stores nothing: the next one bootstraps.
            struct Unsaved: Error {}
            await #expect(throws: Unsaved.self) { try await identity.bootstrapIfEmpty { _ in throw Unsaved() } }
            #expect(identity.users().isEmpty)
            var saved: Identity.NewAccessKey?
            created = try await identity.bootstrapIfEmpty { saved = $0 }
            #expect(saved?.secret == created?.secret)
            #expect(try await identity.bootstrapIfEmpty { _ in } == nil)
            try await store.shutdown()
        }
        let store = try Store(directory: directory, threads: 2)
        let identity = try Identity(store: store)
        let principal = identity.authenticate(accessKey: created!.record.id, secret: created!.secret)
        #expect(principal?.rights.isGlobalAdmin == true)
        #expect(try await identity.bootstrapIfEmpty { _ in } == nil)
        try await store.shutdown()
    }
}

@Suite struct AuthThrottleTests {
    @Test func throttlesBySourceAndByKey() {
        let throttle = AuthThrottle(limit: 3, window: 60)
        let now = Date()
        for _ in 0..<3 { throttle.recordFailure(source: "10.0.0.1", accessKey: "AKX", now: now) }
        #expect(throttle.retryAfter(source: "10.0.0.1", accessKey: nil, now: now) == 60)
        #expect(throttle.retryAfter(source: "10.0.0.2", accessKey: "AKX", now: now.addingTimeInterval(10)) == 50)
        #expect(throttle.retryAfter(source: "10.0.0.2", accessKey: "AKY", now: now) == nil)
        #expect(throttle.retryAfter(source: "10.0.0.1", accessKey: nil, now: now.addingTimeInterval(61)) == nil)
    }

    /// A key held at its limit by others' failures still works from the sources it
    /// authenticated from lately; failures from one of them still count there.
    @Test func aKeysLockoutSparesTheSourcesItWorksFrom() {
        let throttle = AuthThrottle(limit: 3, window: 60, trustTime: 3600, trustedSourcesPerKey: 2)
        let now = Date()
        func at(_ seconds: Double) -> Date { now.addingTimeInterval(seconds) }
        throttle.recordSuccess(source: "10.0.0.1", accessKey: "AKX", now: now)
        throttle.recordSuccess(source: "2001:db8:1:2::1", accessKey: "AKX", now: at(1))
        for i in 0..<3 { throttle.recordFailure(source: "192.0.2.\(i)", accessKey: "AKX", now: now) }
        #expect(throttle.retryAfter(source: "10.0.0.9", accessKey: "AKX", now: now) == 60)
        #expect(throttle.retryAfter(source: "10.0.0.1", accessKey: "AKX", now: now) == nil)
        #expect(throttle.retryAfter(source: "2001:db8:1:2::77", accessKey: "AKX", now: at(1)) == nil, "by its /64")
        // A new good source pushes out the least recently successful one.
        throttle.recordSuccess(source: "10.0.0.3", accessKey: "AKX", now: at(10))
        #expect(throttle.retryAfter(source: "10.0.0.3", accessKey: "AKX", now: at(20)) == nil)
        #expect(throttle.retryAfter(source: "2001:db8:1:2::1", accessKey: "AKX", now: at(20)) == nil)
        #expect(throttle.retryAfter(source: "10.0.0.1", accessKey: "AKX", now: at(20)) == 40)
        // A trusted source's own failures throttle it as a source.
        for _ in 0..<3 { throttle.recordFailure(source: "10.0.0.3", accessKey: "AKX", now: at(30)) }
        #expect(throttle.retryAfter(source: "10.0.0.3", accessKey: "AKX", now: at(30)) == 60)
        // Trust ages out.
        for i in 0..<3 { throttle.recordFailure(source: "192.0.2.\(i)", accessKey: "AKX", now: at(3700)) }
        #expect(throttle.retryAfter(source: "2001:db8:1:2::1", accessKey: "AKX", now: at(3700)) == 60)
        // A success a minute or more later refreshes a source's trust.
        throttle.recordSuccess(source: "10.0.0.5", accessKey: "AKX", now: at(3700))
        throttle.recordSuccess(source: "10.0.0.5", accessKey: "AKX", now: at(3700 + 3000))
        for i in 0..<3 { throttle.recordFailure(source: "192.0.2.\(i)", accessKey: "AKX", now: at(3700 + 3700)) }
        #expect(throttle.retryAfter(source: "10.0.0.5", accessKey: "AKX", now: at(3700 + 3700)) == nil)

        // Failures from a trusted source count against the key, for every other source.
        let other = AuthThrottle(limit: 3, window: 60, trustTime: 3600, trustedSourcesPerKey: 2)
        other.recordSuccess(source: "10.0.0.1", accessKey: "AKZ", now: now)
        for _ in 0..<3 { other.recordFailure(source: "10.0.0.1", accessKey: "AKZ", now: now) }
        #expect(other.retryAfter(source: "10.0.0.2", accessKey: "AKZ", now: now) == 60)
    }

    /// A flood of failures from more sources than the table keeps does not lift a key's lockout.
    @Test func aSourceFloodKeepsKeyLockouts() {
        let throttle = AuthThrottle(limit: 3, window: 60, sourceCapacity: 100)
        let now = Date()
        for _ in 0..<3 { throttle.recordFailure(source: "10.0.0.1", accessKey: "AKX", now: now) }
        for i in 0..<250 { throttle.recordFailure(source: "10.1.\(i / 256).\(i % 256)", accessKey: nil, now: now) }
        #expect(throttle.retryAfter(source: "10.9.9.9", accessKey: "AKX", now: now) == 60)
        // A source whose failures aged out makes room before any live one is dropped.
        let later = now.addingTimeInterval(61)
        let fresh = AuthThrottle(limit: 3, window: 60, sourceCapacity: 2)
        fresh.recordFailure(source: "10.0.0.1", accessKey: nil, now: now)
        for _ in 0..<3 { fresh.recordFailure(source: "10.0.0.2", accessKey: nil, now: later) }
        fresh.recordFailure(source: "10.0.0.3", accessKey: nil, now: later)
        #expect(fresh.retryAfter(source: "10.0.0.2", accessKey: nil, now: later) == 60)
    }

    /// When live sources fill the table, those below the limit go, not the locked-out ones.
    @Test func aSourceFloodKeepsSourceLockouts() {
        let throttle = AuthThrottle(limit: 3, window: 60, sourceCapacity: 100)
        let now = Date()
        for _ in 0..<3 { throttle.recordFailure(source: "10.0.0.1", accessKey: nil, now: now) }
        for i in 0..<250 { throttle.recordFailure(source: "10.1.\(i / 256).\(i % 256)", accessKey: nil, now: now) }
        #expect(throttle.retryAfter(source: "10.0.0.1", accessKey: nil, now: now) == 60)
    }

    /// IPv6 clients are counted per /64; an IPv4-mapped address is its IPv4 client.
    @Test func anIPv6SourceIsItsSlash64() {
        #expect(AuthThrottle.sourceName("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64")
        #expect(AuthThrottle.sourceName("2001:db8:1:2:bbbb:cccc:dddd:eeee") == "2001:db8:1:2::/64")
        #expect(AuthThrottle.sourceName("::ffff:10.0.0.1") == "::ffff:10.0.0.1")
        #expect(AuthThrottle.sourceName("10.0.0.1") == "10.0.0.1")
        let throttle = AuthThrottle(limit: 3, window: 60)
        let now = Date()
        for i in 1...3 { throttle.recordFailure(source: "2001:db8:1:2::\(i)", accessKey: nil, now: now) }
        #expect(throttle.retryAfter(source: "2001:db8:1:2:ffff::9", accessKey: nil, now: now) == 60)
        #expect(throttle.retryAfter(source: "2001:db8:1:3::1", accessKey: nil, now: now) == nil)
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEqual([1, 2], [1, 2, 3]))
    }
}

@Suite struct AuditLogTests {
    /// A request cancelled once its change is made (its client left) still
    /// records the change: the blocking pool refuses a cancelled task's work,
    /// so the entry is not written from the request's task.
    @Test func aCancelledRequestStillRecordsItsEntry() async throws {
        try await withScratchRegistry { _, store in
            let audit = AuditLog(store: store)
            let request = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                #expect(Task.isCancelled)
                await audit.record(actor: "admin", source: "s", action: "registry.delete", target: "gone", durability: .synced)
            }
            await request.value
            let entries = try await audit.entries(.init(), before: nil, limit: 10).items
            #expect(entries.map(\.action) == ["registry.delete"])
        }
    }

    /// The maintenance pass deletes entries older than the retention, in one range delete.
    @Test func trimDeletesOnlyOlderEntries() async throws {
        try await withScratchRegistry { _, store in
            let audit = AuditLog(store: store)
            let now = Date()
            for days in [400.0, 30, 0] {
                await audit.record(actor: "a", source: "s", action: "login", target: "\(Int(days))", now: now.addingTimeInterval(-days * 86_400))
            }
            #expect(try await audit.trim(olderThan: now.addingTimeInterval(-365 * 86_400)))
            let kept = try await audit.entries(.init(), before: nil, limit: 10).items.map(\.target)
            #expect(kept == ["0", "30"])
            #expect(try await audit.trim(olderThan: now.addingTimeInterval(-365 * 86_400)) == false)
        }
    }

    /// A narrow filter over a long log reads a bounded stretch per page and
    /// pages on from the last entry it read, so it finds every match once.
    @Test func aFilteredPageReadsAtMostTheScanLimit() async throws {
        try await withScratchRegistry { _, store in
            let audit = AuditLog(store: store)
            let base = Date().addingTimeInterval(-3600)
            for i in 0..<40 {
                let actor = i % 7 == 0 ? "rare" : "common"
                await audit.record(actor: actor, source: "s", action: "login", target: "\(i)", now: base.addingTimeInterval(Double(i)))
            }
            var cursor: String?
            var found: [String] = []
            var pages = 0
            repeat {
                let page = try await audit.entries(.init(actor: "rare"), before: cursor, limit: 2, scanLimit: 5)
                #expect(page.items.count <= 2)
                found += page.items.map(\.target)
                cursor = page.next
                pages += 1
            } while cursor != nil && pages < 100
            #expect(found == ["35", "28", "21", "14", "7", "0"])
            #expect(pages >= 8)  // 40 entries, at most 5 read per page

            // `until` seeks: the first page starts at the newest entry at or before it.
            let until = try await audit.entries(.init(until: base.addingTimeInterval(20.5)), before: nil, limit: 3, scanLimit: 3)
            #expect(until.items.map(\.target) == ["20", "19", "18"])
            // Whichever is older of the cursor and `until` is where a page starts.
            let both = try await audit.entries(
                .init(until: base.addingTimeInterval(20.5)), before: until.next, limit: 2, scanLimit: 3)
            #expect(both.items.map(\.target) == ["17", "16"])
        }
    }
}
