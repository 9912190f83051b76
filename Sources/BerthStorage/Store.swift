import Foundation

/// The embedded store: one RocksDB database, the extent files beside it
/// (`<directory>/extents`), the blocking pool that serves them, and the
/// object store over both.
public final class Store: Sendable {
    public let db: RocksDB
    public let pool: BlockingPool
    public let files: ExtentFiles
    public let objects: RocksObjectStore

    public init(
        directory: String, chunkSize: Int = 1 << 20, maxObjectSize: Int64 = 64 << 30, threads: Int = 16,
        directWrites: Bool = true, maxOpenUploads: Int = 10_000, reservedSpace: Int64? = nil
    ) throws {
        try SpaceReserve.requireRoomToOpen(directory)
        let space = try SpaceReserve(directory: directory, bytes: reservedSpace)
        db = try RocksDB(path: directory)
        pool = BlockingPool(threads: threads)
        files = try ExtentFiles(directory: directory + "/extents", directWrites: directWrites)
        objects = try RocksObjectStore(
            db: db, pool: pool, files: files, chunkSize: chunkSize, maxObjectSize: maxObjectSize,
            maxOpenUploads: maxOpenUploads, space: space)
    }

    /// Flushes the memtables (so the next start replays little) and stops the
    /// pool. With too little space for a flush it leaves them to the log,
    /// which holds every acknowledged write: a flush that fails on a full
    /// disk aborts this RocksDB build.
    public func shutdown() async throws {
        let roomToFlush = ((try? objects.space.available()) ?? 0) >= SpaceReserve.minimumToOpen
        if roomToFlush {
            try? await pool.run { [db] in
                for family in ColumnFamily.allCases { try db.flush(family) }
            }
        }
        try await pool.shutdown()
    }
}
