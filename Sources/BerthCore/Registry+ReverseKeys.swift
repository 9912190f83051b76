import BerthStorage
import Foundation

/// Two reverse indexes of the catalog, written in the same batch as what they
/// mirror, so that deleting an artifact costs lookups instead of scans of its
/// whole image (with scans, a cleanup deleting most of an image's N artifacts
/// took time in N²: 1.0 s for 1,000, 11.7 s for 4,000, measured):
///
/// - `G <name> <digest> <tag>`: the tags of an artifact (the reverse of `T`);
/// - `L <name> <child> <index>`: the indexes listing a manifest (the reverse
///   of an index record's `children`).
///
/// A catalog written before them gets them at its first open by this version
/// (`buildReverseKeys`).
extension Registry {
    /// Stages `tag` of image `name` pointing at `digest`; `previous` is the
    /// digest it pointed at until now, if any.
    func stageTag(
        _ tag: String, of name: String, at digest: String, replacing previous: String?, updated: Date, in batch: inout WriteBatch
    ) {
        if let previous, previous != digest { batch.delete(.catalog, CatalogKey.tagOfDigest(name, previous, tag).bytes) }
        batch.put(.catalog, CatalogKey.tag(name, tag).bytes, TagValue.encode(digest: digest, updated: updated))
        batch.put(.catalog, CatalogKey.tagOfDigest(name, digest, tag).bytes, [])
    }

    /// Stages the deletion of `tag` of image `name`, which points at `digest`.
    func stageTagDeletion(_ tag: String, of name: String, at digest: String, in batch: inout WriteBatch) {
        batch.delete(.catalog, CatalogKey.tag(name, tag).bytes)
        batch.delete(.catalog, CatalogKey.tagOfDigest(name, digest, tag).bytes)
    }

    /// The tags of image `name` pointing at `digest`, in tag order. Each is
    /// checked against its tag: deleting an artifact must never take a tag
    /// that points elsewhere, even from a reverse key gone stale (a catalog
    /// an older version wrote to again, which is not supported).
    func tags(of digest: String, in name: String) throws -> [String] {
        try tagRecords(of: digest, image: name).map(\.name)
    }

    /// Stages the listing keys of an index record that is being added (`put`) or deleted.
    func stageListings(of record: ManifestRecord, in name: String, put: Bool, in batch: inout WriteBatch) {
        for child in Set(record.children) {
            let key = CatalogKey.listing(name, child: child, record.digest).bytes
            if put { batch.put(.catalog, key, []) } else { batch.delete(.catalog, key) }
        }
    }

    /// The indexes of image `name` that list `digest`, in digest order; at
    /// most `limit`. Each is checked to be stored, as `tags(of:in:)` checks.
    func indexes(listing digest: String, in name: String, limit: Int = .max) throws -> [String] {
        var indexes: [String] = []
        try db.scan(.catalog, prefix: Key("L", name, digest).childPrefix) { key, _ in
            let index = Key.lastComponent(key)
            if try db.get(.catalog, CatalogKey.manifest(name, index).bytes) != nil { indexes.append(index) }
            return indexes.count < limit
        }
        return indexes
    }

    /// What `buildReverseKeys` wrote.
    public struct ReverseKeysBuild: Sendable, Equatable {
        /// Keys written.
        public var keys = 0
        /// Manifest records it could not decode, whose children it skipped.
        public var unreadableRecords = 0
    }

    /// Writes the reverse keys of every tag and index record when the catalog
    /// has none yet (made by an earlier version, or restored from its backup),
    /// in batches of `batchSize`, the mark that they exist last; nil when the
    /// catalog had them. `starting` runs before the first key is written.
    /// Safe to repeat after a crash: what it writes again is the same.
    @discardableResult
    public static func buildReverseKeys(
        in db: RocksDB, batchSize: Int = 10_000, starting: () -> Void = {}
    ) throws -> ReverseKeysBuild? {
        guard try db.get(.catalog, CatalogKey.reverseKeysBuilt.bytes) == nil else { return nil }
        var build = ReverseKeysBuild()
        var batch = WriteBatch()
        var pending = 0
        func add(_ key: Key) throws {
            if build.keys == 0 { starting() }
            batch.put(.catalog, key.bytes, [])
            pending += 1
            build.keys += 1
            if pending >= batchSize {
                try db.write(batch, .synced)
                batch = WriteBatch()
                pending = 0
            }
        }
        // A scan's iterator reads the catalog as it was when the scan began, so
        // the keys it adds (of other kinds anyway) do not disturb it.
        try db.scan(.catalog, prefix: Key("T").childPrefix) { key, value in
            let components = Key.components(key)
            if components.count == 2 {
                try add(CatalogKey.tagOfDigest(components[0], TagValue.decode(value).digest, components[1]))
            }
            return true
        }
        try db.scan(.catalog, prefix: Key("M").childPrefix) { key, value in
            let components = Key.components(key)
            guard components.count == 2 else { return true }
            // One damaged record must not keep the server from starting: it
            // breaks its own image, as it did before.
            guard let record = try? RecordCodec.decode(ManifestRecord.self, value) else {
                build.unreadableRecords += 1
                return true
            }
            for child in Set(record.children) { try add(CatalogKey.listing(components[0], child: child, record.digest)) }
            return true
        }
        batch.put(.catalog, CatalogKey.reverseKeysBuilt.bytes, [])
        try db.write(batch, .synced)
        return build
    }
}
