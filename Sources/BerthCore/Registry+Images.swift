import BerthStorage
import Foundation

/// An image as the admin API shows it.
public struct ImageSummary: Sendable {
    public var record: RepositoryRecord
    public var artifacts: Int
    public var tags: Int
    public var pulls: PullRecord
}

/// An artifact (one manifest) as the admin API shows it.
public struct ArtifactSummary: Sendable {
    public var record: ManifestRecord
    /// Sum of config and layer sizes; for an index, of its children's.
    public var size: Int64
    public var tags: [String]
    public var pulls: PullRecord
    public var platforms: [Platform]
    public var referrers: Int
}

/// The config of an image artifact, summarised.
public struct ConfigSummary: Sendable {
    public var os: String?
    public var architecture: String?
    public var created: String?
    public var labels: [String: String]
}

/// Registry contents counted for the usage endpoint.
public struct RegistryUsage: Sendable {
    public var logicalBytes: Int64
    public var blobs: Int
    public var images: Int
    public var artifacts: Int
    public var tags: Int
}

public enum ImageOrder: String, Sendable {
    case name, updated, pulls
}

extension Registry {
    // MARK: Usage

    public func usage(registry name: String) throws -> RegistryUsage {
        _ = try requireRegistry(name)
        func count(_ kind: Character) throws -> Int {
            var n = 0
            try db.scan(.catalog, prefix: Key(kind, name + "/").bytes) { _, _ in
                n += 1
                return true
            }
            return n
        }
        let bucket = objects.usage(bucket: name)
        return RegistryUsage(
            logicalBytes: bucket.bytes, blobs: bucket.objects, images: try count("I"), artifacts: try count("M"),
            tags: try count("T"))
    }

    // MARK: Images

    /// The image with its counts, or `NAME_UNKNOWN`.
    public func image(_ name: String) throws -> ImageSummary {
        try summary(try requireImage(name))
    }

    /// When the registry of repository `name` was created, or `NAME_UNKNOWN`:
    /// what a write into it checks it still is (`write(_:events:into:created:)`).
    func registryCreated(of name: String) throws -> Date {
        try requireRegistry(try Names.splitRepository(name).registry).created
    }

    /// The image's record, or `NAME_UNKNOWN`: an existence check that counts nothing.
    public func requireImage(_ name: String) throws -> RepositoryRecord {
        let (registryName, _) = try Names.splitRepository(name)
        _ = try requireRegistry(registryName)
        guard let record = try read(RepositoryRecord.self, CatalogKey.repository(name)) else {
            throw RegistryError(.nameUnknown, "image '\(name)' does not exist")
        }
        return record
    }

    private func summary(_ record: RepositoryRecord) throws -> ImageSummary {
        var pulls = PullRecord(count: 0, last: nil)
        var tags = 0
        try db.scan(.catalog, prefix: Key("T", record.name).childPrefix) { _, _ in
            tags += 1
            return true
        }
        var digests: [String] = []
        try db.scan(.catalog, prefix: Key("M", record.name).childPrefix) { key, _ in
            digests.append(Key.lastComponent(key))
            return true
        }
        for digest in digests { pulls = PullStatistics.merge(pulls, try pullRecord(name: record.name, digest: digest)) }
        return ImageSummary(record: record, artifacts: digests.count, tags: tags, pulls: pulls)
    }

    /// Images of a registry whose name contains `query`, in `order`, one page
    /// at a time. The cursor (``ListCursor``) names the last image listed, so
    /// images deleted between pages skip nothing.
    public func images(registry name: String, query: String?, order: ImageOrder, cursor: String?, limit: Int) throws -> Page<ImageSummary> {
        _ = try requireRegistry(name)
        let prefix = Key("I", name + "/").bytes
        func matches(_ key: UnsafeRawBufferPointer) -> Bool {
            guard let query, !query.isEmpty else { return true }
            return String(decoding: key[prefix.count...], as: UTF8.self).contains(query)
        }
        let after = try ListCursor(parsing: cursor)
        if order == .name {
            // Keys are in name order and hold the names: the scan starts past
            // the cursor's image and stops one past the page.
            let start = after.map { CatalogKey.repository("\(name)/\($0.name)").bytes }
            let listed = try page(prefix: prefix, after: start, limit: limit) { key, value -> (RepositoryRecord, String)? in
                guard matches(key) else { return nil }
                let record = try RecordCodec.decode(RepositoryRecord.self, value)
                return (record, ListCursor(value: 0, name: Self.imageName(record)).text)
            }
            return Page(items: try listed.items.map(summary), next: listed.next)
        }
        var records: [RepositoryRecord] = []
        try db.scan(.catalog, prefix: prefix) { key, value in
            if matches(key) { records.append(try RecordCodec.decode(RepositoryRecord.self, value)) }
            return true
        }
        if order == .updated {
            // The records hold what this order needs: only the page is summarised.
            let listed = ListCursor.page(
                records.map { (ListCursor(value: ListCursor.milliseconds($0.updated), name: Self.imageName($0)), $0) },
                after: after, limit: limit)
            return Page(items: try listed.items.map(summary), next: listed.next)
        }
        // Pulls are summed over each image's artifacts: every image is summarised to order them.
        return ListCursor.page(
            try records.map(summary).map { (ListCursor(value: $0.pulls.count, name: Self.imageName($0.record)), $0) },
            after: after, limit: limit)
    }

    /// The image's name within its registry (`team/app` of `reg/team/app`).
    static func imageName(_ record: RepositoryRecord) -> String {
        guard let slash = record.name.firstIndex(of: "/") else { return record.name }
        return String(record.name[record.name.index(after: slash)...])
    }

    public func updateImage(
        _ name: String, shortDescription: String?, description: String?, tagsImmutable: Bool?
    ) async throws -> ImageSummary {
        if let shortDescription, shortDescription.unicodeScalars.count > 100 {  // as JSON Schema's maxLength counts
            throw InvalidRequest(message: "'short_description' is longer than 100 characters")
        }
        if let description, description.utf8.count > 64 << 10 {
            throw InvalidRequest(message: "'description' is longer than 64 KiB")
        }
        let created = try registryCreated(of: name)
        return try await locks.withLock("repository:\(name)") {
            var record = try requireImage(name)
            if let shortDescription { record.shortDescription = shortDescription }
            if let description { record.description = description }
            if let tagsImmutable { record.tagsImmutable = tagsImmutable }
            var batch = WriteBatch()
            batch.put(.catalog, CatalogKey.repository(name).bytes, RecordCodec.encode(record))
            try await write(batch, into: try Names.splitRepository(name).registry, created: created)
            return try summary(record)
        }
    }

    /// Deletes every artifact and tag of an image, then the image. Refused,
    /// changing nothing, while a protection policy covers one of its tags.
    public func deleteImage(_ name: String, actor: String? = nil) async throws {
        let (registryName, _) = try Names.splitRepository(name)
        let created = try registryCreated(of: name)
        _ = try requireImage(name)
        // One write under the image's lock and the link locks of all its blobs,
        // so a push landing meanwhile is either deleted with the rest or kept
        // whole — never a manifest gone with its blob links still counted.
        // What it holds grows with the image's distinct blobs, not its artifacts:
        // the catalog keys go by range, the artifacts' records are counted, not
        // kept, and one `image.delete` event stands for them all.
        var blobs = Set<String>()
        while true {
            let locked = blobs
            let lockNames = ["repository:\(name)"] + locked.map { "link:\(registryName)@\($0)" }
            let done = try await locks.withLocks(lockNames) { () -> Bool in
                _ = try requireImage(name)
                try requireNothingProtected(repository: name)
                var counts: [String: Int] = [:]
                var artifacts = 0
                // A sweep of the whole image: its blocks would push out of the cache the ones requests use.
                try db.scan(.catalog, prefix: Key("M", name).childPrefix, fillingCache: false) { _, value in
                    for blob in Set(try RecordCodec.decode(BlobList.self, value).blobs) { counts[blob, default: 0] += 1 }
                    artifacts += 1
                    return true
                }
                blobs = Set(counts.keys)
                guard blobs.isSubset(of: locked) else { return false }  // a push added blobs: lock them too
                var batch = WriteBatch()
                for (blob, count) in counts { try adjustLink(registry: registryName, blob: blob, by: -count, in: &batch) }
                for kind in CatalogKey.repositoryKinds where kind != "I" {
                    batch.deleteRange(.catalog, from: Key(kind, name).childPrefix, to: Key(kind, name).bytes + [1])
                }
                batch.delete(.catalog, CatalogKey.repository(name).bytes)
                var event = EventRecord("image.delete", repository: name, actor: actor)
                event.detail = Registry.jsonText(["artifacts": artifacts])
                try await write(batch, events: [event], into: registryName, created: created)
                pulls.forget(name: name)  // under the locks, before a push of the name again can count pulls
                return true
            }
            if done { break }
        }
    }

    // MARK: Artifacts

    /// An image's artifacts, newest push first; the cursor (``ListCursor``)
    /// names the last artifact listed.
    public func artifacts(image name: String, cursor: String?, limit: Int) throws -> Page<ArtifactSummary> {
        _ = try requireImage(name)
        let after = try ListCursor(parsing: cursor)
        // Every artifact's push time orders the page; only the page's records are read whole.
        var pushed: [(ListCursor, String)] = []
        try db.scan(.catalog, prefix: Key("M", name).childPrefix) { _, value in
            let record = try RecordCodec.decode(PushTime.self, value)
            pushed.append((ListCursor(value: ListCursor.milliseconds(record.created), name: record.digest), record.digest))
            return true
        }
        let listed = ListCursor.page(pushed, after: after, limit: limit)
        let items = try listed.items.compactMap { digest in
            try manifestRecord(name: name, digest: digest).map { try summary(name, $0, tags: tags(of: digest, in: name)) }
        }
        return Page(items: items, next: listed.next)
    }

    /// The part of a ``ManifestRecord`` an image's delete counts.
    private struct BlobList: Decodable {
        var blobs: [String]
    }

    /// The part of a ``ManifestRecord`` that orders artifacts: decoding no
    /// more keeps a listing of an image's many artifacts from holding their
    /// annotations and blob lists.
    private struct PushTime: Decodable {
        var digest: String
        var created: Date
    }

    public func artifact(image name: String, digest: String) async throws -> (ArtifactSummary, ManifestContent, ConfigSummary?, [Descriptor]) {
        _ = try requireImage(name)
        let parsed = try ContentDigest(parsing: digest).description
        guard let record = try manifestRecord(name: name, digest: parsed) else {
            throw RegistryError(.manifestUnknown, "artifact \(parsed) is not in image '\(name)'")
        }
        let content = try manifest(name: name, reference: parsed)
        let summary = try summary(name, record, tags: try tags(of: parsed, in: name))
        let document = try? JSONDecoder().decode(ManifestDocument.self, from: Data(content.bytes))
        return (summary, content, try await configSummary(name, document?.config), document?.layers ?? [])
    }

    func tagsByDigest(_ name: String) throws -> [String: [String]] {
        var result: [String: [String]] = [:]
        try db.scan(.catalog, prefix: Key("T", name).childPrefix) { key, value in
            result[TagValue.decode(value).digest, default: []].append(Key.lastComponent(key))
            return true
        }
        return result
    }

    private func summary(_ name: String, _ record: ManifestRecord, tags: [String]) throws -> ArtifactSummary {
        var size: Int64 = 0
        var platforms: [Platform] = []
        if let document = try manifestDocument(name, record.digest) {
            if let manifests = document.manifests {
                // An index weighs what its images weigh, each once however often it is listed.
                var seen = Set<String>()
                for child in manifests where seen.insert(child.digest).inserted {
                    size = Self.saturatingSum(size, try manifestDocument(name, child.digest).map(Self.contentSize) ?? child.size)
                }
                platforms = manifests.compactMap(\.platform)
            } else {
                size = Self.contentSize(document)
            }
        }
        var referrers = 0
        try db.scan(.catalog, prefix: Key("F", name, record.digest).childPrefix) { _, _ in
            referrers += 1
            return true
        }
        return ArtifactSummary(
            record: record, size: size, tags: tags.sorted(), pulls: try pullRecord(name: name, digest: record.digest),
            platforms: platforms, referrers: referrers)
    }

    private func manifestDocument(_ name: String, _ digest: String) throws -> ManifestDocument? {
        guard let bytes = try db.get(.catalog, CatalogKey.manifestBytes(name, digest).bytes) else { return nil }
        return try? JSONDecoder().decode(ManifestDocument.self, from: Data(bytes))
    }

    /// Config plus layers; for an index, its descriptors. Sizes come from
    /// stored manifests (checked against the blobs since pushes verify them,
    /// but older records were not): the sum saturates instead of trapping.
    static func contentSize(_ document: ManifestDocument) -> Int64 {
        let sizes = document.manifests.map { $0.map(\.size) } ?? [document.config?.size ?? 0] + (document.layers ?? []).map(\.size)
        return sizes.reduce(0, saturatingSum)
    }

    static func saturatingSum(_ a: Int64, _ b: Int64) -> Int64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b < 0 ? .min : .max) : sum
    }

    static let configSummaryLimit: Int64 = 1 << 20

    /// Reads os, architecture, created and labels from an image config blob (≤ 1 MiB).
    private func configSummary(_ name: String, _ config: Descriptor?) async throws -> ConfigSummary? {
        guard let config, config.size <= Self.configSummaryLimit,
            config.mediaType == "application/vnd.oci.image.config.v1+json"
                || config.mediaType == "application/vnd.docker.container.image.v1+json",
            let (registryName, _) = try? Names.splitRepository(name),
            let object = try objects.object(bucket: registryName, digest: config.digest),
            // The blob's own size, not the descriptor's claim, bounds what is read.
            object.size <= Self.configSummaryLimit
        else { return nil }
        var bytes: [UInt8] = []
        for try await buffer in objects.read(object, range: 0..<object.size) { bytes.append(contentsOf: buffer.readableBytesView) }
        struct ImageConfig: Decodable {
            struct Inner: Decodable { var Labels: [String: String]? }
            var os: String?
            var architecture: String?
            var created: String?
            var config: Inner?
        }
        guard let parsed = try? JSONDecoder().decode(ImageConfig.self, from: Data(bytes)) else {
            return nil
        }
        return ConfigSummary(
            os: parsed.os, architecture: parsed.architecture, created: parsed.created, labels: parsed.config?.Labels ?? [:])
    }

    // MARK: Tags

    /// Tags of an image whose name contains `query`, in name order, after `cursor` (a tag name).
    public func tagRecords(image name: String, query: String?, after cursor: String?, limit: Int) throws -> Page<TagRecord> {
        _ = try requireImage(name)
        return try page(
            prefix: Key("T", name).childPrefix, after: cursor.map { CatalogKey.tag(name, $0).bytes }, limit: limit
        ) { key, value in
            let tag = Key.lastComponent(key)
            guard query.map({ $0.isEmpty || tag.contains($0) }) ?? true else { return nil }
            let decoded = TagValue.decode(value)
            return (TagRecord(name: tag, digest: decoded.digest, updated: decoded.updated), tag)
        }
    }

    /// The tags of image `name` that point at `digest`, in tag order: read
    /// through the digest's reverse keys, so the cost is that artifact's tags,
    /// not the image's.
    public func tagRecords(of digest: String, image name: String) throws -> [TagRecord] {
        var tags: [String] = []
        try db.scan(.catalog, prefix: Key("G", name, digest).childPrefix) { key, _ in
            tags.append(Key.lastComponent(key))
            return true
        }
        return try tags.compactMap { tag in
            guard let value = try db.get(.catalog, CatalogKey.tag(name, tag).bytes).map(TagValue.decode), value.digest == digest
            else { return nil }
            return TagRecord(name: tag, digest: value.digest, updated: value.updated)
        }
    }

    /// Points `tag` at an artifact of the image, with the rules of a push.
    public func setTag(image name: String, tag: String, digest: String, actor: String? = nil) async throws -> TagRecord {
        try Names.validateTag(tag)
        let parsed = try ContentDigest(parsing: digest).description
        let created = try registryCreated(of: name)
        _ = try requireImage(name)
        return try await locks.withLock("repository:\(name)") {
            guard try manifestRecord(name: name, digest: parsed) != nil else {
                throw RegistryError(.manifestUnknown, "artifact \(parsed) is not in image '\(name)'")
            }
            let repository = try requireImage(name)
            if let current = try db.get(.catalog, CatalogKey.tag(name, tag).bytes).map(TagValue.decode),
                current.digest == parsed
            {
                return TagRecord(name: tag, digest: parsed, updated: current.updated)  // already so: nothing changes
            }
            let previous = try checkTagMove(repository, tag: tag, digest: parsed)
            let now = Date()
            var batch = WriteBatch()
            stageTag(tag, of: name, at: parsed, replacing: previous, updated: now, in: &batch)
            var updated = repository
            updated.updated = now
            batch.put(.catalog, CatalogKey.repository(name).bytes, RecordCodec.encode(updated))
            try await write(
                batch, events: [EventRecord("tag.create", repository: name, digest: parsed, tag: tag, actor: actor)],
                into: try Names.splitRepository(name).registry, created: created)
            return TagRecord(name: tag, digest: parsed, updated: now)
        }
    }
}

extension Registry {
    /// A JSON object as text, for event details.
    static func jsonText(_ object: [String: Any]) -> String {
        String(decoding: JSONText.bytes(object), as: UTF8.self)
    }
}
