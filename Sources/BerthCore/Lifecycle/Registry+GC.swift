import BerthStorage
import Foundation
import NIOConcurrencyHelpers

/// When each blob of each registry was last uploaded, mounted or read, in
/// memory. A client pushing an image checks (HEAD) or uploads its layers,
/// then puts the manifest; garbage collection leaves a blob alone for the
/// grace period after any of these, so the manifest finds its layers.
/// After a restart GC waits a grace period before deleting anything.
final class BlobTouches: Sendable {
    private let table = NIOLockedValueBox([String: Date]())
    let started = Date()

    func touch(registry: String, digest: String) {
        table.withLockedValue { $0[registry + "\u{0}" + digest] = Date() }
    }

    func touched(registry: String, digest: String, since cutoff: Date) -> Bool {
        if started > cutoff { return true }
        return table.withLockedValue { ($0[registry + "\u{0}" + digest] ?? .distantPast) > cutoff }
    }

    /// Forgets touches older than `cutoff`.
    func prune(before cutoff: Date) {
        table.withLockedValue { $0 = $0.filter { $0.value > cutoff } }
    }
}

/// What a garbage collection run freed.
public struct CollectionOutcome: Sendable {
    public var blobsDeleted: Int64 = 0
    public var bytesDeleted: Int64 = 0
    public var extentsFreed: Int64 = 0
    public var physicalBytesFreed: Int64 = 0
    public var errors: Int64 = 0
    public var details: [JobDetail] = []

    var summary: [String: Int64] {
        [
            "blobs_deleted": blobsDeleted, "bytes_deleted": bytesDeleted, "extents_freed": extentsFreed,
            "physical_bytes_freed": physicalBytesFreed, "errors": errors,
        ]
    }
}

extension Registry {
    /// Online garbage collection: deletes every blob no manifest of its
    /// registry references and nobody uploaded, mounted or read within
    /// `grace` seconds, then frees the extents no bucket holds any more.
    ///
    /// Each delete takes the blob's link lock, which a manifest push holds
    /// while it checks its blobs and adds its links, so a push and GC never
    /// both win. Pushes and pulls go on meanwhile.
    public func collectGarbage(grace: Double) async throws -> CollectionOutcome {
        var outcome = CollectionOutcome()
        let cutoff = Date().addingTimeInterval(-grace)
        touches.prune(before: cutoff)
        var registryNames: [String] = []
        try db.scan(.catalog, prefix: Key("R").childPrefix) { key, _ in
            registryNames.append(Key.lastComponent(key))
            return true
        }
        for registryName in registryNames {
            try Task.checkCancellation()
            for object in try objects.objects(bucket: registryName) where object.created < cutoff {
                guard try linkCount(registry: registryName, blob: object.digest) == 0,
                    !touches.touched(registry: registryName, digest: object.digest, since: cutoff)
                else { continue }
                do {
                    let deleted = try await locks.withLock("link:\(registryName)@\(object.digest)") { () -> Bool in
                        guard try linkCount(registry: registryName, blob: object.digest) == 0,
                            !touches.touched(registry: registryName, digest: object.digest, since: cutoff)
                        else { return false }
                        return try await objects.delete(bucket: registryName, digest: object.digest)
                    }
                    guard deleted else { continue }
                    outcome.blobsDeleted += 1
                    outcome.bytesDeleted += object.size
                    outcome.details.append(
                        JobDetail(
                            image: nil, digest: object.digest, tags: [], action: .deleted, policy: nil,
                            reason: "\(registryName): \(object.size) bytes, referenced by no manifest"))
                } catch {
                    outcome.errors += 1
                    outcome.details.append(
                        JobDetail(
                            image: nil, digest: object.digest, tags: [], action: .failed, policy: nil,
                            reason: "\(registryName): \(error)"))
                }
            }
        }
        // Objects are gone; their extents have no holder any more and nothing can revive
        // them but an upload of the same content, which takes the same digest lock.
        let swept = try await objects.sweepExtents(grace: 0)
        outcome.extentsFreed = Int64(swept.extents)
        outcome.physicalBytesFreed = swept.bytes
        return outcome
    }
}
