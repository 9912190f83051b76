import BerthCore
import BerthStorage
import Foundation

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
    }

    /// Writes a backup of the running store to `destination`, which must not exist.
    public static func create(store: Store, dataDir: String, destination: String) async throws -> Summary {
        let files = FileManager.default
        guard !files.fileExists(atPath: destination) else {
            throw BackupError("destination \(destination) already exists")
        }
        try files.createDirectory(atPath: destination, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let checkpoint = destination + "/db"
        // The checkpoint (it flushes the memtables first), then the extent files its records name,
        // with sweeps held off: one could remove the file of an object the checkpoint holds.
        let copy = try await store.objects.withSweepsHeld {
            try await store.pool.run { [db = store.db] in try db.checkpoint(to: checkpoint) }
            let copy = try RocksDB(path: checkpoint)
            try await store.pool.run { [files = store.files] in
                try RocksObjectStore.addExtentFiles(from: files, to: copy)
            }
            return copy
        }
        let tls = URL(fileURLWithPath: dataDir).appendingPathComponent("tls").path
        if files.fileExists(atPath: tls) { try files.copyItem(atPath: tls, toPath: destination + "/tls") }
        // List what the checkpoint holds, from the checkpoint itself.
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
        let summary = Summary(createdAt: Date(), path: destination, artifacts: artifacts, tags: tags)
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
            let partial = destination + "/backup.json.partial"
            try manifest.write(to: URL(fileURLWithPath: partial))
            try FileSync.sync(partial)
            guard rename(partial, destination + "/backup.json") == 0 else {
                throw BackupError("cannot rename \(partial) into place: \(String(cString: strerror(errno)))")
            }
            try FileSync.sync(destination)
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
        guard let data = files.contents(atPath: source + "/backup.json"), (try? decoder.decode(Summary.self, from: data)) != nil else {
            throw BackupError("\(source)/backup.json is not a Berth backup's manifest: the backup is not whole")
        }
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

public struct BackupError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
