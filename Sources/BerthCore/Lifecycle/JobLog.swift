import BerthStorage
import Foundation
import NIOConcurrencyHelpers

public enum JobKind: String, Codable, Sendable {
    case gc, cleanup
}

public enum JobTrigger: String, Codable, Sendable {
    case api, schedule
    /// Garbage collection following deletes.
    case delete
}

public enum JobStatus: String, Codable, Sendable {
    case running, succeeded, failed
    /// The server stopped or died before the run finished.
    case interrupted
}

/// One run of a background job, as its history shows it.
public struct JobRun: Codable, Sendable, Equatable {
    public var id: Int64
    public var kind: JobKind
    public var registry: String?
    public var trigger: JobTrigger
    public var dryRun: Bool
    public var status: JobStatus
    public var started: Date
    public var finished: Date?
    public var error: String?
    public var summary: [String: Int64]
    public var details: Int = 0
    /// The user who started the run; nil for a run the server started.
    public var actor: String? = nil
    /// When the run's registry was created: a run belongs to that registry,
    /// not to one created again under its name. Nil for GC, and for runs
    /// recorded before it was kept (their start time is compared instead).
    public var registryCreated: Date? = nil

    /// Whether the run belongs to the registry created at `created`
    /// (`distantPast` for GC's runs, which belong to no registry).
    public func belongs(toRegistryCreated created: Date) -> Bool {
        registryCreated.map { $0 == created } ?? (started >= created)
    }
}

extension JobRun {
    /// The event that records how the run ended (`gc.run`, `cleanup.run`).
    var event: EventRecord {
        var detail: [String: Any] = [
            "run": String(id), "status": status.rawValue, "summary": summary, "trigger": trigger.rawValue,
        ]
        if dryRun { detail["dry_run"] = true }
        return EventRecord(
            type: kind == .gc ? "gc.run" : "cleanup.run", registry: registry, actor: actor, detail: Registry.jsonText(detail))
    }
}

/// What a run did to one artifact or blob.
public struct JobDetail: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        case deleted, protected, failed, kept
        case wouldDelete = "would_delete"
    }
    public var image: String?
    public var digest: String
    public var tags: [String]
    public var action: Action
    public var policy: String?
    public var reason: String?
}

/// The persistent history of job runs (column family `jobs`).
///
/// Keys: `r<run id u64 BE>` → ``JobRun``; `d<run id u64 BE><u32 BE>` → ``JobDetail``;
/// `j<kind>\0<registry>\0<run id u64 BE>` → empty, a job's runs in order (GC's
/// registry is empty); `n` → the last run id given out; `m` → set once every
/// run is in the `j` index. Run records are synced when a run starts and ends;
/// details are written before the run is marked finished.
///
/// Each job keeps its newest ``retainedRuns`` runs: a registry's cleanup runs
/// every minute pushes out its own history, not GC's or another registry's.
/// A registry's history goes with the registry (``dropHistory(registry:)``).
public final class JobLog: Sendable {
    let db: RocksDB
    let pool: BlockingPool
    private let nextID: NIOLockedValueBox<Int64>
    /// Held (on the pool) while a run is finished or a registry's history
    /// dropped, so a run cannot be written back after its history went.
    private let historyLock = NIOLock()
    /// Runs of one job older than its newest this many are dropped with their details.
    static let retainedRuns = 200
    private static let lastIDKey = Array("n".utf8)
    private static let indexedKey = Array("m".utf8)

    public init(store: Store) throws {
        db = store.db
        pool = store.pool
        var last: Int64 = 0
        try db.scanReverse(.jobs, before: Array("s".utf8)) { key, _ in
            if key.first == UInt8(ascii: "r") { last = Int64(UInt64(bigEndianBytes: key.dropFirst())) }
            return false
        }
        if let stored = try db.get(.jobs, Self.lastIDKey) { last = max(last, Int64(UInt64(bigEndianBytes: stored))) }
        nextID = NIOLockedValueBox(last + 1)
        try indexRunsOfEarlierVersions()
    }

    /// Adds the runs a version before the `j` index wrote to it (once).
    private func indexRunsOfEarlierVersions() throws {
        guard try db.get(.jobs, Self.indexedKey) == nil else { return }
        var batch = WriteBatch()
        try db.scan(.jobs, prefix: Array("r".utf8)) { key, value in
            let run = try RecordCodec.decode(JobRun.self, value)
            batch.put(.jobs, Self.indexKey(run.kind, run.registry, run.id), [])
            return true
        }
        batch.put(.jobs, Self.indexedKey, [])
        try db.write(batch, .synced)
    }

    // Clamped: an out-of-range id or index from a request names no record
    // (and must not trap).
    static func runKey(_ id: Int64) -> [UInt8] { Array("r".utf8) + UInt64(clamping: id).bigEndianBytes }
    static func detailKey(_ id: Int64, _ index: Int) -> [UInt8] {
        Array("d".utf8) + UInt64(clamping: id).bigEndianBytes + UInt32(clamping: index).bigEndianBytes
    }
    /// The prefix of one job's entries in the `j` index.
    static func jobPrefix(_ kind: JobKind, _ registry: String?) -> [UInt8] {
        Array("j".utf8) + Array(kind.rawValue.utf8) + [0] + Array((registry ?? "").utf8) + [0]
    }
    static func indexKey(_ kind: JobKind, _ registry: String?, _ id: Int64) -> [UInt8] {
        jobPrefix(kind, registry) + UInt64(clamping: id).bigEndianBytes
    }

    private func write(_ batch: WriteBatch) async throws {
        try await pool.run { [db] in try db.write(batch, .synced) }
    }

    /// Records a new run as running.
    func begin(
        kind: JobKind, registry: String?, registryCreated: Date? = nil, trigger: JobTrigger, dryRun: Bool, actor: String? = nil
    ) async throws -> JobRun {
        let id = nextID.withLockedValue { id -> Int64 in
            defer { id += 1 }
            return id
        }
        let run = JobRun(
            id: id, kind: kind, registry: registry, trigger: trigger, dryRun: dryRun, status: .running, started: Date(),
            finished: nil, error: nil, summary: [:], actor: actor, registryCreated: registryCreated)
        var batch = WriteBatch()
        batch.put(.jobs, Self.runKey(id), RecordCodec.encode(run))
        batch.put(.jobs, Self.indexKey(kind, registry, id), [])
        batch.put(.jobs, Self.lastIDKey, UInt64(id).bigEndianBytes)
        try await write(batch)
        return run
    }

    /// Writes details of run `id` from index `start` on.
    func appendDetails(_ id: Int64, from start: Int, _ details: [JobDetail]) async throws {
        var batch = WriteBatch()
        for (offset, detail) in details.enumerated() {
            batch.put(.jobs, Self.detailKey(id, start + offset), RecordCodec.encode(detail))
        }
        try await pool.run { [db, batch] in try db.write(batch, .logged) }
    }

    /// Writes the finished run (its details are written) and drops its job's
    /// runs past the retention. One run of a job runs at a time, so the
    /// dropped ones have all finished. A run whose registry was deleted while
    /// it ran (its history dropped) is not written back: what it wrote goes.
    ///
    /// With `events`, the run's `gc.run` or `cleanup.run` event goes in the
    /// same batch: a crash cannot leave a finished run without its event.
    func finish(_ run: JobRun, events: EventLog? = nil) async throws {
        var staged = WriteBatch()
        let ids = events?.stage([run.event], into: &staged) ?? []
        defer { events?.settle(ids) }
        try await pool.run { [db, historyLock, staged] in
            try historyLock.withLock {
                var batch = staged
                if try db.get(.jobs, Self.indexKey(run.kind, run.registry, run.id)) == nil {
                    batch.delete(.jobs, Self.runKey(run.id))
                    batch.deleteRange(.jobs, from: Self.detailKey(run.id, 0), to: Self.detailKey(run.id + 1, 0))
                } else {
                    batch.put(.jobs, Self.runKey(run.id), RecordCodec.encode(run))
                    try Self.drop(Self.jobPrefix(run.kind, run.registry), keepingNewest: Self.retainedRuns, db: db, into: &batch)
                }
                try db.write(batch, .synced)
            }
        }
    }

    /// Drops the history of a registry being deleted: a registry created
    /// later under its name starts with none. `Registry` calls this as part
    /// of its `releaseRegistry`.
    @Sendable public func dropHistory(registry: String) async throws {
        try await pool.run { [db, historyLock] in
            try historyLock.withLock {
                var batch = WriteBatch()
                try Self.drop(Self.jobPrefix(.cleanup, registry), keepingNewest: 0, db: db, into: &batch)
                if !batch.isEmpty { try db.write(batch, .synced) }
            }
        }
    }

    /// Adds to `batch` the deletion of the runs in the `j` index under
    /// `prefix` past the newest `kept`, with their details. Blocks.
    private static func drop(_ prefix: [UInt8], keepingNewest kept: Int, db: RocksDB, into batch: inout WriteBatch) throws {
        var seen = 0
        try db.scanReverse(.jobs, before: prefix + [UInt8](repeating: 0xff, count: 9)) { key, _ in
            guard key.starts(with: prefix) else { return false }
            seen += 1
            guard seen > kept else { return true }
            let id = Int64(UInt64(bigEndianBytes: key.dropFirst(prefix.count)))
            batch.delete(.jobs, Array(key))
            batch.delete(.jobs, runKey(id))
            batch.deleteRange(.jobs, from: detailKey(id, 0), to: detailKey(id + 1, 0))
            return true
        }
    }

    /// Marks runs left running by an earlier process as interrupted.
    public func markInterrupted(events: EventLog? = nil) async throws -> Int {
        var batch = WriteBatch()
        var interrupted: [JobRun] = []
        try db.scan(.jobs, prefix: Array("r".utf8)) { key, value in
            var run = try RecordCodec.decode(JobRun.self, value)
            if run.status == .running {
                run.status = .interrupted
                run.error = "the server stopped before the run finished"
                batch.put(.jobs, Array(key), RecordCodec.encode(run))
                interrupted.append(run)
            }
            return true
        }
        guard !interrupted.isEmpty else { return 0 }
        // Their events too, in the same batch, as a finished run's.
        let ids = events?.stage(interrupted.map(\.event), into: &batch) ?? []
        defer { events?.settle(ids) }
        try await write(batch)
        return interrupted.count
    }

    public func run(_ id: Int64) throws -> JobRun? {
        try db.get(.jobs, Self.runKey(id)).map { try RecordCodec.decode(JobRun.self, $0) }
    }

    /// Runs of `kind` (of `registry`, when given) started at `since` or later,
    /// newest first, before the cursor (a run id).
    public func runs(kind: JobKind, registry: String?, since: Date = .distantPast, before cursor: Int64?, limit: Int) throws -> Page<JobRun> {
        let prefix = Self.jobPrefix(kind, registry)
        var items: [JobRun] = []
        var more = false
        try db.scanReverse(.jobs, before: cursor.map { Self.indexKey(kind, registry, $0) } ?? prefix + [UInt8](repeating: 0xff, count: 9)) {
            key, _ in
            guard key.starts(with: prefix) else { return false }
            let id = Int64(UInt64(bigEndianBytes: key.dropFirst(prefix.count)))
            guard let run = try self.run(id), run.belongs(toRegistryCreated: since) else { return true }
            if items.count == limit {
                more = true
                return false
            }
            items.append(run)
            return true
        }
        return Page(items: items, next: more ? items.last.map { String($0.id) } : nil)
    }

    /// Details of a run in order, from index `from`.
    public func details(_ id: Int64, from: Int, limit: Int) throws -> Page<JobDetail> {
        var items: [JobDetail] = []
        var more = false
        try db.scan(.jobs, prefix: Array("d".utf8) + UInt64(id).bigEndianBytes, from: Self.detailKey(id, from)) { _, value in
            if items.count == limit {
                more = true
                return false
            }
            items.append(try RecordCodec.decode(JobDetail.self, value))
            return true
        }
        return Page(items: items, next: more ? String(from + items.count) : nil)
    }
}

/// The details of a running job, written to the job log in batches as the run
/// goes: a long run keeps few in memory, and an interrupted one keeps the
/// record of what it did.
public final class JobDetails: Sendable {
    private let log: JobLog
    private let runID: Int64
    private let state = NIOLockedValueBox((written: 0, pending: [JobDetail]()))
    private let tally = NIOLockedValueBox([String: Int64]())
    static let batchSize = 500

    /// The run's summary so far, which a run that fails or is stopped ends
    /// with: what it did before, not nothing.
    var summarySoFar: [String: Int64] {
        get { tally.withLockedValue { $0 } }
        set { tally.withLockedValue { $0 = newValue } }
    }

    init(log: JobLog, runID: Int64) {
        self.log = log
        self.runID = runID
    }

    func add(_ detail: JobDetail) async throws {
        let full = state.withLockedValue { state in
            state.pending.append(detail)
            return state.pending.count >= Self.batchSize
        }
        if full { _ = try await flush() }
    }

    /// Writes what is pending; returns how many details the run has. What a
    /// write that fails held stays pending, for the next flush (a run's last
    /// one is never refused for its task's cancellation: see `JobRunner`).
    func flush() async throws -> Int {
        let (start, pending) = state.withLockedValue { ($0.written, $0.pending) }
        if !pending.isEmpty { try await log.appendDetails(runID, from: start, pending) }
        state.withLockedValue { state in
            state.written += pending.count
            state.pending.removeFirst(pending.count)
        }
        return start + pending.count
    }
}
