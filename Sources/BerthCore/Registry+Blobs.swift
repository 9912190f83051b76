import BerthStorage
import NIOCore

extension Registry {
    /// A blob of the repository's registry, or `BLOB_UNKNOWN`.
    public func blob(name: String, digest: String) throws -> ObjectRecord {
        let (registryName, _) = try Names.splitRepository(name)
        _ = try requireRegistry(registryName)
        let parsed = try ContentDigest(parsing: digest, forLookup: true).description
        // Read again after the touch: GC may have deleted the blob between the
        // first read and the touch, which a deletion that ended no longer marks.
        // (Touching first would record every digest anyone asks about.)
        guard try objects.object(bucket: registryName, digest: parsed) != nil,
            touches.touch(registry: registryName, digest: parsed),
            let object = try objects.object(bucket: registryName, digest: parsed)
        else {
            throw RegistryError(.blobUnknown, "blob \(digest) is not in registry '\(registryName)'", detail: digest)
        }
        return object
    }

    public func readBlob(_ object: ObjectRecord, range: Range<Int64>) -> ObjectReader {
        objects.read(object, range: range)
    }

    /// Deletes a blob no manifest of the registry references.
    public func deleteBlob(name: String, digest: String) async throws {
        let (registryName, _) = try Names.splitRepository(name)
        let object = try blob(name: name, digest: digest)
        try await locks.withLock("link:\(registryName)@\(object.digest)") {
            let links = try linkCount(registry: registryName, blob: object.digest)
            guard links == 0 else {
                throw RegistryError(
                    .conflict, "blob \(object.digest) is used by \(links) manifest(s) in registry '\(registryName)'; delete them first")
            }
            try await objects.delete(bucket: registryName, digest: object.digest)
        }
    }

    /// Cross-repository mount: makes `digest` from repository `from` (any
    /// registry) a blob of `name`'s registry without copying bytes. `nil` when
    /// it cannot be mounted.
    public func mount(name: String, digest: String, from: String) async throws -> ObjectRecord? {
        let (registryName, _) = try Names.splitRepository(name)
        let created = try requireRegistry(registryName).created
        guard let parsed = try? ContentDigest(parsing: digest).description,
            let (source, _) = try? Names.splitRepository(from),
            try registry(source) != nil,
            // Nothing to mount: no use to record either (mounts of made-up digests would grow the record).
            try objects.object(bucket: source, digest: parsed) != nil
        else { return nil }
        // Under the blob's link lock, so a GC of this registry's copy is done
        // before, or starts after (and sees the touch).
        return try await locks.withLock("link:\(registryName)@\(parsed)") {
            touches.touch(registry: registryName, digest: parsed)
            return try await whileExists(registryName, created: created) {
                try await objects.copy(digest: parsed, from: source, to: registryName)
            }
        }
    }

    // MARK: Uploads

    /// The smallest chunk an upload should be sent in (`OCI-Chunk-Min-Length`):
    /// each append rewrites the upload's partial last chunk, so smaller ones
    /// cost that rewrite per request.
    public var minimumChunkLength: Int { objects.chunkSize }

    public func startUpload(name: String) async throws -> UploadRecord {
        let (registryName, _) = try Names.splitRepository(name)
        return try await whileExists(registryName) {
            try await mapStoreErrors { try await objects.startUpload(bucket: registryName, owner: name) }
        }
    }

    /// The upload if it belongs to repository `name`, or `BLOB_UPLOAD_UNKNOWN`.
    /// An upload started before its registry was created belongs to a deleted
    /// registry of the same name, not to this one; one whose registry is gone
    /// (a delete skips an upload while a request writes to it) takes nothing more.
    public func upload(name: String, id: String) throws -> UploadRecord {
        let (registryName, _) = try Names.splitRepository(name)
        guard let record = try objects.upload(id), record.owner == name,
            try registry(registryName).map({ record.created >= $0.created }) ?? false
        else {
            throw RegistryError(.blobUploadUnknown, "upload \(id) is not in progress for '\(name)'", detail: id)
        }
        return record
    }

    public func appendUpload<Body: AsyncSequence>(
        name: String, id: String, start: Int64?, expectedLength: Int64?, body: Body
    ) async throws -> UploadRecord where Body.Element == ByteBuffer {
        _ = try upload(name: name, id: id)
        return try await mapStoreErrors {
            try await objects.append(upload: id, start: start, expectedLength: expectedLength, body: body)
        }
    }

    public func completeUpload(name: String, id: String, digest: String) async throws -> ObjectRecord {
        let (registryName, _) = try Names.splitRepository(name)
        // The registry the upload belongs to (checked next): it commits only into that one.
        let created = try requireRegistry(registryName).created
        _ = try upload(name: name, id: id)
        // A digest that does not parse changes nothing: the upload stays for a PUT with a good one.
        let parsed = try ContentDigest(parsing: digest).description
        // Under the blob's link lock: completing an upload of content the
        // registry already holds must not race GC deleting that object.
        // The touch (GC's grace for an object its manifest is not yet linked
        // to) follows the digest check: a client's made-up digests add none.
        return try await locks.withLock("link:\(registryName)@\(parsed)") {
            let object = try await whileExists(registryName, created: created) {
                try await mapStoreErrors { try await objects.complete(upload: id, digest: parsed) }
            }
            touches.touch(registry: registryName, digest: parsed)
            return object
        }
    }

    public func cancelUpload(name: String, id: String) async throws {
        _ = try upload(name: name, id: id)
        try await mapStoreErrors { try await objects.cancel(upload: id) }
    }

    func mapStoreErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ObjectStoreError {
            throw Self.registryError(error)
        }
    }

    static func registryError(_ error: ObjectStoreError) -> RegistryError {
        switch error {
        case .bucketUnknown(let bucket):
            return RegistryError(.nameUnknown, "registry '\(bucket)' does not exist")
        case .uploadUnknown(let id):
            return RegistryError(.blobUploadUnknown, "upload \(id) is not in progress", detail: id)
        case .rangeMismatch(let current):
            return RegistryError(
                .rangeInvalid, "chunk must start at byte \(current), the upload's current size",
                detail: "current size \(current)")
        case .digestMismatch(let expected, let actual):
            return RegistryError(
                .digestInvalid, "content digest is \(actual), not \(expected); the upload was discarded", detail: expected)
        case .tooLarge(let limit):
            return RegistryError(.sizeInvalid, "blob exceeds the size limit of \(limit) bytes", detail: "\(limit)", status: 413)
        case .overlong(let expected):
            return RegistryError(
                .sizeInvalid, "body goes on past the \(expected) bytes its Content-Length or Content-Range declares",
                detail: "\(expected)")
        case .incomplete(let expected, let received):
            return RegistryError(
                .sizeInvalid, "body ended after \(received) of \(expected) declared bytes", detail: "\(received)")
        case .unsupportedDigest(let digest):
            return RegistryError(.digestInvalid, "digest \(digest) is not supported (sha256 only)")
        case .tooManyUploads(let limit):
            return RegistryError(
                .tooManyRequests, "the registry has \(limit) uploads open; finish or cancel some, or wait for idle ones to expire",
                detail: "\(limit)")
        case .insufficientSpace(let available, let reserve):
            return RegistryError(
                .unsupported,
                "the registry's storage is full (\(available) bytes available, \(reserve) kept for its records); "
                    + "uploads resume once space is freed: delete images, then run garbage collection",
                detail: "\(available)", status: 507)
        }
    }
}
