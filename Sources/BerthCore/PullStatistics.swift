import BerthStorage
import Foundation
import NIOConcurrencyHelpers

/// Pull counts and last-pulled times per artifact, counted in memory on each
/// manifest GET and written in batches (``Registry/flushPulls()``), so a pull
/// costs no write. Reads add what is pending to what is stored.
public final class PullStatistics: Sendable {
    /// Pending counts by `<name>\0<digest>`.
    private let pending = NIOLockedValueBox([String: PullRecord]())

    init() {}

    static func slot(_ name: String, _ digest: String) -> String { name + "\u{0}" + digest }

    func record(name: String, digest: String, at time: Date = Date()) {
        pending.withLockedValue { table in
            let slot = Self.slot(name, digest)
            var entry = table[slot] ?? PullRecord(count: 0, last: nil)
            entry.count += 1
            entry.last = time
            table[slot] = entry
        }
    }

    func pending(name: String, digest: String) -> PullRecord? {
        pending.withLockedValue { $0[Self.slot(name, digest)] }
    }

    func forget(name: String, digest: String) {
        pending.withLockedValue { _ = $0.removeValue(forKey: Self.slot(name, digest)) }
    }

    func forget(name: String) {
        pending.withLockedValue { table in table = table.filter { !$0.key.hasPrefix(name + "\u{0}") } }
    }

    /// Takes what is pending, leaving nothing behind.
    func drain() -> [(name: String, digest: String, record: PullRecord)] {
        pending.withLockedValue { table in
            defer { table.removeAll() }
            return table.map { key, record in
                let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
                return (parts[0], parts[1], record)
            }
        }
    }

    /// Puts back records that could not be written.
    func restore(_ records: [(name: String, digest: String, record: PullRecord)]) {
        pending.withLockedValue { table in
            for (name, digest, record) in records {
                let slot = Self.slot(name, digest)
                table[slot] = Self.merge(table[slot], record)
            }
        }
    }

    /// Merges two records of the same artifact.
    static func merge(_ a: PullRecord?, _ b: PullRecord?) -> PullRecord {
        PullRecord(
            count: (a?.count ?? 0) + (b?.count ?? 0),
            last: [a?.last, b?.last].compactMap { $0 }.max())
    }
}

extension Registry {
    /// Counts a pull of an artifact (a manifest GET) and queues its event.
    public func recordPull(name: String, digest: String, tag: String? = nil, actor: String? = nil) {
        pulls.record(name: name, digest: digest)
        events.enqueue(EventRecord("artifact.pull", repository: name, digest: digest, tag: tag, actor: actor))
    }

    /// The stored plus pending statistics of one artifact.
    public func pullRecord(name: String, digest: String) throws -> PullRecord {
        let stored = try read(PullRecord.self, CatalogKey.pulls(name, digest))
        return PullStatistics.merge(stored, pulls.pending(name: name, digest: digest))
    }

    /// Writes pending pull counts in one synced batch. Counts of artifacts
    /// deleted since they were pulled are dropped.
    public func flushPulls() async throws {
        try await locks.withLock("pulls-flush") {
            let drained = pulls.drain()
            guard !drained.isEmpty else { return }
            // Under the repositories' locks, which deletes of manifests and images
            // hold, and the registries' shared locks: an artifact or registry
            // deleted meanwhile has no manifest record left, so its counts are
            // dropped here rather than written back as an orphan record that a
            // later push of the same digest would inherit.
            let registries = drained.compactMap { try? Names.splitRepository($0.name).registry }
            let repositories = Set(drained.map { "repository:\($0.name)" })
            do {
                try await locks.withLocks(Array(repositories)) {
                    try await registryLocks.withShared(registries) {
                        var batch = WriteBatch()
                        for (name, digest, record) in drained where try manifestRecord(name: name, digest: digest) != nil {
                            let stored = try read(PullRecord.self, CatalogKey.pulls(name, digest))
                            batch.put(
                                .catalog, CatalogKey.pulls(name, digest).bytes,
                                RecordCodec.encode(PullStatistics.merge(stored, record)))
                        }
                        try await write(batch)
                    }
                }
            } catch {
                pulls.restore(drained)  // counted again by the next flush (at the latest, at shutdown)
                throw error
            }
        }
    }
}
