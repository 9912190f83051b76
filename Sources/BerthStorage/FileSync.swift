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

    private static func failure(_ what: String) -> StorageError {
        StorageError("\(what): \(String(cString: strerror(errno)))")
    }
}
