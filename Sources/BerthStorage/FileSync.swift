#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// fsync(2) by path: what makes a file's bytes, or a directory's entries,
/// durable when they were written without a descriptor at hand (a copy, a
/// new file's name in its directory).
public enum FileSync {
    /// Syncs one file or directory.
    public static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("cannot open \(path) to sync it") }
        defer { _ = close(fd) }
        guard fsync(fd) == 0 else { throw failure("fsync of \(path) failed") }
    }

    /// Syncs every file and directory under `path`, then `path` itself; nothing if it does not exist.
    public static func syncTree(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return }
        if isDirectory.boolValue {
            for entry in try FileManager.default.subpathsOfDirectory(atPath: path) { try sync(path + "/" + entry) }
        }
        try sync(path)
    }

    /// Syncs the directory that holds `path`'s entry.
    public static func syncParent(of path: String) throws {
        let parent = (path as NSString).deletingLastPathComponent
        try sync(parent.isEmpty ? "." : parent)
    }

    /// Replaces the file at `path` with `bytes` so that no crash leaves it
    /// short or empty: written to `path.partial` (created with `mode`),
    /// synced, renamed into place, then its directory synced.
    public static func replace(_ path: String, with bytes: [UInt8], mode: mode_t) throws {
        let partial = path + ".partial"
        let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("cannot create \(partial)") }
        do {
            try bytes.withUnsafeBytes { try writeAll($0, to: fd, path: partial) }
        } catch {
            _ = close(fd)
            throw error
        }
        let synced = fsync(fd) == 0
        guard close(fd) == 0, synced else { throw failure("cannot sync \(partial)") }
        guard rename(partial, path) == 0 else { throw failure("cannot rename \(partial) into place") }
        try syncParent(of: path)
    }

    /// Writes every byte of `bytes` to `fd` at its offset, however many
    /// `write` calls that takes; `path` names the file in the error.
    static func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: Int32, path: String) throws {
        var written = 0
        while written < bytes.count {
            let n = write(fd, bytes.baseAddress! + written, bytes.count - written)
            guard n > 0 else { throw failure("cannot write \(path)") }
            written += n
        }
    }

    private static func failure(_ what: String) -> StorageError {
        StorageError("\(what): \(String(cString: strerror(errno)))")
    }
}
