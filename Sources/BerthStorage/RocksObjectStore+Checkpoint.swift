#if canImport(Glibc)
import Glibc
#endif
import Foundation

extension RocksObjectStore {
    /// Completes a checkpoint of the store's database with the extent files
    /// its records point at: hard links where the file system allows (files
    /// are only appended past their recorded size, so a link is as good as a
    /// copy), copies otherwise, all synced. Take the checkpoint first, then call
    /// this, both inside ``withSweepsHeld(_:)``. An extent file removed in
    /// between (an upload's, cancelled or dropped as a duplicate; or swept,
    /// outside that hold) takes its records out of the checkpoint, so the copy
    /// never names bytes it does not hold.
    ///
    /// A copy never leaves less than `keepFree` bytes available on the
    /// checkpoint's file system: that may be the store's own (a bind mount,
    /// as systemd's `ReadWritePaths` makes, defeats `link` on one file system),
    /// and RocksDB must not meet a full disk. `stopped` is asked before each
    /// file: a backup copying gigabytes must not hold a server's stop.
    public static func addExtentFiles(
        from files: ExtentFiles, to checkpoint: RocksDB, keepFree: Int64 = 0, stopped: @Sendable () -> Bool = { false }
    ) throws {
        let copy = try ExtentFiles(directory: checkpoint.path + "/extents")
        for extent in try files.list() {
            if stopped() { throw CancellationError() }
            if link(files.path(extent), copy.path(extent)) == 0 || errno == ENOENT { continue }
            // Another file system: copy, unless the file went away meanwhile.
            var info = stat()
            if stat(files.path(extent), &info) == 0 {
                let available = try SpaceReserve.measure(checkpoint.path).available
                guard available - Int64(info.st_size) >= keepFree else {
                    throw StorageError(
                        "the backup's file system has \(available) bytes available; copying the next extent file "
                            + "(\(info.st_size) bytes) would leave less than the \(keepFree) kept free: back up to a "
                            + "file system with room, or to the store's own file system (hard links take no space)")
                }
            }
            do {
                try copyFile(files.path(extent), to: copy.path(extent), stopped: stopped)
            } catch where !FileManager.default.fileExists(atPath: files.path(extent)) {
                continue
            }
            try copy.syncFile(extent)
        }
        try copy.syncDirectories()

        /// A record of `size` bytes whose full chunks are neither in a file nor (written before extent files) in `chunks`.
        func lost(_ extent: UInt64, size: Int64, chunkSize: Int) throws -> Bool {
            guard size >= Int64(chunkSize), !copy.exists(extent) else { return false }
            return try checkpoint.get(.chunks, chunkKey(extent, 0)) == nil
        }
        var batch = WriteBatch()
        try checkpoint.scan(.objects, prefix: Array("e".utf8)) { key, value in
            let id = UInt64(bigEndianBytes: key.dropFirst())
            let record = try RecordCodec.decode(ExtentRecord.self, value)
            guard try lost(id, size: record.size, chunkSize: record.chunkSize) else { return true }
            guard record.references == 0 else {
                throw StorageError("extent \(id) (\(record.digest)) lost its file during the checkpoint; retry the backup")
            }
            try dropUnreferencedExtent(id, digest: record.digest, db: checkpoint, in: &batch)
            return true
        }
        try checkpoint.scan(.uploads, prefix: Array("u".utf8)) { _, value in
            let record = try RecordCodec.decode(UploadRecord.self, value)
            if try lost(record.extent, size: record.size, chunkSize: record.chunkSize) {
                dropUpload(record, in: &batch)
            }
            return true
        }
        try checkpoint.write(batch, .synced)
    }

    /// Copies `source` to the new file `destination` (its mode kept), asking
    /// `stopped` before each 4 MiB: a layer of gigabytes must not hold a
    /// server's stop for as long as its copy takes. Plain reads and writes:
    /// it runs where `link` failed, across file systems, where
    /// `copy_file_range` answers EXDEV on this kernel.
    static func copyFile(_ source: String, to destination: String, stopped: () -> Bool) throws {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw StorageError("cannot open \(source): \(String(cString: strerror(errno)))") }
        defer { _ = close(input) }
        var info = stat()
        guard fstat(input, &info) == 0 else { throw StorageError("cannot stat \(source): \(String(cString: strerror(errno)))") }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, info.st_mode & 0o777)
        guard output >= 0 else { throw StorageError("cannot create \(destination): \(String(cString: strerror(errno)))") }
        defer { _ = close(output) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            if stopped() { throw CancellationError() }
            let count = Glibc.read(input, buffer.baseAddress, buffer.count)
            if count == 0 { return }
            guard count > 0 else { throw StorageError("cannot read \(source): \(String(cString: strerror(errno)))") }
            try FileSync.writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<count]), to: output, path: destination)
        }
    }
}
