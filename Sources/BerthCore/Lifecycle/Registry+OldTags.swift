import BerthStorage
import Foundation

/// A tag as the old-tag cleanup lists it.
public struct OldTag: Sendable, Equatable {
    public var image: String
    public var tag: String
    public var digest: String
    public var updated: Date?
    public var protected: Bool
}

extension Registry {
    /// Tags of the registry last changed before `before`, in image then tag
    /// order; with `excludeLatest`, each image's most recently changed tag is
    /// left out.
    ///
    /// The cursor is the last tag of the previous page, `<image>:<tag>` (neither
    /// holds a `:`), and the next page starts after it: deleting the tags of a
    /// page before asking for the next one skips nothing, as an offset would.
    /// Images are read one at a time and a page stops at `limit`, so a page
    /// holds no more than it returns; with `excludeLatest` an image's tags are
    /// read twice, once for its latest. A page also stops once it has looked
    /// at `readBudget` tags (when few tags are old, a registry of millions
    /// would otherwise be read whole by one request; the reads for an image's
    /// latest do not count, so every page gets that far): it may then hold
    /// fewer than `limit`, even none, with a cursor at the last tag looked at.
    /// Blocks: call on the pool.
    public func oldTags(
        registry registryName: String, before: Date, excludeLatest: Bool, cursor: String?, limit: Int,
        readBudget: Int = 100_000
    ) throws -> Page<OldTag> {
        _ = try requireRegistry(registryName)
        var after: (image: String, tag: String)?
        if let cursor {
            let parts = cursor.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, (try? Names.validateImage(parts[0])) != nil, (try? Names.validateTag(parts[1])) != nil else {
                throw InvalidRequest(message: "'cursor' must be the next_cursor of a previous page (<image>:<tag>), got '\(cursor)'")
            }
            after = (parts[0], parts[1])
        }
        var result: [OldTag] = []
        // Keys sort as `<registry>/<image>\0<tag>`: an image's tags are together, in tag order.
        let registryPrefix = Key("T", registryName + "/").bytes
        var next = after.map { Key("T", registryName + "/" + $0.image).bytes } ?? registryPrefix
        var read = 0
        var lastRead: (image: String, tag: String)?
        var outOfBudget = false
        while result.count <= limit, !outOfBudget {
            var name: String?
            try db.scan(.catalog, prefix: registryPrefix, from: next) { key, _ in
                name = Key.components(key)[0]
                return false
            }
            guard let name else { break }
            let image = String(name.dropFirst(registryName.count + 1))
            let tags = Key("T", name).childPrefix
            var latest: (Date, String)?
            if excludeLatest {
                try db.scan(.catalog, prefix: tags) { key, value in
                    let candidate = (TagValue.decode(value).updated ?? .distantPast, Key.lastComponent(key))
                    if latest.map({ $0 < candidate }) ?? true { latest = candidate }
                    return true
                }
            }
            let (_, policies) = try protections(repository: name)
            let from = after.flatMap { $0.image == image ? CatalogKey.tag(name, $0.tag).bytes : nil }
            try db.scan(.catalog, prefix: tags, after: from) { key, value in
                let tag = Key.lastComponent(key)
                let decoded = TagValue.decode(value)
                read += 1
                lastRead = (image, tag)
                // At least one tag is read past the cursor, so pages always move on.
                outOfBudget = read >= readBudget
                guard tag != latest?.1, (decoded.updated ?? .distantPast) < before else { return !outOfBudget }
                result.append(
                    OldTag(
                        image: image, tag: tag, digest: decoded.digest, updated: decoded.updated,
                        protected: policies.contains { $0.covers(tag: tag) }))
                return result.count <= limit && !outOfBudget
            }
            next = Key("T", name).bytes + [1]  // past this image's tags, to the next image
            after = nil
        }
        let page = Array(result.prefix(limit))
        if result.count > limit { return Page(items: page, next: page.last.map { "\($0.image):\($0.tag)" }) }
        return Page(items: page, next: outOfBudget ? lastRead.map { "\($0.image):\($0.tag)" } : nil)
    }

    /// Deletes a chosen set of tags in one write: all of them, or — when one
    /// is unknown, protected or no longer as the caller saw it — none.
    ///
    /// The conditions are checked under the images' locks, against the tags'
    /// values at that moment: a tag pushed again after it was listed (moved to
    /// another artifact, or pushed again anywhere after `before`) is refused
    /// with `CHANGED` rather than deleted.
    public func deleteTags(
        registry registryName: String, _ tags: [TagDeletion], changedBefore before: Date? = nil, actor: String?
    ) async throws -> Int {
        let created = try requireRegistry(registryName).created
        for deletion in tags { _ = try deletion.digest.map { try ContentDigest(parsing: $0) } }  // before any lock
        let names = Set(tags.map { registryName + "/" + $0.image })
        return try await locks.withLocks(names.map { "repository:\($0)" }) {
            var batch = WriteBatch()
            var events: [EventRecord] = []
            var seen = Set<String>()
            for deletion in tags {
                let (image, tag) = (deletion.image, deletion.tag)
                let name = registryName + "/" + image
                // A tag named twice is deleted once, if each entry's conditions hold.
                let first = seen.insert(name + ":" + tag).inserted
                guard (try? Names.splitRepository(name)) != nil, (try? Names.validateTag(tag)) != nil,
                    let value = try db.get(.catalog, CatalogKey.tag(name, tag).bytes)
                else {
                    throw RegistryError(.manifestUnknown, "tag '\(tag)' of image '\(image)' does not exist")
                }
                let current = TagValue.decode(value)
                if let expected = deletion.digest, current.digest != expected {
                    throw LifecycleError.changed(
                        "tag '\(tag)' of image '\(image)' points to \(current.digest) now, not \(expected): it changed since it was listed")
                }
                if let before, let updated = current.updated, updated >= before {
                    throw LifecycleError.changed(
                        "tag '\(tag)' of image '\(image)' was changed at \(Self.rfc3339(updated)), not before \(Self.rfc3339(before))")
                }
                guard first else { continue }
                try requireUnprotected(repository: name, tag: tag)
                stageTagDeletion(tag, of: name, at: current.digest, in: &batch)
                events.append(EventRecord("tag.delete", repository: name, digest: current.digest, tag: tag, actor: actor))
            }
            try await write(batch, events: events, into: registryName, created: created)
            return events.count
        }
    }

    private static func rfc3339(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

/// A tag to delete and, optionally, the artifact it must still point to.
public struct TagDeletion: Sendable, Equatable {
    public var image: String
    public var tag: String
    /// When set, the tag is deleted only if it still points to this digest.
    public var digest: String?

    public init(image: String, tag: String, digest: String? = nil) {
        self.image = image
        self.tag = tag
        self.digest = digest
    }
}
