import BerthStorage
import Foundation
import Logging
import NIOConcurrencyHelpers

/// One audit entry.
public struct AuditEntry: Codable, Sendable {
    public var id: String
    public var time: Date
    public var actor: String
    public var source: String
    public var action: String
    public var target: String
    public var registry: String?
    public var outcome: String
    public var detail: String?
}

/// The durable, ordered audit log (column family `audit`).
///
/// Keys are `<time ms u64 BE><sequence u32 BE>`, so the log is in time order
/// and a reverse page is one scan. An entry for a change (the admin API's,
/// a delete through `/v2`) is synced before the change's answer; the rest
/// (logins, tokens, refusals: the frequent ones) go through the WAL unsynced,
/// so a process crash keeps them and a power loss may drop the last few
/// milliseconds. An entry is written even when its request is cancelled once
/// the change is made: a client that leaves at that instant must not take the
/// entry with it.
public final class AuditLog: Sendable {
    let store: Store
    let logger: Logger
    private let sequence = NIOLockedValueBox<UInt32>(0)

    public init(store: Store, logger: Logger = Logger(label: "berth", factory: { _ in SwiftLogNoOpLogHandler() })) {
        self.store = store
        self.logger = logger
    }

    /// Characters of `target` and `detail` an entry keeps; longer ones end in "…".
    static let maxTarget = 512
    static let maxDetail = 2048

    static func clipped(_ text: String, to limit: Int) -> String {
        text.count <= limit ? text : String(text.prefix(limit - 1)) + "…"
    }

    /// Writes an entry; `durability` is `.synced` for changes (the admin
    /// API's, deletes through `/v2`). A failed write is logged, not thrown:
    /// the change it records is made.
    public func record(
        actor: String, source: String, action: String, target: String, registry: String? = nil,
        outcome: String = "success", detail: String? = nil, durability: Durability = .logged, now: Date = Date()
    ) async {
        let seq = sequence.withLockedValue { value -> UInt32 in
            value &+= 1
            return value
        }
        let key = Self.timeKey(now) + seq.bigEndianBytes
        // Targets and details can carry a client's text (a claimed key id, requested scopes): bounded.
        let entry = AuditEntry(
            id: key.hexString, time: now, actor: actor, source: source, action: action,
            target: Self.clipped(target, to: Self.maxTarget), registry: registry, outcome: outcome,
            detail: detail.map { Self.clipped($0, to: Self.maxDetail) })
        var batch = WriteBatch()
        batch.put(.audit, key, RecordCodec.encode(entry))
        // An unstructured task: the blocking pool refuses work from a cancelled
        // task, and the request's cancellation must not reach this write.
        let written = await Task { [pool = store.pool, db = store.db, batch] in
            try await pool.run { try db.write(batch, durability) }
        }.result
        if case .failure(let failure) = written {
            logger.error(
                "audit entry not written",
                metadata: ["action": "\(action)", "actor": "\(actor)", "target": "\(entry.target)", "error": "\(failure)"])
        }
    }

    /// Deletes the entries older than `cutoff` (one range delete: keys are in
    /// time order); returns whether there were any.
    @discardableResult
    public func trim(olderThan cutoff: Date) async throws -> Bool {
        var oldest: [UInt8]?
        try store.db.scan(.audit, prefix: [], fillingCache: false) { key, _ in
            oldest = Array(key)
            return false
        }
        let end = Self.timeKey(cutoff) + UInt32(0).bigEndianBytes
        guard let oldest, oldest.lexicographicallyPrecedes(end) else { return false }
        var batch = WriteBatch()
        batch.deleteRange(.audit, from: [UInt8](repeating: 0, count: end.count), to: end)
        try await store.pool.run { [db = store.db, batch] in try db.write(batch, .logged) }
        return true
    }

    private static func timeKey(_ time: Date) -> [UInt8] {
        UInt64(max(0, time.timeIntervalSince1970 * 1000)).bigEndianBytes
    }

    public struct Filter: Sendable {
        public var actor: String?
        public var action: String?
        public var registry: String?
        public var since: Date?
        public var until: Date?
        public init(actor: String? = nil, action: String? = nil, registry: String? = nil, since: Date? = nil, until: Date? = nil) {
            self.actor = actor
            self.action = action
            self.registry = registry
            self.since = since
            self.until = until
        }
    }

    /// Entries matching `filter`, newest first, starting before the cursor (an
    /// entry id). One call reads at most `scanLimit` entries, so a page of a
    /// narrow filter may hold fewer than `limit` (even none) with a `next` to
    /// go on from; `until` is a seek, not a scan. Runs on the blocking pool.
    public func entries(
        _ filter: Filter, before cursor: String?, limit: Int, scanLimit: Int = 10_000
    ) async throws -> Page<AuditEntry> {
        try await store.pool.run { try self.scan(filter, before: cursor, limit: limit, scanLimit: scanLimit) }
    }

    private func scan(_ filter: Filter, before cursor: String?, limit: Int, scanLimit: Int) throws -> Page<AuditEntry> {
        var start: [UInt8]?
        if let cursor {
            // Not silently the newest page: a client paging on would see entries again.
            guard let bytes = Self.bytes(hex: cursor) else {
                throw IdentityError.invalid("'cursor' must be an audit entry id (24 hex digits), got '\(cursor)'")
            }
            start = bytes
        }
        if let until = filter.until {
            // Keys hold whole milliseconds: every entry at or before `until` is before the next one's first key.
            let milliseconds = min(max(0, (until.timeIntervalSince1970 * 1000).rounded(.down)), 1e15)
            let end = (UInt64(milliseconds) + 1).bigEndianBytes + UInt32(0).bigEndianBytes
            if start.map({ end.lexicographicallyPrecedes($0) }) ?? true { start = end }
        }
        var items: [AuditEntry] = []
        var next: String?
        var scanned = 0
        try store.db.scanReverse(.audit, before: start) { key, value in
            scanned += 1
            let entry = try RecordCodec.decode(AuditEntry.self, value)
            if let since = filter.since, entry.time < since { return false }
            let matches =
                filter.until.map { entry.time <= $0 } ?? true
                && filter.actor.map { $0 == entry.actor } ?? true
                && filter.action.map { $0 == entry.action } ?? true
                && filter.registry.map { $0 == entry.registry } ?? true
            if matches {
                if items.count == limit {
                    next = items.last?.id
                    return false
                }
                items.append(entry)
            }
            if scanned == scanLimit {
                next = key.hexString  // the last entry read
                return false
            }
            return true
        }
        return Page(items: items, next: next)
    }

    static func bytes(hex: String) -> [UInt8]? {
        guard hex.count == 24 else { return nil }
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            out.append(byte)
            index = next
        }
        return out
    }
}
