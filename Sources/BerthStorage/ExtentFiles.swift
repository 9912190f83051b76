#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import NIOCore

/// The full chunks of extents, one append-only file per extent, written and
/// synced outside RocksDB so every byte of a large blob reaches the disk once
/// and never passes through a memtable.
///
/// Layout: `<directory>/<low byte of the id, 2 hex>/<id, 16 hex>`. A file holds
/// chunks `0..<n` back to back; which of its bytes are valid is recorded in
/// RocksDB (the upload's or the extent's size), so bytes past that (from an
/// append that failed or was cut by a crash) are never read, are
/// overwritten by the next append, and are cut off at commit (``trim(_:to:)``).
/// Calls block: run them on the blocking pool.
///
/// Unless `directWrites` is off, writes bypass the page cache (`O_DIRECT`)
/// where the file system allows. A blob is written once and seldom read at
/// once, and on a VM whose free memory goes back to the host every fresh
/// page-cache page costs a host fault: chunked pushes ran at 172–311 MB/s
/// buffered on this machine kind, 483–660 direct. Reads stay buffered.
public struct ExtentFiles: Sendable {
    public let directory: String
    /// Whether files are opened for direct writes (where the file system allows).
    public let directWrites: Bool

    /// Creates the directory and its 256 subdirectories if missing, durably.
    public init(directory: String, directWrites: Bool = true) throws {
        self.directory = directory
        self.directWrites = directWrites
        var created = try Self.makeDirectory(directory)
        for fanout in 0..<256 {
            created = try Self.makeDirectory(directory + "/" + Self.hex(UInt64(fanout), digits: 2)) || created
        }
        if created {
            try FileSync.sync(directory)
            try FileSync.sync(directory + "/..")
        }
    }

    /// The path of an extent's file.
    public func path(_ extent: UInt64) -> String {
        directory + "/" + Self.hex(extent & 0xff, digits: 2) + "/" + Self.hex(extent, digits: 16)
    }

    /// Opens (creating if needed) an extent's file for writing. The directory
    /// entry is synced when the file is new or `syncingEntry` is set (the
    /// first full chunk of an upload: a create cut short by a crash leaves a
    /// file whose name was never synced), so a later `sync` of the file makes
    /// it durable by name.
    public func openForAppend(_ extent: UInt64, syncingEntry: Bool = false) throws -> Handle {
        let path = path(extent)
        var fd = openWritable(path, flags: 0)
        var created = false
        if fd < 0, errno == ENOENT {
            fd = openWritable(path, flags: O_CREAT)
            created = true
        }
        guard fd >= 0 else { throw Self.error(created ? "create" : "open", path) }
        if created || syncingEntry {
            do {
                try FileSync.sync(directory + "/" + Self.hex(extent & 0xff, digits: 2))
            } catch {
                closeDescriptor(fd)
                throw error
            }
        }
        return Handle(fd: fd, path: path)
    }

    /// Makes the directory entries of every file created or linked so far durable.
    public func syncDirectories() throws {
        for fanout in 0..<256 { try FileSync.sync(directory + "/" + Self.hex(UInt64(fanout), digits: 2)) }
    }

    /// Makes an extent's file durable (one copied in, say).
    public func syncFile(_ extent: UInt64) throws {
        try FileSync.sync(path(extent))
    }

    /// Whether an extent has a file.
    public func exists(_ extent: UInt64) -> Bool {
        access(path(extent), F_OK) == 0
    }

    /// Reads `count` bytes at `offset` of an extent's file onto the end of
    /// `buffer` (which should have room for them: pass a buffer nothing else
    /// holds, or it is copied); false when the extent has no file (it
    /// predates extent files and keeps its chunks in RocksDB).
    public func read(_ extent: UInt64, offset: Int64, count: Int, appendingTo buffer: inout ByteBuffer) throws -> Bool {
        let path = path(extent)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0, errno == ENOENT { return false }
        guard fd >= 0 else { throw Self.error("open", path) }
        defer { close(fd) }
        let read = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            var done = 0
            while done < count {
                let n = pread(fd, target.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0, errno == EINTR { continue }
                guard n >= 0 else { throw Self.error("read", path) }
                if n == 0 { break }
                done += n
            }
            return done
        }
        guard read == count else {
            throw StorageError("extent file \(path) is short: \(read) of \(count) bytes at \(offset)")
        }
        return true
    }

    /// Cuts an extent's file to `length` bytes, durably, if it is longer: what
    /// an append wrote past the size it recorded (a body cut short, a crash)
    /// would otherwise stay on disk for the extent's life, unread and
    /// uncounted. Returns whether it cut; a missing file is not an error.
    @discardableResult
    public func trim(_ extent: UInt64, to length: Int64) throws -> Bool {
        let path = path(extent)
        var status = stat()
        if stat(path, &status) != 0 {
            if errno == ENOENT { return false }
            throw Self.error("stat", path)
        }
        guard Int64(status.st_size) > length else { return false }
        guard truncate(path, off_t(length)) == 0 else { throw Self.error("truncate", path) }
        try FileSync.sync(path)
        return true
    }

    /// Removes an extent's file; a missing file is not an error.
    public func remove(_ extent: UInt64) {
        unlink(path(extent))
    }

    /// Every extent that has a file.
    public func list() throws -> [UInt64] {
        var extents: [UInt64] = []
        for fanout in 0..<256 {
            let sub = directory + "/" + Self.hex(UInt64(fanout), digits: 2)
            guard let dir = opendir(sub) else { throw Self.error("list", sub) }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name.utf8.count == 16, let id = UInt64(name, radix: 16) { extents.append(id) }
            }
        }
        return extents
    }

    /// The alignment of address, offset and length that a direct write needs
    /// (the largest logical block size Linux file systems use).
    public static let directAlignment = 4096

    /// Opens `path` for writing, directly if asked and the file system allows it.
    private func openWritable(_ path: String, flags: CInt) -> CInt {
        if directWrites, directIOFlag != 0 {
            let fd = open(path, O_WRONLY | O_CLOEXEC | directIOFlag | flags, 0o600)
            if fd >= 0 || errno != EINVAL { return fd }
        }
        return open(path, O_WRONLY | O_CLOEXEC | flags, 0o600)
    }

    /// An extent file open for writing. Close it when done.
    public struct Handle: Sendable {
        let fd: CInt
        let path: String

        /// Whether writes go to the disk directly (not once a write needed the
        /// buffered path).
        var isDirect: Bool { fcntl(fd, F_GETFL) & directIOFlag != 0 }

        /// Writes all of `bytes` at `offset`. Several writes may run at once
        /// on one handle if their ranges do not overlap.
        public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
            if isDirect {
                let alignment = ExtentFiles.directAlignment
                if offset % Int64(alignment) == 0, bytes.count % alignment == 0, bytes.count > 0 {
                    if Int(bitPattern: bytes.baseAddress!) % alignment == 0 {
                        do { return try writeAll(bytes, at: offset) } catch is DirectWriteRefused {}
                    } else {
                        let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: alignment)
                        defer { staging.deallocate() }
                        staging.copyMemory(from: bytes)
                        do { return try writeAll(UnsafeRawBufferPointer(staging), at: offset) } catch is DirectWriteRefused {}
                    }
                }
                // An unaligned write, or one the device refused: buffered from now on.
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~directIOFlag)
            }
            try writeAll(bytes, at: offset)
        }

        private struct DirectWriteRefused: Error {}

        private func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
            var done = 0
            while done < bytes.count {
                let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
                if n < 0, errno == EINTR { continue }
                if n < 0, errno == EINVAL, isDirect { throw DirectWriteRefused() }
                guard n >= 0 else { throw ExtentFiles.error("write", path) }
                guard n > 0 else { throw StorageError("extent file write \(path): no progress") }
                done += n
            }
        }

        /// Asks the kernel to start writing back `range` now, so the final
        /// `sync` finds most of the file already on its way to the disk.
        public func startWriteback(offset: Int64, count: Int64) {
            _ = syncFileRange?(fd, offset, count, 2)  // SYNC_FILE_RANGE_WRITE
        }

        /// Makes everything written so far durable.
        public func sync() throws {
            guard fdatasync(fd) == 0 else { throw ExtentFiles.error("sync", path) }
        }

        public func close() {
            closeDescriptor(fd)
        }
    }

    // MARK: Helpers

    /// Creates a directory; false when it already existed.
    static func makeDirectory(_ path: String) throws -> Bool {
        if mkdir(path, 0o700) == 0 { return true }
        guard errno == EEXIST else { throw error("create directory", path) }
        return false
    }

    static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    static func error(_ operation: String, _ path: String) -> StorageError {
        StorageError("extent file \(operation) \(path): \(String(cString: strerror(errno)))")
    }
}

private func closeDescriptor(_ fd: CInt) {
    _ = close(fd)
}

/// Linux's `O_DIRECT`, which Glibc's Swift module hides behind `_GNU_SOURCE`;
/// 0 (buffered writes) where its value is not known here.
#if os(Linux) && arch(x86_64)
private let directIOFlag: CInt = 0o40000
#elseif os(Linux) && arch(arm64)
private let directIOFlag: CInt = 0o200000
#else
private let directIOFlag: CInt = 0
#endif

/// Linux's `sync_file_range`, which Glibc's Swift module hides behind `_GNU_SOURCE`.
private let syncFileRange: (@convention(c) (CInt, Int64, Int64, CUnsignedInt) -> CInt)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }  // RTLD_DEFAULT
    return unsafeBitCast(symbol, to: (@convention(c) (CInt, Int64, Int64, CUnsignedInt) -> CInt).self)
}()
