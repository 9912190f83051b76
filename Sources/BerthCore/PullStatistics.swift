import BerthStorage
import Foundation
import NIOConcurrencyHelpers

/// Pull counts and last-pulled times per artifact, counted in memory on each
/// manifest GET and written in batches (``Registry/flushPulls()``), so a pull
/// costs no write. Reads add what is not stored yet to what is.
///
/// A flush moves the pending counts *in flight* and numbers itself; the records
/// it writes carry that number. A reader that finds its artifact's record
/// written by the flush in flight does not add the in-flight counts again, and
/// one that finds a record from a later flush than it saw looks again: a count
/// is never missing while its batch lands, nor counted twice once it has.
public final class PullStatistics: Sendable {
    private struct State {
        /// Counts not yet taken by a flush, by `<name>\0<digest>`.
        var pending: [String: PullRecord] = [:]
        /// Counts the latest flush took and has not finished writing.
        var inFlight: [String: PullRecord] = [:]
        /// The latest flush's number; 0 before the first.
        var generation: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())
    /// This server run's mark on the records it writes.
    private let run = UUID().uuidString

    init() {}

    static func slot(_ name: String, _ digest: String) -> String { name + "\u{0}" + digest }

    func record(name: String, digest: String, at time: Date = Date()) {
        state.withLockedValue { state in
            let slot = Self.slot(name, digest)
            var entry = state.pending[slot] ?? PullRecord(count: 0, last: nil)
            entry.count += 1
            entry.last = time
            state.pending[slot] = entry
        }
    }

    /// The artifact's statistics: what `stored` reads plus what it does not hold yet.
    func total(name: String, digest: String, stored read: () throws -> PullRecord?) rethrows -> PullRecord {
        let slot = Self.slot(name, digest)
        var attempts = 0
        while true {
            let (generation, pending, inFlight) = state.withLockedValue { ($0.generation, $0.pending[slot], $0.inFlight[slot]) }
            var stored = try read()
            let writtenBy = stored?.flush.flatMap { $0.run == run ? $0.generation : nil } ?? 0
            stored?.flush = nil
            attempts += 1
            // A flush that started after the snapshot has landed: the snapshot's
            // pending counts may be stored now. Flushes are seconds apart, so the
            // next look settles it.
            if writtenBy > generation && attempts < 8 { continue }
            let unstored = writtenBy >= generation ? pending : Self.merge(inFlight, pending)
            return Self.merge(stored, unstored)
        }
    }

    func forget(name: String, digest: String) {
        let slot = Self.slot(name, digest)
        state.withLockedValue { state in
            state.pending.removeValue(forKey: slot)
            state.inFlight.removeValue(forKey: slot)
        }
    }

    func forget(name: String) { forget(prefix: name + "\u{0}") }

    func forget(registry: String) { forget(prefix: registry + "/") }

    private func forget(prefix: String) {
        state.withLockedValue { state in
            state.pending = state.pending.filter { !$0.key.hasPrefix(prefix) }
            state.inFlight = state.inFlight.filter { !$0.key.hasPrefix(prefix) }
        }
    }

    /// The artifact's counts the flush in flight holds: none once the
    /// artifact was deleted (``forget(name:digest:)``) after the flush took them.
    func inFlight(name: String, digest: String) -> PullRecord? {
        state.withLockedValue { $0.inFlight[Self.slot(name, digest)] }
    }

    /// A flush's take: the artifacts whose in-flight counts it adds to the
    /// stored records, and the mark to write on them.
    struct Flush {
        var artifacts: [(name: String, digest: String)]
        var mark: PullFlush
    }

    /// Moves what is pending in flight under a new flush number. Flushes run one at a time.
    func beginFlush() -> Flush {
        state.withLockedValue { state in
            precondition(state.inFlight.isEmpty, "a pull flush began before the previous one ended")
            state.generation += 1
            state.inFlight = state.pending
            state.pending = [:]
            let artifacts = state.inFlight.keys.map { key in
                let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
                return (name: parts[0], digest: parts[1])
            }
            return Flush(artifacts: artifacts, mark: PullFlush(run: run, generation: state.generation))
        }
    }

    /// Ends the flush in flight: its counts are stored, or (`landed` false) pending again.
    func endFlush(landed: Bool) {
        state.withLockedValue { state in
            if !landed {
                for (slot, record) in state.inFlight { state.pending[slot] = Self.merge(state.pending[slot], record) }
            }
            state.inFlight = [:]
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
        try pulls.total(name: name, digest: digest) { try read(PullRecord.self, CatalogKey.pulls(name, digest)) }
    }

    /// Writes pending pull counts in one synced batch. Counts of artifacts
    /// deleted since they were pulled are dropped.
    public func flushPulls() async throws {
        try await locks.withLock("pulls-flush") {
            let flush = pulls.beginFlush()
            do {
                try await writePulls(flush)
                pulls.endFlush(landed: true)
            } catch {
                pulls.endFlush(landed: false)  // counted again by the next flush (at the latest, at shutdown)
                throw error
            }
        }
    }

    /// Adds a flush's counts to the stored records, marking each with the flush.
    func writePulls(_ flush: PullStatistics.Flush) async throws {
        guard !flush.artifacts.isEmpty else { return }
        // Under the repositories' locks, which deletes of manifests and images
        // hold, and the registries' shared locks: an artifact or registry
        // deleted meanwhile has no manifest record left, so its counts are
        // dropped here rather than written back as an orphan record that a
        // later push of the same digest would inherit.
        let registries = flush.artifacts.compactMap { try? Names.splitRepository($0.name).registry }
        let repositories = Set(flush.artifacts.map { "repository:\($0.name)" })
        try await locks.withLocks(Array(repositories)) {
            try await registryLocks.withShared(registries) {
                var batch = WriteBatch()
                for (name, digest) in flush.artifacts {
                    // Forgotten when the artifact was deleted since the flush took its
                    // counts (and perhaps pushed again): they must not pass to the new push.
                    guard let record = pulls.inFlight(name: name, digest: digest),
                        try manifestRecord(name: name, digest: digest) != nil
                    else { continue }
                    let stored = try read(PullRecord.self, CatalogKey.pulls(name, digest))
                    var merged = PullStatistics.merge(stored, record)
                    merged.flush = flush.mark
                    batch.put(.catalog, CatalogKey.pulls(name, digest).bytes, RecordCodec.encode(merged))
                }
                try await write(batch)
            }
        }
    }
}
