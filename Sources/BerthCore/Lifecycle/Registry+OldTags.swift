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
    /// left out. The cursor is an offset.
    public func oldTags(registry registryName: String, before: Date, excludeLatest: Bool, cursor: String?, limit: Int) throws -> Page<OldTag> {
        _ = try requireRegistry(registryName)
        var byImage: [(name: String, tags: [TagRecord])] = []
        try db.scan(.catalog, prefix: Key("T", registryName + "/").bytes) { key, value in
            let components = Key.components(key)
            let name = components[0]
            let decoded = TagValue.decode(value)
            let record = TagRecord(name: components[1], digest: decoded.digest, updated: decoded.updated)
            if byImage.last?.name == name {
                byImage[byImage.count - 1].tags.append(record)
            } else {
                byImage.append((name, [record]))
            }
            return true
        }
        var result: [OldTag] = []
        for (name, tags) in byImage {
            let latest = excludeLatest
                ? tags.max { ($0.updated ?? .distantPast, $0.name) < ($1.updated ?? .distantPast, $1.name) }?.name : nil
            let image = String(name.dropFirst(registryName.count + 1))
            let (_, policies) = try protections(repository: name)
            for tag in tags where tag.name != latest && (tag.updated ?? .distantPast) < before {
                result.append(
                    OldTag(
                        image: image, tag: tag.name, digest: tag.digest, updated: tag.updated,
                        protected: policies.contains { $0.covers(tag: tag.name) }))
            }
        }
        var offset = 0
        if let cursor {
            guard let parsed = Int(cursor), parsed >= 0 else { throw InvalidRequest(message: "'cursor' must be the next_cursor of a previous page, got '\(cursor)'") }
            offset = parsed
        }
        let page = Array(result.dropFirst(offset).prefix(limit))
        return Page(items: page, next: offset + page.count < result.count ? String(offset + page.count) : nil)
    }

    /// Deletes a chosen set of tags in one write: all of them, or — when one
    /// is unknown or protected — none.
    public func deleteTags(registry registryName: String, _ tags: [(image: String, tag: String)], actor: String?) async throws -> Int {
        _ = try requireRegistry(registryName)
        let names = Set(tags.map { registryName + "/" + $0.image })
        return try await locks.withLocks(names.map { "repository:\($0)" }) {
            var batch = WriteBatch()
            var events: [EventRecord] = []
            var seen = Set<String>()
            for (image, tag) in tags {
                let name = registryName + "/" + image
                guard seen.insert(name + ":" + tag).inserted else { continue }
                guard (try? Names.splitRepository(name)) != nil, (try? Names.validateTag(tag)) != nil,
                    let value = try db.get(.catalog, CatalogKey.tag(name, tag).bytes)
                else {
                    throw RegistryError(.manifestUnknown, "tag '\(tag)' of image '\(image)' does not exist")
                }
                try requireUnprotected(repository: name, tag: tag)
                batch.delete(.catalog, CatalogKey.tag(name, tag).bytes)
                events.append(
                    EventRecord("tag.delete", repository: name, digest: TagValue.decode(value).digest, tag: tag, actor: actor))
            }
            try await write(batch, events: events, into: registryName)
            return events.count
        }
    }
}
