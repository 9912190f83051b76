import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// ``ObjectStore`` over RocksDB.
///
/// Key schema (column family `objects` unless said otherwise):
/// - `b\0<bucket>` → ``BucketRecord``
/// - `o\0<bucket>\0<digest>` → ``ObjectRecord``
/// - `e<extent u64 BE>` → ``ExtentRecord``
/// - `x\0<digest>` → extent id: the content index that stores a blob once
/// - `z<extent u64 BE>` → empty: the extents with no references, for the sweeper
/// - `uploads`: `u\0<id>` → ``UploadRecord``
/// - `chunks`: `<extent u64 BE><chunk u32 BE>` → the last, partial chunk of
///   an extent (and every chunk of extents written before extent files)
///
/// An extent's full chunks live in its file (``ExtentFiles``): chunk `i` of an
/// object of `size` bytes is in the file when `(i + 1) * chunkSize <= size`,
/// otherwise in `chunks`. Small blobs never get a file.
///
/// Durability: an append writes full chunks to the extent file and syncs it,
/// then records the upload's new size together with its partial tail chunk in
/// one synced batch, so every byte of a large blob reaches the disk once.
/// Object, extent and upload records change together in one synced batch;
/// files of dropped extents are removed after the batch that drops them, and
/// files no record points at (after a crash between the two) at start.
public final class RocksObjectStore: ObjectStore {
    let db: RocksDB
    let pool: BlockingPool
    let files: ExtentFiles
    /// The size of a blob's chunks; an upload's partial last chunk is rewritten on each append.
    public let chunkSize: Int
    /// Chunk buffers that pushes and pulls reuse; `release()` them once transfers are over.
    public let buffers: ChunkBuffers
    let maxObjectSize: Int64
    let space: SpaceReserve
    /// Bytes uploads leave available on the store's file system (`min_free_space`).
    public var reservedSpace: Int64 { space.bytes }
    private let locks = KeyedLocks()
    private let live = NIOLockedValueBox([String: LiveUpload]())
    /// Sessions rebuilt by re-hashing their stored bytes (for tests: a client's aborted request must not cause one).
    let sessionRebuilds = NIOLockedValueBox(0)
    private let counters: NIOLockedValueBox<Counters>
    /// When extents let go in this process became unreferenced, on the
    /// monotonic clock. `unreferencedSince` is on the wall clock, which can
    /// jump forward; the sweep also waits out the grace on this one, so a pull
    /// that began before a delete keeps its chunks whatever the wall clock does.
    private let released = NIOLockedValueBox([UInt64: ContinuousClock.Instant]())
    /// Extents being read, with how many readers: the sweep leaves them alone
    /// however long ago they were let go (a pull longer than the grace, or a
    /// grace of 0).
    private let reading = NIOLockedValueBox([UInt64: Int]())

    struct Counters {
        var buckets: [String: BucketUsage] = [:]
        var physicalBytes: Int64 = 0
        /// Open uploads: their bucket and size.
        var uploads: [String: (bucket: String, size: Int64)] = [:]
        var openUploads: [String: Int] = [:]

        mutating func opened(_ id: String, bucket: String, size: Int64) {
            uploads[id] = (bucket, size)
            openUploads[bucket, default: 0] += 1
        }

        mutating func closed(_ id: String) {
            guard let bucket = uploads.removeValue(forKey: id)?.bucket else { return }
            openUploads[bucket, default: 1] -= 1
            if openUploads[bucket] == 0 { openUploads[bucket] = nil }
        }
    }

    /// Uploads a bucket may have open at once (each holds a record, a session
    /// and, once written to, an extent until it completes or expires).
    public let maxOpenUploads: Int

    /// An upload in progress: its record and the hash of its bytes so far.
    /// Appends and completion change it under the upload's lock; `record` is
    /// also read without that lock (an upload's status), so it has its own.
    final class LiveUpload: @unchecked Sendable {
        private let recordBox: NIOLockedValueBox<(record: UploadRecord, touched: ContinuousClock.Instant)>
        /// The upload as stored; setting it (an append made durable) touches it.
        var record: UploadRecord {
            get { recordBox.withLockedValue { $0.record } }
            set { recordBox.withLockedValue { $0 = (newValue, .now) } }
        }
        /// When the session began, was rebuilt or took bytes, on the monotonic
        /// clock: the record's `updated` is on the wall clock, which can jump
        /// forward, and expiry waits out the idle time on both.
        var touched: ContinuousClock.Instant { recordBox.withLockedValue { $0.touched } }
        /// Read and changed only under the upload's lock.
        var hasher: SHA256
        init(record: UploadRecord, hasher: SHA256) {
            self.recordBox = NIOLockedValueBox((record, .now))
            self.hasher = hasher
        }
    }

    /// - Parameter space: the reserve uploads leave free.
    public init(
        db: RocksDB, pool: BlockingPool, files: ExtentFiles, chunkSize: Int = 1 << 20, maxObjectSize: Int64 = 64 << 30,
        maxOpenUploads: Int = 10_000, space: SpaceReserve
    ) throws {
        self.db = db
        self.space = space
        self.maxOpenUploads = maxOpenUploads
        self.pool = pool
        self.files = files
        self.chunkSize = chunkSize
        self.buffers = ChunkBuffers(chunkSize: chunkSize)
        self.maxObjectSize = maxObjectSize
        var counters = Counters()
        var known = Set<UInt64>()
        try db.scan(.objects, prefix: Array("o".utf8), fillingCache: false) { key, value in
            let record = try RecordCodec.decode(ObjectRecord.self, value)
            let bucket = Key.components(key)[0]
            counters.buckets[bucket, default: .init()].objects += 1
            counters.buckets[bucket, default: .init()].bytes += record.size
            return true
        }
        try db.scan(.objects, prefix: Array("e".utf8), fillingCache: false) { key, value in
            counters.physicalBytes += try RecordCodec.decode(ExtentRecord.self, value).size
            known.insert(UInt64(bigEndianBytes: key.dropFirst()))
            return true
        }
        var uploads: [UploadRecord] = []
        try db.scan(.uploads, prefix: Array("u".utf8), fillingCache: false) { _, value in
            let record = try RecordCodec.decode(UploadRecord.self, value)
            counters.opened(record.id, bucket: record.bucket, size: record.size)
            known.insert(record.extent)
            uploads.append(record)
            return true
        }
        self.counters = NIOLockedValueBox(counters)
        for upload in uploads {
            do {
                try moveChunksToFile(upload)
            } catch is MissingChunk {
                // One unreadable upload must not keep the store from opening: drop it (its
                // client gets BLOB_UPLOAD_UNKNOWN and starts over). Any other error (a full
                // disk) fails the open instead: the chunks are still there to move next time.
                var batch = WriteBatch()
                Self.dropUpload(upload, in: &batch)
                try db.write(batch, .synced)
                files.remove(upload.extent)
                self.counters.withLockedValue { $0.closed(upload.id) }
            }
        }
        for extent in try files.list() where !known.contains(extent) { files.remove(extent) }
    }

    /// Moves the full chunks of an upload begun before extent files from
    /// `chunks` into its file, so appends can go on with the current layout.
    private func moveChunksToFile(_ upload: UploadRecord) throws {
        let full = upload.size / Int64(upload.chunkSize)
        guard full > 0, try db.get(.chunks, Self.chunkKey(upload.extent, 0)) != nil else { return }
        // The entry is synced even if an earlier, interrupted move created the file.
        let file = try files.openForAppend(upload.extent, syncingEntry: true)
        defer { file.close() }
        for index in 0..<full {
            try db.withValue(.chunks, Self.chunkKey(upload.extent, index)) { bytes in
                guard let bytes, bytes.count == upload.chunkSize else {
                    throw MissingChunk(message: "upload \(upload.id): chunk \(index) is missing")
                }
                try file.write(bytes, at: index * Int64(upload.chunkSize))
            }
        }
        try file.sync()
        var batch = WriteBatch()
        batch.deleteRange(.chunks, from: Self.chunkKey(upload.extent, 0), to: Self.chunkKey(upload.extent, full))
        try db.write(batch, .synced)
    }

    /// One reader of an extent, counted in `reading` from its creation until
    /// the last copy of the reader (and its iterators) is gone.
    private final class ReadLease: Sendable {
        let extent: UInt64
        let reading: NIOLockedValueBox<[UInt64: Int]>

        init(extent: UInt64, reading: NIOLockedValueBox<[UInt64: Int]>) {
            self.extent = extent
            self.reading = reading
            reading.withLockedValue { $0[extent, default: 0] += 1 }
        }

        deinit {
            reading.withLockedValue { readers in
                let left = (readers[extent] ?? 1) - 1
                readers[extent] = left > 0 ? left : nil
            }
        }
    }

    /// An upload of the layout before extent files whose chunks cannot be moved.
    private struct MissingChunk: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    // MARK: Keys

    static func bucketKey(_ bucket: String) -> [UInt8] { Key("b", bucket).bytes }
    static func objectKey(_ bucket: String, _ digest: String) -> [UInt8] { Key("o", bucket, digest).bytes }
    static func contentKey(_ digest: String) -> [UInt8] { Key("x", digest).bytes }
    static func extentKey(_ extent: UInt64) -> [UInt8] { Array("e".utf8) + extent.bigEndianBytes }
    static func unreferencedKey(_ extent: UInt64) -> [UInt8] { Array("z".utf8) + extent.bigEndianBytes }
    static func uploadKey(_ id: String) -> [UInt8] { Key("u", id).bytes }
    static func chunkKey(_ extent: UInt64, _ index: Int64) -> [UInt8] {
        extent.bigEndianBytes + UInt32(index).bigEndianBytes
    }

    /// How many bytes of an upload's file are written before their writeback is
    /// started. 2 MiB rather than 8: an 8 MiB PATCH then finds most of its bytes
    /// on the disk when it syncs (chunked push 302–361 → 397–476 MB/s, measured).
    static let writebackWindow = 2 << 20

    private static func dropExtent(_ extent: UInt64, in batch: inout WriteBatch) {
        batch.deleteRange(.chunks, from: extent.bigEndianBytes, to: (extent &+ 1).bigEndianBytes)
    }

    /// An upload's record and its chunks (its file goes after the batch).
    static func dropUpload(_ upload: UploadRecord, in batch: inout WriteBatch) {
        batch.delete(.uploads, uploadKey(upload.id))
        dropExtent(upload.extent, in: &batch)
    }

    /// An unreferenced extent: its record, its place among the unreferenced,
    /// its digest's content-index entry if that names it, and its chunks (its
    /// file goes after the batch).
    static func dropUnreferencedExtent(_ id: UInt64, digest: String, db: RocksDB, in batch: inout WriteBatch) throws {
        batch.delete(.objects, extentKey(id))
        batch.delete(.objects, unreferencedKey(id))
        if let indexed = try db.get(.objects, contentKey(digest)), UInt64(bigEndianBytes: indexed) == id {
            batch.delete(.objects, contentKey(digest))
        }
        dropExtent(id, in: &batch)
    }

    /// Applies a batch, synced, on the blocking pool, then removes the files
    /// of the extents it dropped.
    private func write(_ batch: WriteBatch, removingFilesOf dropped: [UInt64] = []) async throws {
        try await pool.run { [db, files] in
            try db.write(batch, .synced)
            for extent in dropped { files.remove(extent) }
        }
    }

    /// Reads chunk `index` of an extent holding `size` bytes: from its file
    /// when the chunk is full (and the extent has a file), else from `chunks`.
    /// Blocks: call on the pool.
    private static func readChunk(
        _ index: Int64, extent: UInt64, size: Int64, chunkSize: Int, db: RocksDB, files: ExtentFiles,
        buffers: ChunkBuffers
    ) throws -> ByteBuffer {
        let start = index * Int64(chunkSize)
        if start + Int64(chunkSize) <= size {
            var buffer = buffers.take(aligned: false)
            if try files.read(extent, offset: start, count: chunkSize, appendingTo: &buffer) { return buffer }
            buffers.recycle(buffer)  // no file: the chunk is in RocksDB
        }
        return try db.withValue(.chunks, chunkKey(extent, index)) { bytes in
            guard let bytes else { throw StorageError("extent \(extent) is missing chunk \(index)") }
            return ByteBuffer(bytes: bytes)
        }
    }

    // MARK: Buckets and objects

    public func createBucket(_ bucket: String) async throws {
        var batch = WriteBatch()
        batch.put(.objects, Self.bucketKey(bucket), RecordCodec.encode(BucketRecord(name: bucket, created: Date())))
        try await write(batch)
        counters.withLockedValue { $0.buckets[bucket] = $0.buckets[bucket] ?? .init() }
    }

    /// Deletes the bucket and every object in it, a page of objects at a time.
    /// Each object's delete goes to the log unsynced; the bucket's own delete,
    /// synced, makes them all durable at once (one device flush, not one per
    /// object: a bucket of a million blobs took a million). A crash before it
    /// leaves the caller's deletion mark, whose replay deletes the rest.
    public func deleteBucket(_ bucket: String) async throws {
        var after: String?
        while true {
            let page = try await pool.run { [self, after] in try objects(bucket: bucket, after: after, limit: 1000) }
            guard let last = page.last else { break }
            after = last.digest
            for object in page { _ = try await delete(bucket: bucket, digest: object.digest, durability: .logged) }
        }
        _ = try await discardUploads { $0.bucket == bucket }
        var batch = WriteBatch()
        batch.delete(.objects, Self.bucketKey(bucket))
        try await write(batch)
        counters.withLockedValue { _ = $0.buckets.removeValue(forKey: bucket) }
    }

    public func buckets() throws -> [String] {
        var names: [String] = []
        try db.scan(.objects, prefix: Key("b").childPrefix) { key, _ in
            names.append(Key.lastComponent(key))
            return true
        }
        return names
    }

    public func objects(bucket: String, after: String?, limit: Int) throws -> [ObjectRecord] {
        var records: [ObjectRecord] = []
        try db.scan(
            .objects, prefix: Key("o", bucket).childPrefix, after: after.map { Self.objectKey(bucket, $0) }, fillingCache: false
        ) { _, value in
            records.append(try RecordCodec.decode(ObjectRecord.self, value))
            return records.count < limit
        }
        return records
    }

    public func object(bucket: String, digest: String) throws -> ObjectRecord? {
        try db.get(.objects, Self.objectKey(bucket, digest)).map { try RecordCodec.decode(ObjectRecord.self, $0) }
    }

    private func extent(_ id: UInt64) throws -> ExtentRecord? {
        try Self.extent(id, in: db)
    }

    private static func extent(_ id: UInt64, in db: RocksDB) throws -> ExtentRecord? {
        try db.get(.objects, extentKey(id)).map { try RecordCodec.decode(ExtentRecord.self, $0) }
    }

    public func read(_ object: ObjectRecord, range: Range<Int64>) -> ObjectReader {
        let db = self.db
        let files = self.files
        let pool = self.pool
        let buffers = self.buffers
        let lease = ReadLease(extent: object.extent, reading: reading)
        return ObjectReader(
            fetch: { index in
                _ = lease  // held by every copy of the reader and its iterators
                return try await pool.run {
                    try Self.readChunk(
                        index, extent: object.extent, size: object.size, chunkSize: object.chunkSize, db: db, files: files,
                        buffers: buffers)
                }
            },
            recycle: { buffers.recycle($0) },
            object: object, range: range)
    }

    public func copy(digest: String, from: String, to: String) async throws -> ObjectRecord? {
        try await locks.withLock("d:" + digest) {
            if let existing = try object(bucket: to, digest: digest) { return existing }
            guard var source = try object(bucket: from, digest: digest),
                var extent = try extent(source.extent)
            else { return nil }
            extent.references += 1
            extent.unreferencedSince = nil
            source.created = Date()
            var batch = WriteBatch()
            batch.delete(.objects, Self.unreferencedKey(source.extent))
            batch.put(.objects, Self.extentKey(source.extent), RecordCodec.encode(extent))
            batch.put(.objects, Self.objectKey(to, digest), RecordCodec.encode(source))
            try await write(batch)
            _ = released.withLockedValue { $0.removeValue(forKey: source.extent) }
            let size = source.size
            counters.withLockedValue {
                $0.buckets[to, default: .init()].objects += 1
                $0.buckets[to, default: .init()].bytes += size
            }
            return source
        }
    }

    /// Deletes an object; false when there was none. `durability` `.logged`
    /// spares a device flush per object where a later synced write (the end
    /// of a bulk delete) makes the deletes durable together; each delete is
    /// one atomic write either way, so a crash loses whole deletes, never half
    /// of one.
    @discardableResult
    public func delete(bucket: String, digest: String) async throws -> Bool {
        try await delete(bucket: bucket, digest: digest, durability: .synced)
    }

    @discardableResult
    public func delete(bucket: String, digest: String, durability mode: Durability) async throws -> Bool {
        try await locks.withLock("d:" + digest) {
            guard let object = try object(bucket: bucket, digest: digest) else { return false }
            var batch = WriteBatch()
            batch.delete(.objects, Self.objectKey(bucket, digest))
            var lastReference = false
            if var extent = try extent(object.extent) {
                extent.references = max(0, extent.references - 1)
                if extent.references == 0 {
                    lastReference = true
                    extent.unreferencedSince = Date()
                    batch.put(.objects, Self.unreferencedKey(object.extent), [])
                }
                batch.put(.objects, Self.extentKey(object.extent), RecordCodec.encode(extent))
            }
            try await pool.run { [db, batch] in try db.write(batch, mode) }
            if lastReference { released.withLockedValue { $0[object.extent] = .now } }
            counters.withLockedValue {
                $0.buckets[bucket, default: .init()].objects -= 1
                $0.buckets[bucket, default: .init()].bytes -= object.size
            }
            return true
        }
    }

    public func usage(bucket: String) -> BucketUsage {
        counters.withLockedValue { $0.buckets[bucket] ?? .init() }
    }

    public func usage() -> StoreUsage {
        counters.withLockedValue { c in
            StoreUsage(
                logicalBytes: c.buckets.values.reduce(0) { $0 + $1.bytes },
                physicalBytes: c.physicalBytes,
                openUploads: c.uploads.count,
                uploadBytes: c.uploads.values.reduce(0) { $0 + $1.size })
        }
    }

    // MARK: Uploads

    public func startUpload(bucket: String, owner: String) async throws -> UploadRecord {
        guard try db.get(.objects, Self.bucketKey(bucket)) != nil else { throw ObjectStoreError.bucketUnknown(bucket) }
        try space.check(writing: 0)
        let now = Date()
        let record = UploadRecord(
            id: UUID().uuidString.lowercased(), bucket: bucket, owner: owner,
            extent: UInt64.random(in: 1..<UInt64.max), chunkSize: chunkSize, size: 0, created: now, updated: now)
        // Counted before the write, so concurrent starts cannot pass the limit together.
        let admitted = counters.withLockedValue { counters -> Bool in
            guard counters.openUploads[bucket, default: 0] < maxOpenUploads else { return false }
            counters.opened(record.id, bucket: bucket, size: 0)
            return true
        }
        guard admitted else { throw ObjectStoreError.tooManyUploads(limit: maxOpenUploads) }
        var batch = WriteBatch()
        batch.put(.uploads, Self.uploadKey(record.id), RecordCodec.encode(record))
        do {
            try await write(batch)
        } catch {
            counters.withLockedValue { $0.closed(record.id) }
            throw error
        }
        live.withLockedValue { $0[record.id] = LiveUpload(record: record, hasher: SHA256()) }
        return record
    }

    public func upload(_ id: String) throws -> UploadRecord? {
        if let session = live.withLockedValue({ $0[id] }) { return session.record }
        return try storedUpload(id)
    }

    private func storedUpload(_ id: String) throws -> UploadRecord? {
        try db.get(.uploads, Self.uploadKey(id)).map { try RecordCodec.decode(UploadRecord.self, $0) }
    }

    /// The live session, rebuilt from the store (re-hashing its durable bytes)
    /// after a restart or an append that failed in storage. Call with the upload's lock held.
    private func session(_ id: String) async throws -> LiveUpload {
        if let session = live.withLockedValue({ $0[id] }) { return session }
        guard let record = try storedUpload(id) else { throw ObjectStoreError.uploadUnknown(id) }
        sessionRebuilds.withLockedValue { $0 += 1 }
        let db = self.db
        let files = self.files
        let buffers = self.buffers
        let hasher = try await pool.run { () -> SHA256 in
            var hasher = SHA256()
            var remaining = record.size
            var index: Int64 = 0
            while remaining > 0 {
                let chunk = try Self.readChunk(
                    index, extent: record.extent, size: record.size, chunkSize: record.chunkSize, db: db, files: files,
                    buffers: buffers)
                defer { buffers.recycle(chunk) }
                let take = Int(min(Int64(record.chunkSize), remaining))
                guard chunk.readableBytes >= take else { throw StorageError("upload \(id): chunk \(index) is short") }
                chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<take])) }
                remaining -= Int64(take)
                index += 1
            }
            return hasher
        }
        let session = LiveUpload(record: record, hasher: hasher)
        live.withLockedValue { $0[id] = session }
        return session
    }

    public func append<Body: AsyncSequence>(
        upload id: String, start: Int64?, expectedLength: Int64?, body: Body
    ) async throws -> UploadRecord where Body.Element == ByteBuffer {
        try await locks.withLock("u:" + id) {
            let session = try await session(id)
            var record = session.record
            if let start, start != record.size { throw ObjectStoreError.rangeMismatch(current: record.size) }
            if let expectedLength, expectedLength > maxObjectSize - record.size {
                throw ObjectStoreError.tooLarge(limit: maxObjectSize)
            }
            let db = self.db
            let chunkSize = record.chunkSize
            let extent = record.extent
            var writer = ChunkWriter(
                files: files, pool: pool, buffers: buffers, extent: extent, syncingEntry: record.size < Int64(chunkSize))
            // The session changes only once an append is durable, so a request the
            // client cut short (or sent too much or too little) leaves it matching
            // the store. Only a failure in storage drops it, to be rebuilt from what
            // is stored: rebuilding re-hashes the whole upload (up to the object size
            // limit), which a client must not be able to cause at will.
            var storageFailed = false
            do {
                var hasher = session.hasher
                var size = record.size
                var index = size / Int64(chunkSize)
                var tail = buffers.take(aligned: true)
                defer { buffers.recycle(tail) }
                let carried = Int(size % Int64(chunkSize))
                if carried > 0 {
                    // Up to a chunk read from a blob file: on the blocking pool, like every chunk read.
                    let key = Self.chunkKey(extent, index)
                    let stored = try await pool.run { try db.get(.chunks, key) }
                    guard let stored, stored.count >= carried else {
                        throw StorageError("upload \(id): chunk \(index) is missing")
                    }
                    _ = stored.withUnsafeBytes { tail.writeBytes(UnsafeRawBufferPointer(rebasing: $0[0..<carried])) }
                }
                let carriedIndex = index
                var received: Int64 = 0
                for try await var buffer in body {
                    received += Int64(buffer.readableBytes)
                    if let expectedLength, received > expectedLength {
                        throw ObjectStoreError.overlong(expected: expectedLength)
                    }
                    if size + Int64(buffer.readableBytes) > maxObjectSize {
                        throw ObjectStoreError.tooLarge(limit: maxObjectSize)
                    }
                    size += Int64(buffer.readableBytes)
                    buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                    while buffer.readableBytes > 0 {
                        let take = min(buffer.readableBytes, chunkSize - tail.readableBytes)
                        var slice = buffer.readSlice(length: take)!
                        tail.writeBuffer(&slice)
                        if tail.readableBytes == chunkSize {
                            try space.check(writing: chunkSize)
                            storageFailed = true
                            try await writer.write(tail, at: index * Int64(chunkSize))
                            storageFailed = false
                            index += 1
                            tail = buffers.take(aligned: true)  // the write in flight holds the old one
                        }
                    }
                }
                if let expectedLength, received < expectedLength {
                    throw ObjectStoreError.incomplete(expected: expectedLength, received: received)
                }
                // An empty body (a final PUT after the last PATCH) writes nothing: it may commit below the reserve.
                if received > 0 { try space.check(writing: tail.readableBytes) }
                storageFailed = true
                try await writer.finish()
                if received == 0 {
                    await writer.close()
                    return record
                }
                record.size = size
                record.updated = Date()
                var batch = WriteBatch()
                if carried > 0, index > carriedIndex {
                    // The carried partial chunk is now full, in the file.
                    batch.delete(.chunks, Self.chunkKey(extent, carriedIndex))
                }
                if tail.readableBytes > 0 {
                    batch.put(.chunks, Self.chunkKey(extent, index), Array(tail.readableBytesView))
                }
                batch.put(.uploads, Self.uploadKey(id), RecordCodec.encode(record))
                try await pool.run { [batch, file = writer.handle] in
                    try file?.sync()
                    try db.write(batch, .synced)
                }
                await writer.close()
                session.record = record
                session.hasher = hasher
                counters.withLockedValue { $0.uploads[id]?.size = size }
                return record
            } catch {
                await writer.close()
                // The session goes when storage may have changed under it. A pool job
                // skipped for the request's cancellation (its client gone) never ran:
                // nothing stored changed, and keeping the session spares the next
                // request re-reading and re-hashing the whole upload.
                if storageFailed, !(error is CancellationError) { live.withLockedValue { _ = $0.removeValue(forKey: id) } }
                throw error
            }
        }
    }

    public func complete(upload id: String, digest: String) async throws -> ObjectRecord {
        guard digest.hasPrefix("sha256:") else { throw ObjectStoreError.unsupportedDigest(digest) }
        return try await locks.withLock("u:" + id) {
            let session = try await session(id)
            let record = session.record
            let actual = "sha256:" + session.hasher.finalize().hexString
            guard actual == digest else {
                try await discard(record)
                throw ObjectStoreError.digestMismatch(expected: digest, actual: actual)
            }
            return try await locks.withLock("d:" + digest) {
                try await commit(record, digest: digest)
            }
        }
    }

    /// Turns a verified upload into an object. Call with the upload and digest locks held.
    private func commit(_ upload: UploadRecord, digest: String) async throws -> ObjectRecord {
        var batch = WriteBatch()
        batch.delete(.uploads, Self.uploadKey(upload.id))
        if let existing = try object(bucket: upload.bucket, digest: digest) {
            Self.dropExtent(upload.extent, in: &batch)
            try await write(batch, removingFilesOf: [upload.extent])
            forget(upload.id)
            return existing
        }
        var object = ObjectRecord(
            digest: digest, size: upload.size, created: Date(), extent: upload.extent, chunkSize: upload.chunkSize)
        var newPhysical: Int64 = 0
        var dropped: [UInt64] = []
        if let shared = try db.get(.objects, Self.contentKey(digest)),
            case let sharedID = UInt64(bigEndianBytes: shared),
            var extent = try extent(sharedID)
        {
            extent.references += 1
            extent.unreferencedSince = nil
            batch.put(.objects, Self.extentKey(sharedID), RecordCodec.encode(extent))
            batch.delete(.objects, Self.unreferencedKey(sharedID))
            Self.dropExtent(upload.extent, in: &batch)
            dropped.append(upload.extent)
            object.extent = sharedID
            object.chunkSize = extent.chunkSize
        } else {
            // The file keeps the full chunks; bytes an append left past them would
            // outlive the upload, unread and counted nowhere (`ExtentFiles.trim`).
            let fullChunks = upload.size / Int64(upload.chunkSize) * Int64(upload.chunkSize)
            _ = try await pool.run { [files] in try files.trim(upload.extent, to: fullChunks) }
            let extent = ExtentRecord(
                digest: digest, size: upload.size, chunkSize: upload.chunkSize, references: 1, unreferencedSince: nil)
            batch.put(.objects, Self.extentKey(upload.extent), RecordCodec.encode(extent))
            batch.put(.objects, Self.contentKey(digest), upload.extent.bigEndianBytes)
            newPhysical = upload.size
        }
        batch.put(.objects, Self.objectKey(upload.bucket, digest), RecordCodec.encode(object))
        try await write(batch, removingFilesOf: dropped)
        forget(upload.id)
        if !dropped.isEmpty { _ = released.withLockedValue { $0.removeValue(forKey: object.extent) } }
        let size = object.size
        counters.withLockedValue {
            $0.buckets[upload.bucket, default: .init()].objects += 1
            $0.buckets[upload.bucket, default: .init()].bytes += size
            $0.physicalBytes += newPhysical
        }
        return object
    }

    private func forget(_ id: String) {
        live.withLockedValue { _ = $0.removeValue(forKey: id) }
        counters.withLockedValue { $0.closed(id) }
    }

    private func discard(_ upload: UploadRecord) async throws {
        var batch = WriteBatch()
        Self.dropUpload(upload, in: &batch)
        try await write(batch, removingFilesOf: [upload.extent])
        forget(upload.id)
    }

    public func cancel(upload id: String) async throws {
        try await locks.withLock("u:" + id) {
            guard let record = try upload(id) else { throw ObjectStoreError.uploadUnknown(id) }
            try await discard(record)
        }
    }

    /// Discards the uploads idle for `idle` seconds: on the wall clock, and on
    /// the monotonic one for those with a session in this process, so a wall
    /// clock stepped forward (NTP, a resumed VM, `date -s`) does not discard a
    /// push between two of its chunks.
    public func expireUploads(idleFor idle: Double) async throws -> Int {
        let cutoff = Date().addingTimeInterval(-idle)
        let now = ContinuousClock.now
        return try await discardUploads { record in
            record.updated < cutoff
                && (live.withLockedValue { $0[record.id] }.map { $0.touched.duration(to: now) >= .seconds(idle) } ?? true)
        }
    }

    /// Discards the uploads `isDone` picks, with their bytes, and returns how
    /// many. One that a request is appending to right now is skipped (an idle
    /// one expires later, a deleted bucket's can no longer complete): waiting
    /// for it would hold the caller for as long as its client takes to send.
    private func discardUploads(where isDone: (UploadRecord) -> Bool) async throws -> Int {
        // The scan reads every upload record: on the blocking pool, not a task thread.
        let records = try await pool.run { [db] in
            var records: [UploadRecord] = []
            try db.scan(.uploads, prefix: Array("u".utf8)) { _, value in
                records.append(try RecordCodec.decode(UploadRecord.self, value))
                return true
            }
            return records
        }
        let picked = records.filter(isDone).map(\.id)
        var discarded = 0
        for id in picked where locks.tryLock("u:" + id) {
            defer { locks.release("u:" + id) }
            // Re-read under the lock: an append may have landed since the scan.
            guard let current = try storedUpload(id), isDone(current) else { continue }
            try await discard(current)
            discarded += 1
        }
        return discarded
    }

    /// Runs `body` while no sweep removes extent files: a backup, from its
    /// checkpoint until it has linked the files the checkpoint names. A sweep
    /// in between would take the file of an object the checkpoint still holds.
    public func withSweepsHeld<T>(_ body: () async throws -> T) async throws -> T {
        try await locks.withLock(Self.sweepLock, body)
    }

    private static let sweepLock = "sweep"

    public func sweepExtents(grace: Double) async throws -> SweepResult {
        try await locks.withLock(Self.sweepLock) { try await sweepUnheld(grace: grace) }
    }

    private func sweepUnheld(grace: Double) async throws -> SweepResult {
        let cutoff = Date().addingTimeInterval(-grace)
        /// Unreferenced for `grace` on the monotonic clock too, when that happened in this
        /// process, and nobody reading it.
        func sweepable(_ id: UInt64) -> Bool {
            reading.withLockedValue { $0[id] == nil }
                && released.withLockedValue { $0[id].map { $0.duration(to: .now) >= .seconds(grace) } ?? true }
        }
        // The scan and its lookups read every unreferenced extent: on the blocking pool.
        let unreferenced = try await pool.run { [db] in
            var ids: [UInt64] = []
            try db.scan(.objects, prefix: Array("z".utf8)) { key, _ in
                ids.append(UInt64(bigEndianBytes: key.dropFirst()))
                return true
            }
            return try ids.compactMap { id -> (UInt64, ExtentRecord)? in
                guard let record = try Self.extent(id, in: db), record.references == 0,
                    let since = record.unreferencedSince, since < cutoff
                else { return nil }
                return (id, record)
            }
        }
        let candidates = unreferenced.filter { sweepable($0.0) }
        var swept = SweepResult()
        // Each extent's record goes in a logged write; its file only once a sync of
        // the log has made that write durable, for a batch of extents at a time (a
        // device flush per extent made sweeping many take minutes). Nothing can
        // reach an extent once its record is gone: no object holds it, and a new
        // upload of its digest makes an extent of its own.
        var dropped: [UInt64] = []
        func removeDropped() async throws {
            guard !dropped.isEmpty else { return }
            try await pool.run { [db, files, dropped] in
                try db.syncLog()
                for extent in dropped { files.remove(extent) }
            }
            dropped.removeAll()
        }
        do {
            for (id, record) in candidates {
                try await locks.withLock("d:" + record.digest) {
                    // Re-checked in full under the lock: the extent may have been shared
                    // and let go again since the scan, which restarts its grace.
                    guard let current = try extent(id), current.references == 0,
                        let since = current.unreferencedSince, since < cutoff, sweepable(id)
                    else { return }
                    var batch = WriteBatch()
                    try Self.dropUnreferencedExtent(id, digest: record.digest, db: db, in: &batch)
                    try await pool.run { [db, batch] in try db.write(batch, .logged) }
                    dropped.append(id)
                    _ = released.withLockedValue { $0.removeValue(forKey: id) }
                    counters.withLockedValue { $0.physicalBytes -= current.size }
                    swept.extents += 1
                    swept.bytes += current.size
                }
                if dropped.count >= 256 { try await removeDropped() }
            }
            try await removeDropped()
        } catch {
            // What was dropped goes if the log syncs; a file left (a stop, a failed
            // sync) is an orphan the next open removes.
            try? await removeDropped()
            throw error
        }
        return swept
    }
}

extension Sequence<UInt8> {
    /// Lowercase hexadecimal form of the bytes (a digest, a key).
    public var hexString: String {
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)
