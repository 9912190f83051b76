import BerthStorage
import Foundation
import Logging

/// The registry domain: registries, images, artifacts, tags, referrers and
/// blobs, over the catalog column family and the object store.
///
/// Reads of small catalog records run inline (they are served from RocksDB's
/// memtables and block cache in microseconds); writes, which sync, and all
/// chunk I/O run on the store's blocking pool.
public final class Registry: Sendable {
    public let store: Store
    let db: RocksDB
    let objects: RocksObjectStore
    let locks = KeyedLocks()
    /// Per registry: shared by whatever writes into it, held alone by its deletion.
    let registryLocks = KeyedLocks()
    let logger: Logger
    let pulls = PullStatistics()
    /// When blobs were last uploaded, mounted or read, for GC's grace period.
    let touches = BlobTouches()
    /// The event log every change is appended to, in the change's own batch.
    public let events: EventLog
    /// Registry and manifest records, the ones every pull reads.
    let registryRecords = DecodedRecords<RegistryRecord>(budget: 256 << 10)
    let manifestRecords = DecodedRecords<ManifestRecord>(budget: 1 << 20)
    /// Removes what other components keep about a registry (its role bindings).
    let releaseRegistry: @Sendable (String) async throws -> Void

    /// - Parameter releaseRegistry: removes what lives outside the catalog and
    ///   belongs to a registry, such as role bindings scoped to it (see
    ///   ``release(identity:jobLog:)``). A deletion calls it after the
    ///   registry's records are gone (with a deletion mark in the same batch)
    ///   and before its bucket is emptied, and a deletion cut short (the mark
    ///   left) calls it again when it is finished, so a crash at any point
    ///   cannot leave it undone for a registry created later under the name.
    public init(
        store: Store, logger: Logger = Logger(label: "berth.registry"),
        releaseRegistry: @escaping @Sendable (String) async throws -> Void = { _ in }
    ) throws {
        self.store = store
        self.db = store.db
        self.objects = store.objects
        self.logger = logger
        self.events = try EventLog(store: store)
        self.releaseRegistry = releaseRegistry
        let built = try Self.buildReverseKeys(in: store.db) {
            logger.notice("building the catalog's reverse keys (once, after an upgrade)")
        }
        if let built, built.keys > 0 || built.unreadableRecords > 0 {
            logger.notice(
                "catalog reverse keys built",
                metadata: ["keys": "\(built.keys)", "unreadable_manifest_records": "\(built.unreadableRecords)"])
        }
    }

    /// What deleting a registry releases outside the catalog: the roles bound
    /// to it and its job history. The server and the offline commands both use it.
    public static func release(identity: Identity, jobLog: JobLog) -> @Sendable (String) async throws -> Void {
        { name in
            try await identity.releaseRegistry(name)
            try await jobLog.dropHistory(registry: name)
        }
    }

    // MARK: Records

    func read<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
        try db.get(.catalog, key.bytes).map { try RecordCodec.decode(type, $0) }
    }

    /// `read`, decoding only when the stored bytes are not the ones `records` last decoded.
    func read<T: Decodable & Sendable>(_ type: T.Type, _ key: Key, reusing records: DecodedRecords<T>) throws -> T? {
        let key = key.bytes
        return try db.get(.catalog, key).map { bytes in
            try records.record(at: key, bytes: bytes) { try RecordCodec.decode(type, $0) }
        }
    }

    func write(_ batch: WriteBatch) async throws {
        try await store.pool.run { [db] in try db.write(batch, .synced) }
    }

    /// Writes `batch` with `events` appended to the event log, in one synced write.
    func write(_ batch: WriteBatch, events records: [EventRecord]) async throws {
        var batch = batch
        let ids = events.stage(records, into: &batch)
        defer { events.settle(ids) }
        try await write(batch)
    }

    /// Writes `batch` (with `events`) into registry `registry` only while it is
    /// the one created at `created` (see `whileExists`): the registry the
    /// caller read when it began, not one deleted and created again since.
    func write(
        _ batch: WriteBatch, events records: [EventRecord] = [], into registry: String, created: Date
    ) async throws {
        try await whileExists(registry, created: created) { try await write(batch, events: records) }
    }

    /// Runs `body`, which writes into `registry`, only while the registry
    /// exists, else `NAME_UNKNOWN`. The check and `body` run under the
    /// registry's shared lock, which its deletion holds alone: nothing lands in
    /// a registry after its records are deleted, where it would be orphaned or
    /// turn up again in a registry created later with the same name.
    /// With `created`, only while it is the registry created then, not a
    /// later one of the same name.
    func whileExists<T>(_ registry: String, created: Date? = nil, _ body: () async throws -> T) async throws -> T {
        try await registryLocks.withShared(registry) {
            let record = try requireRegistry(registry)
            if let created, record.created != created {
                throw RegistryError(.nameUnknown, "registry '\(registry)' was deleted (one of that name was created since)")
            }
            return try await body()
        }
    }

    // MARK: Registries

    /// Creates a registry, with its settings in the same write (nil: the default).
    public func createRegistry(_ name: String, anonymousPull: Bool? = nil, publicURIEnabled: Bool? = nil) async throws -> RegistryRecord {
        try Names.validateNewRegistry(name)
        return try await locks.withLock("registry:" + name) {
            if try read(RegistryRecord.self, CatalogKey.registry(name)) != nil {
                throw RegistryError(.conflict, "registry '\(name)' already exists")
            }
            var record = RegistryRecord(name: name, created: Date())
            if let anonymousPull { record.anonymousPull = anonymousPull }
            if let publicURIEnabled { record.publicURIEnabled = publicURIEnabled }
            // A deletion of a registry of this name cut short may have left its bucket and
            // roles: finish it first, so none of the old registry's blobs or roles shows up
            // in the new one. (A creation cut short left only an empty bucket.)
            try await finishLeftovers(of: name)
            try await objects.createBucket(name)
            var batch = WriteBatch()
            batch.put(.catalog, CatalogKey.registry(name).bytes, RecordCodec.encode(record))
            try await write(batch)
            logger.info("registry created", metadata: ["registry": "\(name)"])
            return record
        }
    }

    public func registry(_ name: String) throws -> RegistryRecord? {
        try read(RegistryRecord.self, CatalogKey.registry(name), reusing: registryRecords)
    }

    /// The registry, or `NAME_UNKNOWN` naming it.
    public func requireRegistry(_ name: String) throws -> RegistryRecord {
        guard let record = try registry(name) else {
            throw RegistryError(.nameUnknown, "registry '\(name)' does not exist")
        }
        return record
    }

    public func registries(
        after: String? = nil, limit: Int = 100, visible: (String) -> Bool = { _ in true }
    ) throws -> Page<RegistryRecord> {
        try page(prefix: Key("R").childPrefix, after: after.map { CatalogKey.registry($0).bytes }, limit: limit) { key, value in
            let name = Key.lastComponent(key)
            guard visible(name) else { return nil }
            return (try RecordCodec.decode(RegistryRecord.self, value), name)
        }
    }

    /// The registries open to anonymous pull, whose images anyone may read.
    public func anonymousPullRegistries() throws -> [String] {
        var names: [String] = []
        try db.scan(.catalog, prefix: Key("R").childPrefix) { key, value in
            if try RecordCodec.decode(RegistryRecord.self, value).anonymousPull { names.append(Key.lastComponent(key)) }
            return true
        }
        return names
    }

    /// Changes a registry's settings; nil leaves a setting as it is.
    public func updateRegistry(_ name: String, anonymousPull: Bool?, publicURIEnabled: Bool?) async throws -> RegistryRecord {
        try await locks.withLock("registry:" + name) {
            var record = try requireRegistry(name)
            if let anonymousPull { record.anonymousPull = anonymousPull }
            if let publicURIEnabled { record.publicURIEnabled = publicURIEnabled }
            var batch = WriteBatch()
            batch.put(.catalog, CatalogKey.registry(name).bytes, RecordCodec.encode(record))
            try await write(batch)
            return record
        }
    }

    /// Deletes a registry. Refused while it has images unless `force`, which
    /// deletes every image, artifact and tag and empties the bucket (one
    /// `image.delete` event per image).
    public func deleteRegistry(_ name: String, force: Bool, actor: String? = nil) async throws {
        // Alone in the registry: writes into it wait, then find it gone.
        try await registryLocks.withLock(name) { try await deleteRegistryAlone(name, force: force, actor: actor) }
    }

    private func deleteRegistryAlone(_ name: String, force: Bool, actor: String?) async throws {
        try await locks.withLock("registry:" + name) {
            _ = try requireRegistry(name)
            let images = try repositories(registry: name, limit: 1).items
            if !images.isEmpty && !force {
                throw RegistryError(
                    .conflict, "registry '\(name)' still has images; delete them first or pass force=true")
            }
            try requireNothingProtected(registry: name)
            var batch = WriteBatch()
            for kind in CatalogKey.repositoryKinds {
                let start = Key(kind, name + "/").bytes
                batch.deleteRange(.catalog, from: start, to: Key(kind, name + "0").bytes)  // "0" sorts right after "/"
            }
            for kind in CatalogKey.registryKinds {
                batch.deleteRange(.catalog, from: Key(kind, name).childPrefix, to: Key(kind, name).bytes + [1])
            }
            batch.delete(.catalog, CatalogKey.registry(name).bytes)
            batch.put(.catalog, CatalogKey.deletion(name).bytes, [])
            var deletedImages: [EventRecord] = []
            try db.scan(.catalog, prefix: Key("I", name + "/").bytes) { key, _ in
                deletedImages.append(EventRecord("image.delete", repository: Key.lastComponent(key), actor: actor))
                return true
            }
            try await write(batch, events: deletedImages)
            pulls.forget(registry: name)  // not to be written into a registry created again under the name
            try await finishLeftovers(of: name)
            logger.info("registry deleted", metadata: ["registry": "\(name)", "force": "\(force)"])
        }
    }

    /// Finishes deletions of registries cut short (by a crash, say) after
    /// their records went: releases each one's roles and empties its bucket.
    /// Also empties the bucket a creation cut short left, releasing nothing:
    /// roles bound to a name before its registry exists stay. Returns the
    /// names of the deletions finished.
    public func finishInterruptedDeletions() async throws -> [String] {
        var names = Set(try objects.buckets())
        try db.scan(.catalog, prefix: Key("D").childPrefix) { key, _ in
            names.insert(Key.lastComponent(key))
            return true
        }
        var finished: [String] = []
        for name in names.sorted() where try registry(name) == nil {
            try await locks.withLock("registry:" + name) {
                // A registry being created makes its bucket first, under this lock.
                guard try registry(name) == nil else { return }
                if try await finishLeftovers(of: name) { finished.append(name) }
            }
        }
        return finished
    }

    /// Releases and empties what a registry named `name` that is gone left:
    /// after its deletion, its roles and bucket; after a creation cut short,
    /// the empty bucket only. Returns whether it finished a deletion.
    /// Runs under the registry's name lock.
    @discardableResult
    private func finishLeftovers(of name: String) async throws -> Bool {
        let bucket = try objects.buckets().contains(name)
        // A bucket that holds blobs is a deletion's too, mark or not (one cut short
        // by a version before the marks): a creation cut short left it empty.
        let deleted = try db.get(.catalog, CatalogKey.deletion(name).bytes) != nil
            || bucket && objects.usage(bucket: name).objects > 0
        if deleted { try await releaseRegistry(name) }
        if bucket { try await objects.deleteBucket(name) }
        guard deleted else { return false }
        var batch = WriteBatch()
        batch.delete(.catalog, CatalogKey.deletion(name).bytes)
        try await write(batch)
        return true
    }

    // MARK: Images

    /// Images in name order; `visible` hides those the caller may not see.
    public func repositories(
        registry: String? = nil, after: String? = nil, limit: Int, visible: (String) -> Bool = { _ in true }
    ) throws -> Page<RepositoryRecord> {
        let prefix = registry.map { Key("I", $0 + "/").bytes } ?? Key("I").childPrefix
        return try page(prefix: prefix, after: after.map { CatalogKey.repository($0).bytes }, limit: limit) { key, value in
            let name = Key.lastComponent(key)
            guard visible(name) else { return nil }
            return (try RecordCodec.decode(RepositoryRecord.self, value), name)
        }
    }

    /// `repositories` of the named registries only, in the order and with the
    /// cursor of the scan of all of them: what `_catalog` reads for a caller
    /// whose roles name registries, without walking every other registry's images.
    public func repositories(
        inRegistries registries: [String], after: String?, limit: Int, visible: (String) -> Bool = { _ in true }
    ) throws -> Page<RepositoryRecord> {
        // Images sort by their full name's bytes, so registries by `<name>/`.
        let prefixes = Set(registries).map { $0 + "/" }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        // One image past `limit`, read in whichever registry has it, tells that another page follows.
        var items: [RepositoryRecord] = []
        for prefix in prefixes where items.count <= limit {
            var from: String?
            if let after {
                if after.hasPrefix(prefix) {
                    from = after
                } else if !after.utf8.lexicographicallyPrecedes(prefix.utf8) {
                    continue  // the cursor is past this registry
                }
            }
            items += try repositories(registry: String(prefix.dropLast()), after: from, limit: limit + 1 - items.count, visible: visible).items
        }
        guard items.count > limit else { return Page(items: items, next: nil) }
        items.removeLast(items.count - limit)
        return Page(items: items, next: items.last?.name)
    }

    /// Reads up to `limit` records after `after`, and whether more follow.
    /// `decode` returns nil for a record to skip.
    func page<T>(
        prefix: [UInt8], after: [UInt8]?, limit: Int,
        _ decode: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> (T, String)?
    ) throws -> Page<T> {
        var items: [T] = []
        var lastKey: String?
        var more = false
        try db.scan(.catalog, prefix: prefix, after: after) { key, value in
            guard let (item, cursor) = try decode(key, value) else { return true }
            if items.count == limit {
                more = true
                return false
            }
            items.append(item)
            lastKey = cursor
            return true
        }
        return Page(items: items, next: more ? lastKey : nil)
    }
}
