import BerthStorage
import Foundation

/// A registry: a named unit owning images, settings and one bucket.
public struct RegistryRecord: Codable, Sendable, Equatable {
    public var name: String
    public var created: Date
    public var publicURIEnabled: Bool = true
    public var anonymousPull: Bool = false
    /// Cron expression of the registry's cleanup runs.
    public var cleanupSchedule: String?
}

/// An image (repository) inside a registry. `name` is the full `<registry>/<image>`.
public struct RepositoryRecord: Codable, Sendable, Equatable {
    public var name: String
    public var created: Date
    public var updated: Date
    /// At most 100 characters.
    public var shortDescription: String?
    /// Markdown.
    public var description: String?
    /// When true, a tag never moves to another digest once set.
    public var tagsImmutable: Bool?
}

/// A tag's stored value: the digest it points at and when it was last set.
enum TagValue {
    static func encode(digest: String, updated: Date) -> [UInt8] {
        Array(digest.utf8) + [0] + Array(String(Int64(updated.timeIntervalSince1970 * 1000)).utf8)
    }

    static func decode(_ bytes: some Collection<UInt8>) -> (digest: String, updated: Date?) {
        let parts = bytes.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
        let digest = String(decoding: parts[0], as: UTF8.self)
        let millis = parts.count > 1 ? Double(String(decoding: parts[1], as: UTF8.self)) : nil
        return (digest, millis.map { Date(timeIntervalSince1970: $0 / 1000) })
    }
}

/// A tag as listed.
public struct TagRecord: Sendable, Equatable {
    public var name: String
    public var digest: String
    public var updated: Date?
}

/// Pull statistics of one artifact.
public struct PullRecord: Codable, Sendable, Equatable {
    public var count: Int64
    public var last: Date?
    /// The flush that wrote this record (``PullStatistics``); nil in memory.
    var flush: PullFlush?

    public init(count: Int64, last: Date?) {
        self.count = count
        self.last = last
    }
}

/// Which flush of which server run wrote a ``PullRecord``.
struct PullFlush: Codable, Sendable, Equatable {
    /// Random per server run, so a record from an earlier run reads as older than every flush of this one.
    var run: String
    var generation: UInt64
}

/// A stored manifest (an artifact); its bytes live beside it.
public struct ManifestRecord: Codable, Sendable, Equatable {
    public var digest: String
    public var mediaType: String
    public var size: Int
    public var artifactType: String?
    public var subject: String?
    public var annotations: [String: String]?
    public var blobs: [String]
    public var children: [String]
    /// When it was last pushed (`pushed_at`): a push of the same digest again moves it.
    public var created: Date
}

/// A manifest's bytes and type, ready to serve.
public struct ManifestContent: Sendable {
    public var digest: String
    public var mediaType: String
    public var bytes: [UInt8]
}

/// One page of a listing and the key to continue after it.
public struct Page<Item: Sendable>: Sendable {
    public var items: [Item]
    /// The `last` value for the next page, when there is one.
    public var next: String?
}

/// Key schema of the `catalog` column family. `<name>` is the full
/// `<registry>/<image>`; registry names hold no `/`, so `<registry>/` is the
/// prefix of all of a registry's images.
enum CatalogKey {
    static func registry(_ name: String) -> Key { Key("R", name) }
    static func repository(_ name: String) -> Key { Key("I", name) }
    static func manifest(_ name: String, _ digest: String) -> Key { Key("M", name, digest) }
    static func manifestBytes(_ name: String, _ digest: String) -> Key { Key("m", name, digest) }
    static func tag(_ name: String, _ tag: String) -> Key { Key("T", name, tag) }
    static func referrer(_ name: String, subject: String, _ digest: String) -> Key { Key("F", name, subject, digest) }
    static func pulls(_ name: String, _ digest: String) -> Key { Key("P", name, digest) }
    /// A tag of an artifact: the reverse of `tag` (see Registry+ReverseKeys.swift).
    static func tagOfDigest(_ name: String, _ digest: String, _ tag: String) -> Key { Key("G", name, digest, tag) }
    /// An index listing a manifest: the reverse of the index record's children.
    static func listing(_ name: String, child: String, _ index: String) -> Key { Key("L", name, child, index) }
    /// Present once the catalog holds the reverse keys `tagOfDigest` and `listing`.
    static let reverseKeysBuilt = Key("V", "reverse-keys")
    /// How many manifests of a registry reference a blob.
    static func blobLink(_ registry: String, _ digest: String) -> Key { Key("K", registry, digest) }
    /// A protection ("Q") or cleanup ("C") policy: `RegistryPolicy.keyKind`.
    static func policy<P: RegistryPolicy>(_ type: P.Type, _ registry: String, _ id: String) -> Key { Key(P.keyKind, registry, id) }
    /// The parent of a registry's policies of one kind.
    static func policies<P: RegistryPolicy>(_ type: P.Type, _ registry: String) -> Key { Key(P.keyKind, registry) }
    /// A registry whose deletion has committed and whose bucket and roles may
    /// still be to release: what tells a deletion cut short from a creation
    /// cut short, whose bucket is all it left.
    static func deletion(_ registry: String) -> Key { Key("D", registry) }
    /// A job schedule of the appliance (`gc`).
    static func schedule(_ job: String) -> Key { Key("S", job) }
    /// Record kinds keyed by registry name as their first component.
    static let registryKinds: [Character] = ["K", "Q", "C"]
    /// Every record kind stored under a repository name, for bulk deletes.
    static let repositoryKinds: [Character] = ["I", "M", "m", "T", "G", "L", "F", "P"]
}
