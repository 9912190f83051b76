import BerthStorage
import Foundation
import NIOConcurrencyHelpers

/// One entry of the event log: a push, pull, delete, or job run.
public struct EventRecord: Codable, Sendable, Equatable {
    public var id: Int64 = 0
    public var time: Date
    public var type: String
    public var registry: String?
    /// The image name inside its registry.
    public var image: String?
    public var digest: String?
    public var tag: String?
    public var actor: String?
    /// A JSON object, kept as text.
    public var detail: String?

    /// Every type the log records (the `EventType` of the API contract).
    public static let types: Set<String> = [
        "artifact.push", "artifact.pull", "artifact.delete", "tag.create", "tag.delete", "image.delete",
        "cleanup.run", "gc.run",
    ]

    public init(
        type: String, registry: String? = nil, image: String? = nil, digest: String? = nil, tag: String? = nil,
        actor: String? = nil, detail: String? = nil, time: Date = Date()
    ) {
        self.time = time
        self.type = type
        self.registry = registry
        self.image = image
        self.digest = digest
        self.tag = tag
        self.actor = actor
        self.detail = detail
    }

    /// An event about repository `name` (`<registry>/<image>`).
    public init(_ type: String, repository name: String, digest: String? = nil, tag: String? = nil, actor: String?) {
        let slash = name.firstIndex(of: "/") ?? name.endIndex
        self.init(
            type: type, registry: String(name[..<slash]),
            image: slash < name.endIndex ? String(name[name.index(after: slash)...]) : nil, digest: digest, tag: tag,
            actor: actor)
    }
}

/// The durable, ordered event log (column family `events`): the feed of
/// webhooks and replication.
///
/// Keys are the event's id as a big-endian u64. Ids are handed out before a
/// write lands, so concurrent writes may land out of order; readers only see
/// ids below the lowest one still in flight, so a consumer that remembers
/// the last id it saw never misses an event. Changes stage their events in
/// the same synced batch as the change. Pulls, which change nothing, are
/// queued and written about once a second.
public final class EventLog: Sendable {
    let db: RocksDB
    let pool: BlockingPool
    private let state: NIOLockedValueBox<State>
    /// Queued pull events beyond this are dropped, and counted: a second's
    /// worth at several times the pull rate measured on two cores, so only a
    /// flush that keeps failing (a full disk) reaches it.
    let queueLimit: Int

    struct State {
        var next: Int64
        var inFlight: Set<Int64> = []
        var queued: [EventRecord] = []
        /// Dropped since the process started, and how many of them a flush reported.
        var droppedTotal: Int = 0
        var droppedReported: Int = 0
    }

    /// Pull events dropped since the process started, a failing flush's included.
    public var droppedTotal: Int { state.withLockedValue { $0.droppedTotal } }

    public init(store: Store, queueLimit: Int = 100_000) throws {
        db = store.db
        pool = store.pool
        self.queueLimit = queueLimit
        var last: Int64 = 0
        try db.scanReverse(.events, before: nil) { key, _ in
            last = Int64(bitPattern: UInt64(bigEndianBytes: key))
            return false
        }
        state = NIOLockedValueBox(State(next: last + 1))
    }

    static func key(_ id: Int64) -> [UInt8] { UInt64(id).bigEndianBytes }

    /// Gives `events` ids and adds them to `batch`. Call ``settle(_:)`` with
    /// the ids once the batch is written or has failed.
    func stage(_ events: [EventRecord], into batch: inout WriteBatch) -> [Int64] {
        guard !events.isEmpty else { return [] }
        let first = state.withLockedValue { state -> Int64 in
            let first = state.next
            state.next += Int64(events.count)
            for id in first..<state.next { state.inFlight.insert(id) }
            return first
        }
        var ids: [Int64] = []
        for (offset, var event) in events.enumerated() {
            event.id = first + Int64(offset)
            batch.put(.events, Self.key(event.id), RecordCodec.encode(event))
            ids.append(event.id)
        }
        return ids
    }

    func settle(_ ids: [Int64]) {
        guard !ids.isEmpty else { return }
        state.withLockedValue { state in for id in ids { state.inFlight.remove(id) } }
    }

    /// Appends events on their own, synced.
    public func append(_ events: [EventRecord]) async throws {
        var batch = WriteBatch()
        let ids = stage(events, into: &batch)
        defer { settle(ids) }
        try await pool.run { [db, batch] in try db.write(batch, .synced) }
    }

    /// Queues an event to be written by the next ``flushQueued()``.
    func enqueue(_ event: EventRecord) {
        state.withLockedValue { state in
            if state.queued.count < queueLimit {
                state.queued.append(event)
            } else {
                state.droppedTotal += 1
            }
        }
    }

    /// Writes the queued events, synced; returns how many were written and
    /// dropped since the last call. Synced because ids are handed out after
    /// the newest stored one: a batch a power cut took after readers had seen
    /// its ids would have those ids given again, to events a reader paging on
    /// with `after` would never see. (One flush a second at most.) Events a
    /// write that fails held go back to the front of the queue.
    @discardableResult
    public func flushQueued() async throws -> (written: Int, dropped: Int) {
        let events = state.withLockedValue { state in
            defer { state.queued.removeAll() }
            return state.queued
        }
        if !events.isEmpty {
            var batch = WriteBatch()
            let ids = stage(events, into: &batch)
            defer { settle(ids) }
            do {
                try await pool.run { [db, batch] in try db.write(batch, .synced) }
            } catch {
                state.withLockedValue { state in
                    let room = max(0, queueLimit - state.queued.count)
                    state.queued.insert(contentsOf: events.prefix(room), at: 0)
                    state.droppedTotal += max(0, events.count - room)
                }
                throw error
            }
        }
        let dropped = state.withLockedValue { state in
            defer { state.droppedReported = state.droppedTotal }
            return state.droppedTotal - state.droppedReported
        }
        return (events.count, dropped)
    }

    /// The highest id a reader may see: every id up to it is written or lost for good.
    var visibleThrough: Int64 {
        state.withLockedValue { state in (state.inFlight.min() ?? state.next) - 1 }
    }

    /// Events after `after` that `include` accepts, in id order. One call
    /// reads at most `scanLimit` events, so a page of a narrow filter may hold
    /// fewer than `limit` (even none) with a `next` to go on from.
    public func events(
        after: Int64, limit: Int, scanLimit: Int = 10_000, include: (EventRecord) -> Bool
    ) throws -> Page<EventRecord> {
        let ceiling = visibleThrough
        var items: [EventRecord] = []
        var next: Int64?
        var scanned = 0
        guard after < ceiling else { return Page(items: [], next: nil) }
        try db.scan(.events, prefix: [], after: nil, from: Self.key(after + 1)) { key, value in
            let id = Int64(bitPattern: UInt64(bigEndianBytes: key))
            if id > ceiling { return false }
            if items.count == limit || scanned == scanLimit {
                next = id - 1  // the last one read
                return false
            }
            scanned += 1
            let event = try RecordCodec.decode(EventRecord.self, value)
            if include(event) { items.append(event) }
            return true
        }
        return Page(items: items, next: next.map(String.init))
    }

    /// Drops events older than `cutoff`, and the oldest beyond the newest
    /// `limit`; returns how many ids that covered (ids a failed write used
    /// and never stored count too).
    ///
    /// The count bound keeps the log's size in check whatever the pull rate:
    /// each manifest GET is an event, so days of retention at thousands of
    /// requests a second would otherwise fill the disk. The newest stored
    /// event stays, whatever its age or `limit`: ids continue from it after a
    /// restart instead of starting again at 1.
    public func trim(olderThan cutoff: Date, keepingAtMost limit: Int = .max) async throws -> Int {
        try await pool.run { [db] in
            var oldest: Int64?
            try db.scan(.events, prefix: [], fillingCache: false) { key, _ in
                oldest = Int64(bitPattern: UInt64(bigEndianBytes: key))
                return false
            }
            var newest: Int64 = 0
            try db.scanReverse(.events, before: nil) { key, _ in
                newest = Int64(bitPattern: UInt64(bigEndianBytes: key))
                return false
            }
            guard let oldest else { return 0 }
            // Every id up to `last` goes: those past the count bound, then
            // those after it that are older than the cutoff.
            var last = newest - Int64(max(limit, 0))
            try db.scan(.events, prefix: [], from: Self.key(max(oldest, last + 1)), fillingCache: false) { key, value in
                guard try RecordCodec.decode(EventRecord.self, value).time < cutoff else { return false }
                last = Int64(bitPattern: UInt64(bigEndianBytes: key))
                return true
            }
            last = min(last, newest - 1)
            guard last >= oldest else { return 0 }
            var batch = WriteBatch()
            batch.deleteRange(.events, from: Self.key(0), to: Self.key(last + 1))
            try db.write(batch, .logged)
            return Int(last - oldest + 1)
        }
    }
}
