import BerthStorage
import Foundation
import NIOConcurrencyHelpers

/// When each blob of each registry was last uploaded, mounted or read, in
/// memory. A client pushing an image checks (HEAD) or uploads its layers,
/// then puts the manifest; garbage collection leaves a blob alone for the
/// grace period after any of these, so the manifest finds its layers.
/// After a restart GC waits a grace period before deleting anything.
///
/// Ages are measured on the monotonic clock (which counts time suspended, as
/// the grace should): a wall clock stepped forward (NTP, a VM resumed, an
/// operator's `date -s`) does not age a blob used a moment ago.
///
/// A touch and GC's decision to delete are one atomic step: a blob GC has
/// begun to delete answers its readers "gone", so no client is told a blob
/// exists that is deleted a moment later.
final class BlobTouches: Sendable {
    private struct State {
        var touched: [String: ContinuousClock.Instant] = [:]
        var deleting: Set<String> = []
    }
    private let state = NIOLockedValueBox(State())
    private let started = ContinuousClock.now

    /// Records a use of the blob; false when GC is deleting it.
    @discardableResult
    func touch(registry: String, digest: String) -> Bool {
        let key = registry + "\u{0}" + digest
        return state.withLockedValue { state in
            state.touched[key] = .now
            return !state.deleting.contains(key)
        }
    }

    /// Whether the blob was used less than `grace` ago (or the server started less than `grace` ago).
    func touched(registry: String, digest: String, within grace: Duration) -> Bool {
        let now = ContinuousClock.now
        if started.duration(to: now) < grace { return true }
        return state.withLockedValue { $0.touched[registry + "\u{0}" + digest].map { $0.duration(to: now) < grace } ?? false }
    }

    /// Marks the blob as being deleted unless it was used less than `grace`
    /// ago; false (and no mark) when it was. `endDelete` removes the mark.
    func beginDelete(registry: String, digest: String, unusedFor grace: Duration) -> Bool {
        let now = ContinuousClock.now
        if started.duration(to: now) < grace { return false }
        let key = registry + "\u{0}" + digest
        return state.withLockedValue { state in
            if let used = state.touched[key], used.duration(to: now) < grace { return false }
            state.deleting.insert(key)
            return true
        }
    }

    func endDelete(registry: String, digest: String) {
        _ = state.withLockedValue { $0.deleting.remove(registry + "\u{0}" + digest) }
    }

    /// How many uses are on record.
    var count: Int { state.withLockedValue { $0.touched.count } }

    /// Forgets uses `grace` or more ago: collections do it, and so does the
    /// maintenance service, so that mounts of digests nobody has (each one
    /// touched) cannot grow the record while no collection runs.
    func prune(olderThan grace: Duration) {
        let now = ContinuousClock.now
        state.withLockedValue { $0.touched = $0.touched.filter { $0.value.duration(to: now) < grace } }
    }
}

/// What a garbage collection run freed.
public struct CollectionOutcome: Sendable {
    public var blobsDeleted: Int64 = 0
    public var bytesDeleted: Int64 = 0
    public var extentsFreed: Int64 = 0
    public var physicalBytesFreed: Int64 = 0
    public var errors: Int64 = 0

    var summary: [String: Int64] {
        [
            "blobs_deleted": blobsDeleted, "bytes_deleted": bytesDeleted, "extents_freed": extentsFreed,
            "physical_bytes_freed": physicalBytesFreed, "errors": errors,
        ]
    }
}

extension Registry {
    /// Forgets the blob uses older than `grace` seconds, which no collection
    /// with that grace looks at (see ``BlobTouches/prune(olderThan:)``).
    public func forgetBlobUses(olderThan grace: Double) {
        touches.prune(olderThan: .seconds(grace))
    }

    /// Online garbage collection: deletes every blob no manifest of its
    /// registry references and nobody uploaded, mounted or read within
    /// `grace` seconds, then frees the extents no bucket holds any more.
    ///
    /// Each delete takes the blob's link lock, which a manifest push holds
    /// while it checks its blobs and adds its links, so a push and GC never
    /// both win. Pushes and pulls go on meanwhile.
    public func collectGarbage(grace: Double, details: JobDetails) async throws -> CollectionOutcome {
        var outcome = CollectionOutcome()
        // The records' creation times are on the wall clock; whether a blob was
        // used within the grace is decided on the monotonic one (BlobTouches).
        let cutoff = Date().addingTimeInterval(-grace)
        touches.prune(olderThan: .seconds(grace))
        var registryNames: [String] = []
        try db.scan(.catalog, prefix: Key("R").childPrefix) { key, _ in
            registryNames.append(Key.lastComponent(key))
            return true
        }
        for registryName in registryNames {
            var after: String?
            while true {
                // A page at a time: a registry may hold millions of blobs. The scan
                // reads past the block cache, from the disk: on the blocking pool.
                let page = try await store.pool.run { [objects, after] in
                    try objects.objects(bucket: registryName, after: after, limit: 1000)
                }
                guard let last = page.last else { break }
                after = last.digest
                for object in page where object.created < cutoff {
                    try Task.checkCancellation()
                    try await collect(object, registry: registryName, grace: .seconds(grace), into: &outcome, details: details)
                }
            }
        }
        // Extents no object holds any more are freed once unreferenced for the
        // grace period too: a pull that began before a blob was deleted (by GC
        // or DELETE) keeps reading its chunks meanwhile.
        let swept = try await objects.sweepExtents(grace: grace)
        outcome.extentsFreed = Int64(swept.extents)
        outcome.physicalBytesFreed = swept.bytes
        details.summarySoFar = outcome.summary
        return outcome
    }

    /// Deletes one blob if nothing references it and nobody used it within `grace`.
    private func collect(
        _ object: ObjectRecord, registry registryName: String, grace: Duration, into outcome: inout CollectionOutcome, details: JobDetails
    ) async throws {
        guard try linkCount(registry: registryName, blob: object.digest) == 0,
            !touches.touched(registry: registryName, digest: object.digest, within: grace)
        else { return }
        do {
            let deleted = try await locks.withLock("link:\(registryName)@\(object.digest)") { () -> Bool in
                guard try linkCount(registry: registryName, blob: object.digest) == 0,
                    touches.beginDelete(registry: registryName, digest: object.digest, unusedFor: grace)
                else { return false }
                defer { touches.endDelete(registry: registryName, digest: object.digest) }
                // Logged, not synced: the run's record, written synced at its end,
                // makes its deletes durable together (a device flush per blob made
                // a collection of many take minutes). One lost to a power cut is a
                // blob back with its reference: the next collection takes it again.
                return try await objects.delete(bucket: registryName, digest: object.digest, durability: .logged)
            }
            guard deleted else { return }
            outcome.blobsDeleted += 1
            outcome.bytesDeleted += object.size
            details.summarySoFar = outcome.summary
            try await details.add(
                JobDetail(
                    image: nil, digest: object.digest, tags: [], action: .deleted, policy: nil,
                    reason: "\(registryName): \(object.size) bytes, referenced by no manifest"))
        } catch let error as CancellationError {
            throw error
        } catch {
            outcome.errors += 1
            details.summarySoFar = outcome.summary
            try await details.add(
                JobDetail(image: nil, digest: object.digest, tags: [], action: .failed, policy: nil, reason: "\(registryName): \(error)"))
        }
    }
}
