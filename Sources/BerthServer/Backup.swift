import BerthCore
import BerthStorage
import Foundation
import NIOConcurrencyHelpers

/// Consistent copies of the data directory: a RocksDB checkpoint (hard links
/// where the destination shares the file system, so it is quick and the
/// server keeps serving), the TLS identity, and a manifest of what it holds.
///
/// Layout of a backup: `db/` (the checkpoint, with `db/extents/` holding the
/// extent files), `tls/` (when generated), `backup.json`.
public enum Backup {
    public struct Summary: Codable, Sendable {
        public var createdAt: Date
        public var path: String
        /// Every manifest in the backup, as `<repository>@<digest>`.
        public var artifacts: [String]
        public var tags: Int
        /// Every file of the backup but `backup.json`, by its path in the backup, with its
        /// size: a restore checks each, so a copy cut short (an interrupted `rsync`, which
        /// sends `backup.json` before `db/`) is refused instead of opening as an empty store,
        /// whose start would then delete every extent file no record names. Nil in backups
        /// taken before the list existed.
        public var files: [String: Int64]?
    }

    /// Writes a backup of the running store to `destination`, which must not exist.
    public static func create(store: Store, dataDir: String, destination: String) async throws -> Summary {
        let files = FileManager.default
        try files.createDirectory(
            atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        // Made here, exclusively: two backups of one name cannot share it, and
        // what a failure removes is this backup's own.
        guard mkdir(destination, 0o700) == 0 else {
            if errno == EEXIST { throw BackupError("destination \(destination) already exists") }
            throw BackupError("cannot create \(destination): \(String(cString: strerror(errno)))")
        }
        do {
            return try await write(store: store, dataDir: dataDir, destination: destination)
        } catch {
            // A backup that failed (no space for a copy, an I/O error) leaves nothing
            // behind: its hard links would keep deleted blobs on the disk.
            try? files.removeItem(atPath: destination)
            if let error = error as? StorageError { throw BackupError(error.description) }
            throw error
        }
    }

    private static func write(store: Store, dataDir: String, destination: String) async throws -> Summary {
        let files = FileManager.default
        let checkpoint = destination + "/db"
        // The checkpoint (it flushes the memtables first), then the extent files its records name,
        // with sweeps held off: one could remove the file of an object the checkpoint holds.
        let (artifacts, tags) = try await store.objects.withSweepsHeld {
            try await store.pool.run { [db = store.db] in try db.checkpoint(to: checkpoint) }
            // Copies across file systems may take minutes: a cancelled backup (the
            // server stopping) stops between chunks rather than hold the stop.
            let cancelled = NIOLockedValueBox(false)
            return try await withTaskCancellationHandler {
                try await store.pool.run { [files = store.files, keepFree = store.objects.reservedSpace] in
                    // The checkpoint, opened to record its extent files and list what
                    // it holds, is closed before this closure returns: its files are
                    // final before they are listed.
                    let copy = try RocksDB(path: checkpoint)
                    try RocksObjectStore.addExtentFiles(
                        from: files, to: copy, keepFree: keepFree, stopped: { cancelled.withLockedValue { $0 } })
                    return try contents(of: copy)
                }
            } onCancel: {
                cancelled.withLockedValue { $0 = true }
            }
        }
        let tls = URL(fileURLWithPath: dataDir).appendingPathComponent("tls").path
        if files.fileExists(atPath: tls) { try files.copyItem(atPath: tls, toPath: destination + "/tls") }
        let listed = try await store.pool.run { try fileSizes(under: destination) }
        let summary = Summary(createdAt: Date(), path: destination, artifacts: artifacts, tags: tags, files: listed)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let manifest = try encoder.encode(summary)
        // `backup.json` says the backup is whole, so it comes last: the checkpoint and
        // its extent files are synced, the TLS copy is synced now, and the manifest is
        // written aside, synced and renamed into place, so no power cut leaves a
        // manifest beside a short copy, or a short manifest.
        try await store.pool.run {
            try FileSync.syncTree(destination + "/tls")
            try FileSync.replace(destination + "/backup.json", with: Array(manifest), mode: 0o644)
            try FileSync.syncParent(of: destination)
        }
        return summary
    }

    /// Restores a backup into `dataDir`, which must be empty or absent; a
    /// fresh file system's `lost+found` (a data volume's root) counts as empty.
    public static func restore(from source: String, into dataDir: String) throws {
        let files = FileManager.default
        guard files.fileExists(atPath: source + "/backup.json"), files.fileExists(atPath: source + "/db") else {
            throw BackupError("\(source) is not a whole Berth backup (no backup.json and db/)")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let data = files.contents(atPath: source + "/backup.json"), let summary = try? decoder.decode(Summary.self, from: data)
        else {
            throw BackupError("\(source)/backup.json is not a Berth backup's manifest: the backup is not whole")
        }
        try checkWhole(source, listed: summary.files)
        if files.fileExists(atPath: dataDir), !(try files.contentsOfDirectory(atPath: dataDir)).allSatisfy({ $0 == "lost+found" }) {
            throw BackupError("data directory \(dataDir) is not empty; restore only into an empty directory")
        }
        try files.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try files.copyItem(atPath: source + "/db", toPath: dataDir + "/db")
        if files.fileExists(atPath: source + "/tls") { try files.copyItem(atPath: source + "/tls", toPath: dataDir + "/tls") }
        // Nothing of the copy may sit only in the page cache when the server starts on it:
        // a power cut could leave the database's or an extent's file short.
        try FileSync.syncTree(dataDir)
        try FileSync.syncParent(of: dataDir)
    }
}

extension Backup {
    /// The manifests (`<repository>@<digest>`) and the number of tags a checkpoint holds.
    static func contents(of copy: RocksDB) throws -> ([String], Int) {
        var artifacts: [String] = []
        var tags = 0
        try copy.scan(.catalog, prefix: Key("M").childPrefix) { key, _ in
            let parts = Key.components(key)
            artifacts.append("\(parts[0])@\(parts[1])")
            return true
        }
        try copy.scan(.catalog, prefix: Key("T").childPrefix) { _, _ in
            tags += 1
            return true
        }
        return (artifacts, tags)
    }

    /// The size of every regular file under `root` but the manifest, by path relative to it.
    static func fileSizes(under root: String) throws -> [String: Int64] {
        var sizes: [String: Int64] = [:]
        guard let walk = FileManager.default.enumerator(atPath: root) else {
            throw BackupError("cannot list \(root)")
        }
        while let relative = walk.nextObject() as? String {
            guard relative != "backup.json", relative != "backup.json.partial" else { continue }
            var info = stat()
            guard lstat(root + "/" + relative, &info) == 0 else {
                throw BackupError("cannot read \(root)/\(relative): \(String(cString: strerror(errno)))")
            }
            if (info.st_mode & S_IFMT) == S_IFREG { sizes[relative] = Int64(info.st_size) }
        }
        return sizes
    }

    /// Refuses a backup missing a file its manifest lists, or holding one of
    /// another size; one without a list (taken before it existed) needs at
    /// least its database's `CURRENT`. An extent file need only be there: a
    /// backup on the store's file system holds hard links to the live files,
    /// which uploads append to and commits trim past the sizes the backup's
    /// records name. RocksDB's own `LOG` files are not checked.
    static func checkWhole(_ source: String, listed: [String: Int64]?) throws {
        guard let listed else {
            guard FileManager.default.fileExists(atPath: source + "/db/CURRENT") else {
                throw BackupError("\(source) is not whole: db/CURRENT is missing")
            }
            return
        }
        let present = try fileSizes(under: source)
        for (path, size) in listed.sorted(by: { $0.key < $1.key }) where !isLog(path) {
            guard let found = present[path] else { throw BackupError("\(source) is not whole: \(path) is missing") }
            guard found == size || path.hasPrefix("db/extents/") else {
                throw BackupError("\(source) is not whole: \(path) holds \(found) bytes, not \(size)")
            }
        }
    }
}

extension Backup {
    /// RocksDB's informational log (`db/LOG`, `db/LOG.old.*`), which opening a database appends to.
    static func isLog(_ path: String) -> Bool {
        path == "db/LOG" || path.hasPrefix("db/LOG.old.")
    }
}

public struct BackupError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
