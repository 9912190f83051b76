#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The free space uploads leave on the file system that holds the store.
///
/// Every delete, tag and manifest is a RocksDB write, and RocksDB needs room
/// for its log, flushes and compactions; one that meets a full disk stops
/// writing, and the Debian build this binary links asserts (aborts) on a write
/// that follows a failed one: on a full disk the server died at its next
/// flush and again at every start. Blob bytes are nearly all of what a
/// registry writes, so refusing uploads below the reserve keeps the room the
/// store needs, and an operator can still delete images and run GC.
public struct SpaceReserve: Sendable {
    /// A directory on the file system watched.
    public let directory: String
    /// Bytes uploads leave available.
    public let bytes: Int64
    /// What opening the store, or flushing it at shutdown, needs available at
    /// least (new log, manifest and options files, one flush of memtables).
    public static let minimumToOpen: Int64 = 16 << 20

    /// - Parameter bytes: the reserve; nil for 2 % of the file system, at
    ///   least 64 MiB (four times what a start needs) and at most 1 GiB.
    public init(directory: String, bytes: Int64?) throws {
        self.directory = directory
        if let bytes {
            self.bytes = bytes
        } else {
            self.bytes = min(1 << 30, max(4 * Self.minimumToOpen, try Self.measure(directory).size / 50))
        }
    }

    /// Bytes available to the server's user on `directory`'s file system, and its size.
    public static func measure(_ directory: String) throws -> (available: Int64, size: Int64) {
        var stats = statvfs()
        var path = directory
        // The directory may not exist yet: measure the nearest ancestor that does.
        while statvfs(path, &stats) != 0 {
            guard errno == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex else {
                throw StorageError("cannot measure the free space of \(directory): \(String(cString: strerror(errno)))")
            }
            path = String(path[..<slash])
        }
        let unit = Int64(stats.f_frsize)
        return (Int64(stats.f_bavail) * unit, Int64(stats.f_blocks) * unit)
    }

    /// Bytes available now.
    public func available() throws -> Int64 { try Self.measure(directory).available }

    /// Throws ``ObjectStoreError/insufficientSpace(available:reserve:)`` when
    /// writing `count` more bytes would leave less than the reserve.
    public func check(writing count: Int) throws {
        let available = try available()
        if available - Int64(count) < bytes { throw ObjectStoreError.insufficientSpace(available: available, reserve: bytes) }
    }

    /// Throws a readable error when `directory`'s file system has too little
    /// space available to open a store there.
    public static func requireRoomToOpen(_ directory: String) throws {
        let available = try measure(directory).available
        guard available >= minimumToOpen else {
            throw StorageError(
                "the file system of \(directory) has \(available) bytes available; opening the store needs at least "
                    + "\(minimumToOpen) (16 MiB): free space on it, then start again")
        }
    }
}
