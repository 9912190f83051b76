import CRocksDB
import Foundation

/// The column families Berth keeps in its one RocksDB database.
///
/// Each family is tuned for its access pattern: `chunks` holds large values in
/// BlobDB blob files, the others hold small records.
public enum ColumnFamily: Int, CaseIterable, Sendable {
    case `default`
    /// Registries, repositories, manifests, tags, referrers.
    case catalog
    /// Buckets, objects, extents and the content index.
    case objects
    /// The bytes of extents, one value per fixed-size chunk.
    case chunks
    /// Upload sessions in progress.
    case uploads
    /// Users, access keys, role bindings, the token signing key.
    case auth
    /// The audit log, in time order.
    case audit
    /// Job runs (GC, cleanup) and their details.
    case jobs
    /// The event log, in sequence order.
    case events

    public var name: String {
        switch self {
        case .default: return "default"
        case .catalog: return "catalog"
        case .objects: return "objects"
        case .chunks: return "chunks"
        case .uploads: return "uploads"
        case .auth: return "auth"
        case .audit: return "audit"
        case .jobs: return "jobs"
        case .events: return "events"
        }
    }
}

/// An error reported by RocksDB.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// How durable a write must be before it returns.
public enum Durability: Sendable {
    /// Written to the WAL and fsynced: survives power loss and `kill -9`.
    case synced
    /// Written to the WAL, not synced: survives `kill -9` of the process.
    case logged
    /// Memtable only: durable after the next flush of its column family.
    case unlogged
}

/// Tuning for the database; defaults are the measured ones in docs/performance.md.
public struct RocksDBOptions: Sendable {
    public var chunkMemtableBytes: Int = 16 << 20
    public var chunkMemtableCount: Int32 = 3
    public var metadataMemtableBytes: Int = 16 << 20
    /// The event log's memtables: one event per manifest GET fills them at
    /// request rate, and what they hold is only ever read back in pages.
    public var eventMemtableBytes: Int = 4 << 20
    public var blockCacheBytes: Int = 32 << 20
    public var blobFileBytes: UInt64 = 256 << 20
    public var minBlobBytes: UInt64 = 4096
    public init() {}
}

/// A thin, thread-safe wrapper over RocksDB's C API.
///
/// Every method blocks its calling thread. Callers on the async side run the
/// long ones (chunk I/O, synced writes, flushes) through ``BlockingPool``.
public final class RocksDB: @unchecked Sendable {
    private let db: OpaquePointer
    private let handles: [OpaquePointer]
    private let options: [OpaquePointer]
    private let syncedWrite: OpaquePointer
    private let loggedWrite: OpaquePointer
    private let unloggedWrite: OpaquePointer
    private let readOptions: OpaquePointer
    private let bulkReadOptions: OpaquePointer
    private let sweepReadOptions: OpaquePointer
    private let cache: OpaquePointer
    public let path: String

    public init(path: String, tuning: RocksDBOptions = .init()) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        cache = rocksdb_cache_create_lru(tuning.blockCacheBytes)
        let table = rocksdb_block_based_options_create()
        rocksdb_block_based_options_set_block_cache(table, cache)
        rocksdb_block_based_options_set_filter_policy(table, rocksdb_filterpolicy_create_bloom(10))

        var all: [OpaquePointer] = []
        for family in ColumnFamily.allCases {
            let o = rocksdb_options_create()!
            rocksdb_options_set_block_based_table_factory(o, table)
            rocksdb_options_set_create_if_missing(o, 1)
            rocksdb_options_set_create_missing_column_families(o, 1)
            rocksdb_options_increase_parallelism(o, 2)
            switch family {
            case .chunks:
                rocksdb_options_set_write_buffer_size(o, tuning.chunkMemtableBytes)
                rocksdb_options_set_max_write_buffer_number(o, tuning.chunkMemtableCount)
                rocksdb_options_set_compression(o, Int32(rocksdb_no_compression))
                rocksdb_options_set_enable_blob_files(o, 1)
                rocksdb_options_set_min_blob_size(o, tuning.minBlobBytes)
                rocksdb_options_set_blob_file_size(o, tuning.blobFileBytes)
                rocksdb_options_set_blob_compression_type(o, Int32(rocksdb_no_compression))
                rocksdb_options_set_enable_blob_gc(o, 1)
                rocksdb_options_set_blob_gc_age_cutoff(o, 0.25)
            case .events:
                rocksdb_options_set_write_buffer_size(o, tuning.eventMemtableBytes)
                rocksdb_options_set_max_write_buffer_number(o, 2)
                rocksdb_options_set_compression(o, Int32(rocksdb_lz4_compression))
            default:
                rocksdb_options_set_write_buffer_size(o, tuning.metadataMemtableBytes)
                rocksdb_options_set_max_write_buffer_number(o, 2)
                rocksdb_options_set_compression(o, Int32(rocksdb_lz4_compression))
            }
            all.append(o)
        }
        rocksdb_block_based_options_destroy(table)
        options = all

        var handleSlots = [OpaquePointer?](repeating: nil, count: ColumnFamily.allCases.count)
        var error: UnsafeMutablePointer<CChar>?
        let names = ColumnFamily.allCases.map { strdup($0.name) }
        defer { names.forEach { free($0) } }
        var cNames = names.map { UnsafePointer<CChar>($0) }
        var cOptions: [OpaquePointer?] = all
        let opened = cNames.withUnsafeMutableBufferPointer { namePtr in
            cOptions.withUnsafeMutableBufferPointer { optPtr in
                handleSlots.withUnsafeMutableBufferPointer { handlePtr in
                    rocksdb_open_column_families(
                        all[0], path, Int32(names.count),
                        namePtr.baseAddress, optPtr.baseAddress, handlePtr.baseAddress, &error)
                }
            }
        }
        if let error {
            let message = String(cString: error)
            rocksdb_free(error)
            all.forEach { rocksdb_options_destroy($0) }
            rocksdb_cache_destroy(cache)
            if message.contains("lock") || message.contains("LOCK") {
                throw StorageError("the data directory is in use by another Berth process (\(message))")
            }
            throw StorageError("cannot open the store at \(path): \(message)")
        }
        db = opened!
        handles = handleSlots.map { $0! }

        syncedWrite = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(syncedWrite, 1)
        loggedWrite = rocksdb_writeoptions_create()
        unloggedWrite = rocksdb_writeoptions_create()
        rocksdb_writeoptions_disable_WAL(unloggedWrite, 1)
        readOptions = rocksdb_readoptions_create()
        bulkReadOptions = rocksdb_readoptions_create()
        rocksdb_readoptions_set_fill_cache(bulkReadOptions, 0)
        // Chunk reads skip RocksDB's per-blob checksum (a quarter of a pull's
        // CPU, measured): every byte was hashed against its digest when it was
        // written, and clients verify the digest of what they pull.
        rocksdb_readoptions_set_verify_checksums(bulkReadOptions, 0)
        sweepReadOptions = rocksdb_readoptions_create()
        rocksdb_readoptions_set_fill_cache(sweepReadOptions, 0)
    }

    deinit {
        handles.forEach { rocksdb_column_family_handle_destroy($0) }
        rocksdb_close(db)
        options.forEach { rocksdb_options_destroy($0) }
        rocksdb_writeoptions_destroy(syncedWrite)
        rocksdb_writeoptions_destroy(loggedWrite)
        rocksdb_writeoptions_destroy(unloggedWrite)
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_readoptions_destroy(bulkReadOptions)
        rocksdb_readoptions_destroy(sweepReadOptions)
        rocksdb_cache_destroy(cache)
    }

    private func handle(_ family: ColumnFamily) -> OpaquePointer { handles[family.rawValue] }

    private func check(_ error: UnsafeMutablePointer<CChar>?) throws {
        if let error {
            let message = String(cString: error)
            rocksdb_free(error)
            throw StorageError(message)
        }
    }

    private func writeOptions(_ durability: Durability) -> OpaquePointer {
        switch durability {
        case .synced: return syncedWrite
        case .logged: return loggedWrite
        case .unlogged: return unloggedWrite
        }
    }

    // MARK: Point operations

    /// Reads one value; `nil` when the key is absent.
    public func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        var error: UnsafeMutablePointer<CChar>?
        let slice = key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) {
                rocksdb_get_pinned_cf(db, readOptions, handle(family), $0.baseAddress, $0.count, &error)
            }
        }
        try check(error)
        guard let slice else { return nil }
        defer { rocksdb_pinnableslice_destroy(slice) }
        var length = 0
        guard let value = rocksdb_pinnableslice_value(slice, &length) else { return [] }
        return value.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
    }

    /// Reads one large value straight into `body` without filling the block cache.
    public func withValue<R>(
        _ family: ColumnFamily, _ key: [UInt8], _ body: (UnsafeRawBufferPointer?) throws -> R
    ) throws -> R {
        var error: UnsafeMutablePointer<CChar>?
        let slice = key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) {
                rocksdb_get_pinned_cf(db, bulkReadOptions, handle(family), $0.baseAddress, $0.count, &error)
            }
        }
        try check(error)
        guard let slice else { return try body(nil) }
        defer { rocksdb_pinnableslice_destroy(slice) }
        var length = 0
        let value = rocksdb_pinnableslice_value(slice, &length)
        return try body(UnsafeRawBufferPointer(start: value, count: length))
    }

    /// Applies a batch atomically.
    public func write(_ batch: WriteBatch, _ durability: Durability) throws {
        let raw = rocksdb_writebatch_create()!
        defer { rocksdb_writebatch_destroy(raw) }
        for op in batch.operations {
            switch op {
            case .put(let family, let key, let value):
                key.withUnsafeBufferPointer { k in
                    value.withUnsafeBytes { v in
                        k.withMemoryRebound(to: CChar.self) { kc in
                            rocksdb_writebatch_put_cf(
                                raw, handle(family), kc.baseAddress, kc.count,
                                v.baseAddress?.assumingMemoryBound(to: CChar.self), v.count)
                        }
                    }
                }
            case .delete(let family, let key):
                key.withUnsafeBufferPointer { k in
                    k.withMemoryRebound(to: CChar.self) {
                        rocksdb_writebatch_delete_cf(raw, handle(family), $0.baseAddress, $0.count)
                    }
                }
            case .deleteRange(let family, let start, let end):
                start.withUnsafeBufferPointer { s in
                    end.withUnsafeBufferPointer { e in
                        s.withMemoryRebound(to: CChar.self) { sc in
                            e.withMemoryRebound(to: CChar.self) { ec in
                                rocksdb_writebatch_delete_range_cf(
                                    raw, handle(family), sc.baseAddress, sc.count, ec.baseAddress, ec.count)
                            }
                        }
                    }
                }
            }
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_write(db, writeOptions(durability), raw, &error)
        try check(error)
    }

    /// Writes one value from raw memory (the chunk hot path: no intermediate array).
    public func put(_ family: ColumnFamily, _ key: [UInt8], _ value: UnsafeRawBufferPointer, _ durability: Durability) throws {
        var error: UnsafeMutablePointer<CChar>?
        key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) { kc in
                rocksdb_put_cf(
                    db, writeOptions(durability), handle(family), kc.baseAddress, kc.count,
                    value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count, &error)
            }
        }
        try check(error)
    }

    /// Flushes a column family's memtables to disk and waits: everything
    /// written to it before, logged or not, is durable afterwards.
    public func flush(_ family: ColumnFamily) throws {
        let options = rocksdb_flushoptions_create()
        defer { rocksdb_flushoptions_destroy(options) }
        rocksdb_flushoptions_set_wait(options, 1)
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush_cf(db, options, handle(family), &error)
        try check(error)
    }

    /// Syncs the write-ahead log: every write before this call, `.logged` ones
    /// included, is then durable, as if each had been `.synced`.
    public func syncLog() throws {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush_wal(db, 1, &error)
        try check(error)
    }

    /// The bytes the block cache holds now.
    public var blockCacheBytesInUse: Int { rocksdb_cache_get_usage(cache) }

    /// Calls `body` for each entry whose key starts with `prefix`, beginning
    /// strictly after `after` or at `from` when given, until `body` returns false.
    ///
    /// `fillingCache: false` suits a sweep over a whole family (a count at
    /// start, a garbage collection): its blocks are read once and would push
    /// out of the block cache the ones requests use.
    public func scan(
        _ family: ColumnFamily, prefix: [UInt8], after: [UInt8]? = nil, from: [UInt8]? = nil, fillingCache: Bool = true,
        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        let iterator = rocksdb_create_iterator_cf(db, fillingCache ? readOptions : sweepReadOptions, handle(family))!
        defer { rocksdb_iter_destroy(iterator) }
        let start = after ?? from ?? prefix
        start.withUnsafeBufferPointer { s in
            s.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek(iterator, $0.baseAddress, $0.count) }
        }
        while rocksdb_iter_valid(iterator) != 0 {
            var keyLength = 0
            var valueLength = 0
            let keyPointer = rocksdb_iter_key(iterator, &keyLength)
            let key = UnsafeRawBufferPointer(start: keyPointer, count: keyLength)
            guard key.starts(with: prefix) else { break }
            if let after, key.elementsEqual(after) {
                rocksdb_iter_next(iterator)
                continue
            }
            let valuePointer = rocksdb_iter_value(iterator, &valueLength)
            if try !body(key, UnsafeRawBufferPointer(start: valuePointer, count: valueLength)) { break }
            rocksdb_iter_next(iterator)
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &error)
        try check(error)
    }

    /// Calls `body` for entries in descending key order, starting strictly
    /// before `before` (or at the last key), until `body` returns false.
    public func scanReverse(
        _ family: ColumnFamily, before: [UInt8]?,
        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        let iterator = rocksdb_create_iterator_cf(db, readOptions, handle(family))!
        defer { rocksdb_iter_destroy(iterator) }
        if let before {
            before.withUnsafeBufferPointer { s in
                s.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek_for_prev(iterator, $0.baseAddress, $0.count) }
            }
            if rocksdb_iter_valid(iterator) != 0 {
                var length = 0
                let key = UnsafeRawBufferPointer(start: rocksdb_iter_key(iterator, &length), count: length)
                if key.elementsEqual(before) { rocksdb_iter_prev(iterator) }
            }
        } else {
            rocksdb_iter_seek_to_last(iterator)
        }
        while rocksdb_iter_valid(iterator) != 0 {
            var keyLength = 0
            var valueLength = 0
            let key = UnsafeRawBufferPointer(start: rocksdb_iter_key(iterator, &keyLength), count: keyLength)
            let value = UnsafeRawBufferPointer(start: rocksdb_iter_value(iterator, &valueLength), count: valueLength)
            if try !body(key, value) { break }
            rocksdb_iter_prev(iterator)
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &error)
        try check(error)
    }

    /// Writes a consistent online copy of the database to `directory`, which must not exist.
    public func checkpoint(to directory: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        let checkpoint = rocksdb_checkpoint_object_create(db, &error)
        try check(error)
        defer { rocksdb_checkpoint_object_destroy(checkpoint) }
        rocksdb_checkpoint_create(checkpoint, directory, 0, &error)
        try check(error)
    }

    /// A RocksDB integer property of a column family, such as
    /// `rocksdb.estimate-pending-compaction-bytes`.
    public func property(_ name: String, _ family: ColumnFamily) -> UInt64? {
        var value: UInt64 = 0
        let ok = rocksdb_property_int_cf(db, handle(family), name, &value)
        return ok == 0 ? value : nil
    }
}
