import Foundation

/// An object in a bucket: a blob addressed by its digest, pointing at the
/// extent that holds its bytes. Several objects (in several buckets) may share one extent.
public struct ObjectRecord: Codable, Sendable, Equatable {
    public var digest: String
    public var size: Int64
    public var created: Date
    public var extent: UInt64
    public var chunkSize: Int
}

/// An immutable run of chunks, reference-counted by the objects that point at it.
public struct ExtentRecord: Codable, Sendable {
    public var digest: String
    public var size: Int64
    public var chunkSize: Int
    public var references: Int
    /// When `references` dropped to zero; the sweeper deletes it a grace period later.
    public var unreferencedSince: Date?
}

/// A bucket: the storage space of one registry.
public struct BucketRecord: Codable, Sendable {
    public var name: String
    public var created: Date
}

/// An upload in progress: bytes `0..<size` of `extent` are durable.
public struct UploadRecord: Codable, Sendable, Equatable {
    public var id: String
    public var bucket: String
    /// Free-form owner tag (the repository the upload was started for).
    public var owner: String
    public var extent: UInt64
    public var chunkSize: Int
    public var size: Int64
    public var created: Date
    public var updated: Date
}

/// Logical usage of one bucket.
public struct BucketUsage: Sendable, Equatable, Codable {
    public var objects: Int = 0
    public var bytes: Int64 = 0
    public init(objects: Int = 0, bytes: Int64 = 0) {
        self.objects = objects
        self.bytes = bytes
    }
}

/// Appliance-wide storage figures.
public struct StoreUsage: Sendable, Equatable, Codable {
    /// Sum of every bucket's logical bytes.
    public var logicalBytes: Int64
    /// Bytes held once in extents (shared layers count once).
    public var physicalBytes: Int64
    public var openUploads: Int
    public var uploadBytes: Int64

    public init(logicalBytes: Int64, physicalBytes: Int64, openUploads: Int, uploadBytes: Int64) {
        self.logicalBytes = logicalBytes
        self.physicalBytes = physicalBytes
        self.openUploads = openUploads
        self.uploadBytes = uploadBytes
    }
}

/// What can go wrong with an object-store request, in terms a caller maps to its protocol's errors.
public enum ObjectStoreError: Error, Sendable, Equatable {
    case bucketUnknown(String)
    case uploadUnknown(String)
    /// The append did not start at the upload's current size.
    case rangeMismatch(current: Int64)
    /// The content's digest was not the one claimed.
    case digestMismatch(expected: String, actual: String)
    /// The upload would exceed the size limit.
    case tooLarge(limit: Int64)
    /// The request body ended before its declared length.
    case incomplete(expected: Int64, received: Int64)
    /// The request body went on past its declared length.
    case overlong(expected: Int64)
    case unsupportedDigest(String)
    /// The bucket has as many uploads open as it may.
    case tooManyUploads(limit: Int)
    /// Writing would leave less than the reserve free (``SpaceReserve``).
    case insufficientSpace(available: Int64, reserve: Int64)
}

/// How records are stored: JSON, dates as milliseconds since 1970.
public enum RecordCodec {
    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        return Array(try! encoder.encode(value))
    }

    public static func decode<T: Decodable>(_ type: T.Type, _ bytes: some Collection<UInt8>) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return try decoder.decode(type, from: Data(bytes))
    }
}
