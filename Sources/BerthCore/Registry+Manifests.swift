import BerthStorage
import Foundation

extension Registry {
    /// Stores a manifest under `reference` (a tag or its digest) in repository
    /// `name` (`<registry>/<image>`). Every blob and child manifest it needs must be present.
    public func putManifest(
        name: String, reference: String, bytes: [UInt8], contentType: String?, actor: String? = nil
    ) async throws -> ParsedManifest {
        let (registryName, _) = try Names.splitRepository(name)
        let created = try requireRegistry(registryName).created
        let manifest = try ParsedManifest(bytes: bytes, contentType: contentType)
        var tag: String?
        if ContentDigest.isDigest(reference) {
            let claimed = try ContentDigest(parsing: reference)
            guard claimed.description == manifest.digest else {
                throw RegistryError(
                    .digestInvalid, "manifest digest is \(manifest.digest), not \(reference)")
            }
        } else {
            try Names.validateTag(reference)
            tag = reference
        }
        try requireContent(of: manifest, name: name, registry: registryName)
        let foreign = try presentForeignLayers(of: manifest, registry: registryName)
        let lockNames = ["manifest:\(name)@\(manifest.digest)", "repository:\(name)"]
            + (manifest.blobs + foreign).map { "link:\(registryName)@\($0)" }
        try await locks.withLocks(lockNames) {
            // Again under the link locks, which garbage collection takes too.
            try requireContent(of: manifest, name: name, registry: registryName)
            let linked = try presentForeignLayers(of: manifest, registry: registryName).filter(foreign.contains)
            var batch = WriteBatch()
            let now = Date()
            if var record = try read(ManifestRecord.self, CatalogKey.manifest(name, manifest.digest)) {
                // Pushed again: its push time is now's (cleanup's grace and keep rules
                // go by the last push, as a rebuild that re-pushes a platform manifest
                // expects), and foreign layers it went without are linked now.
                let added = linked.filter { !record.blobs.contains($0) }
                record.blobs += added
                record.created = now
                batch.put(.catalog, CatalogKey.manifest(name, manifest.digest).bytes, RecordCodec.encode(record))
                for blob in added { try adjustLink(registry: registryName, blob: blob, by: 1, in: &batch) }
            } else {
                let record = ManifestRecord(
                    digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.size,
                    artifactType: manifest.artifactType, subject: manifest.subject?.digest,
                    annotations: manifest.annotations, blobs: manifest.blobs + linked,
                    children: manifest.children.map(\.digest), created: now)
                batch.put(.catalog, CatalogKey.manifest(name, manifest.digest).bytes, RecordCodec.encode(record))
                batch.put(.catalog, CatalogKey.manifestBytes(name, manifest.digest).bytes, bytes)
                for blob in Set(record.blobs) {
                    try adjustLink(registry: registryName, blob: blob, by: 1, in: &batch)
                }
                stageListings(of: record, in: name, put: true, in: &batch)
                if let subject = manifest.subject {
                    let descriptor = Descriptor(
                        mediaType: manifest.mediaType, digest: manifest.digest, size: Int64(manifest.size),
                        artifactType: manifest.artifactType, annotations: manifest.annotations)
                    batch.put(
                        .catalog, CatalogKey.referrer(name, subject: subject.digest, manifest.digest).bytes,
                        RecordCodec.encode(descriptor))
                }
            }
            var repository = try read(RepositoryRecord.self, CatalogKey.repository(name))
                ?? RepositoryRecord(name: name, created: now, updated: now)
            if let tag {
                let previous = try checkTagMove(repository, tag: tag, digest: manifest.digest)
                stageTag(tag, of: name, at: manifest.digest, replacing: previous, updated: now, in: &batch)
            }
            repository.updated = now
            batch.put(.catalog, CatalogKey.repository(name).bytes, RecordCodec.encode(repository))
            try await write(
                batch, events: [EventRecord("artifact.push", repository: name, digest: manifest.digest, tag: tag, actor: actor)],
                into: registryName, created: created)
        }
        return manifest
    }

    /// Refuses to move an existing tag to another digest when the image's tags
    /// are immutable or a protection policy covers the tag; returns the digest
    /// the tag points at now, if any.
    @discardableResult
    func checkTagMove(_ repository: RepositoryRecord, tag: String, digest: String) throws -> String? {
        let current = try db.get(.catalog, CatalogKey.tag(repository.name, tag).bytes).map({ TagValue.decode($0).digest })
        guard let current, current != digest else { return current }
        if repository.tagsImmutable == true {
            throw TagImmutableError(repository: repository.name, tag: tag, current: current)
        }
        try requireUnprotected(repository: repository.name, tag: tag)
        return current
    }

    /// Adds `delta` to the count of manifests of `registry` referencing `blob`. Call with its lock held.
    func adjustLink(registry: String, blob: String, by delta: Int, in batch: inout WriteBatch) throws {
        let key = CatalogKey.blobLink(registry, blob).bytes
        let current = try db.get(.catalog, key).map { Int(String(decoding: $0, as: UTF8.self)) ?? 0 } ?? 0
        let next = current + delta
        if next <= 0 {
            batch.delete(.catalog, key)
        } else {
            batch.put(.catalog, key, Array(String(next).utf8))
        }
    }

    /// How many manifests of `registry` reference `blob`.
    public func linkCount(registry: String, blob: String) throws -> Int {
        try db.get(.catalog, CatalogKey.blobLink(registry, blob).bytes).map { Int(String(decoding: $0, as: UTF8.self)) ?? 0 } ?? 0
    }

    /// Resolves a tag or digest to a digest, or `MANIFEST_UNKNOWN`.
    public func resolve(name: String, reference: String) throws -> String {
        _ = try Names.splitRepository(name)
        if ContentDigest.isDigest(reference) {
            return try ContentDigest(parsing: reference, forLookup: true).description
        }
        // No manifest can have a reference outside the tag grammar: a lookup of
        // one is unknown (404, as the OCI conformance suite expects), not malformed.
        guard (try? Names.validateTag(reference, allowingCapitals: true)) != nil else {
            throw RegistryError(.manifestUnknown, "'\(reference)' is neither a digest nor a tag", detail: reference)
        }
        guard let value = try db.get(.catalog, CatalogKey.tag(name, reference).bytes) else {
            throw RegistryError(.manifestUnknown, "tag '\(reference)' is not in repository '\(name)'", detail: reference)
        }
        return TagValue.decode(value).digest
    }

    public func manifestRecord(name: String, digest: String) throws -> ManifestRecord? {
        try read(ManifestRecord.self, CatalogKey.manifest(name, digest), reusing: manifestRecords)
    }

    public func manifest(name: String, reference: String) throws -> ManifestContent {
        let (registryName, _) = try Names.splitRepository(name)
        _ = try requireRegistry(registryName)
        let digest = try resolve(name: name, reference: reference)
        guard let record = try manifestRecord(name: name, digest: digest),
            let bytes = try db.get(.catalog, CatalogKey.manifestBytes(name, digest).bytes)
        else {
            throw RegistryError(.manifestUnknown, "manifest \(reference) is not in repository '\(name)'", detail: reference)
        }
        return ManifestContent(digest: digest, mediaType: record.mediaType, bytes: bytes)
    }

    /// The digests of the manifest's foreign layers that the registry holds
    /// (as large as described) and that it does not need anyway. A foreign
    /// layer pushed regardless (dockerd's and crane's
    /// allow-nondistributable-artifacts) is linked like any layer, or GC would
    /// take it; one not here is left to its urls, and one gone by the time the
    /// push holds its locks is simply not linked.
    private func presentForeignLayers(of manifest: ParsedManifest, registry registryName: String) throws -> [String] {
        let needed = Set(manifest.blobs)
        return try manifest.foreignLayers.filter { layer in
            try !needed.contains(layer.digest) && objects.object(bucket: registryName, digest: layer.digest)?.size == layer.size
        }.map(\.digest)
    }

    /// Every blob and child manifest `manifest` names is here, as large as its descriptor says.
    ///
    /// A descriptor's size must match its content (image-spec, "Descriptors"); one
    /// that lies makes every client's pull fail its size check, and the admin
    /// API's image sizes are sums of these.
    private func requireContent(of manifest: ParsedManifest, name: String, registry registryName: String) throws {
        for descriptor in manifest.blobDescriptors {
            guard let object = try objects.object(bucket: registryName, digest: descriptor.digest) else {
                throw RegistryError(
                    .manifestBlobUnknown, "blob \(descriptor.digest) is not in registry '\(registryName)'", detail: descriptor.digest)
            }
            guard object.size == descriptor.size else {
                throw RegistryError(
                    .manifestInvalid, "descriptor of blob \(descriptor.digest) says \(descriptor.size) bytes; the blob has \(object.size)",
                    detail: descriptor.digest)
            }
        }
        for child in manifest.children {
            guard let record = try read(ManifestRecord.self, CatalogKey.manifest(name, child.digest)) else {
                throw RegistryError(
                    .manifestBlobUnknown, "manifest \(child.digest) is not in repository '\(name)'", detail: child.digest)
            }
            guard Int64(record.size) == child.size else {
                throw RegistryError(
                    .manifestInvalid, "descriptor of manifest \(child.digest) says \(child.size) bytes; the manifest has \(record.size)",
                    detail: child.digest)
            }
        }
    }

    /// Deletes a tag (not the manifest it points at); a digest is refused as a tag.
    public func deleteTag(name: String, tag: String, actor: String? = nil) async throws {
        try Names.validateTag(tag)
        try await deleteManifest(name: name, reference: tag, actor: actor, ifUnchanged: nil)
    }

    /// Deletes by digest (the manifest, its tags and its referrer entry) or by
    /// tag (the tag only). Protected tags and artifacts are refused.
    public func deleteManifest(name: String, reference: String, actor: String? = nil) async throws {
        try await deleteManifest(name: name, reference: reference, actor: actor, ifUnchanged: nil)
    }

    /// `deleteManifest`; with a precondition (by digest only), the delete
    /// happens only if it still holds under the lock, else `CHANGED`.
    func deleteManifest(name: String, reference: String, actor: String?, ifUnchanged precondition: DeletePrecondition?) async throws {
        let (registryName, _) = try Names.splitRepository(name)
        let current = try requireRegistry(registryName).created
        // A cleanup's delete: into the registry the run started in.
        let created = precondition?.registryCreated ?? current
        if !ContentDigest.isDigest(reference) {
            try await locks.withLock("repository:\(name)") {
                let digest = try resolve(name: name, reference: reference)
                try requireUnprotected(repository: name, tag: reference)
                var batch = WriteBatch()
                stageTagDeletion(reference, of: name, at: digest, in: &batch)
                try await write(
                    batch, events: [EventRecord("tag.delete", repository: name, digest: digest, tag: reference, actor: actor)],
                    into: registryName, created: created)
            }
            return
        }
        // As for a GET: a well-formed digest of an algorithm not stored here names nothing (404).
        let digest = try ContentDigest(parsing: reference, forLookup: true).description
        // A cleanup's delete of an artifact someone else deleted since its decision did nothing: it says so.
        func goneMeanwhile() -> LifecycleError { .changed("artifact \(digest) was deleted meanwhile by another request") }
        guard var blobs = try manifestRecord(name: name, digest: digest).map({ Set($0.blobs) }) else {
            if precondition != nil { throw goneMeanwhile() }
            throw RegistryError(.manifestUnknown, "manifest \(digest) is not in repository '\(name)'", detail: digest)
        }
        // The links to drop are those of the record as it is under the locks: a
        // push of the same digest meanwhile may have changed its blobs (a foreign
        // layer present now), and then their link locks are taken too.
        while true {
            let locked = blobs
            let lockNames = ["manifest:\(name)@\(digest)", "repository:\(name)"] + locked.map { "link:\(registryName)@\($0)" }
            let done = try await locks.withLocks(lockNames) { () -> Bool in
                guard let record = try manifestRecord(name: name, digest: digest) else {
                    if precondition != nil { throw goneMeanwhile() }
                    return true
                }
                blobs = Set(record.blobs)
                guard blobs.isSubset(of: locked) else { return false }
                try requireUnprotected(repository: name, digest: digest)
                var batch = WriteBatch()
                batch.delete(.catalog, CatalogKey.manifest(name, digest).bytes)
                batch.delete(.catalog, CatalogKey.manifestBytes(name, digest).bytes)
                for blob in blobs { try adjustLink(registry: registryName, blob: blob, by: -1, in: &batch) }
                if let subject = record.subject {
                    batch.delete(.catalog, CatalogKey.referrer(name, subject: subject, digest).bytes)
                }
                stageListings(of: record, in: name, put: false, in: &batch)
                let tags = try tags(of: digest, in: name)
                for tag in tags { stageTagDeletion(tag, of: name, at: digest, in: &batch) }
                if let precondition {
                    guard Set(tags) == precondition.tags else {
                        throw LifecycleError.changed("its tags changed since the run decided (now: \(tags.sorted().joined(separator: ", ")))")
                    }
                    if let pushed = precondition.pushed, record.created != pushed {
                        throw LifecycleError.changed("it was pushed again since the run decided")
                    }
                }
                // Deleting a platform manifest an index still lists would break
                // every pull of that platform through the index.
                if let index = try indexes(listing: digest, in: name, limit: 1).first {
                    if precondition != nil { throw LifecycleError.changed("an index of the image lists it now") }
                    throw RegistryError(
                        .conflict, "manifest \(digest) is listed by index \(index) of '\(name)': delete the index first",
                        detail: digest)
                }
                batch.delete(.catalog, CatalogKey.pulls(name, digest).bytes)
                var event = EventRecord("artifact.delete", repository: name, digest: digest, actor: actor)
                if !tags.isEmpty { event.detail = Self.jsonText(["tags": tags]) }
                try await write(batch, events: [event], into: registryName, created: created)
                pulls.forget(name: name, digest: digest)
                return true
            }
            if done { return }
        }
    }

    /// Tags of a repository in lexical order, `n` at most, after `last`.
    public func tags(name: String, after last: String?, limit: Int) throws -> Page<String> {
        let (registryName, _) = try Names.splitRepository(name)
        _ = try requireRegistry(registryName)
        let prefix = Key("T", name).childPrefix
        let page = try page(prefix: prefix, after: last.map { CatalogKey.tag(name, $0).bytes }, limit: limit) { key, _ in
            let tag = Key.lastComponent(key)
            return (tag, tag)
        }
        if page.items.isEmpty, try read(RepositoryRecord.self, CatalogKey.repository(name)) == nil {
            throw RegistryError(.nameUnknown, "repository '\(name)' does not exist", detail: name)
        }
        return page
    }

    /// Manifests whose subject is `digest`, optionally only those of
    /// `artifactType`, in digest order after the referrer `after`.
    ///
    /// A page ends once its descriptors' stored bytes reach `pageBytes` (one
    /// always fits) or `scanLimit` referrers were read, with `next` to go on
    /// from: each descriptor carries its manifest's annotations, so a subject
    /// with many large referrers would otherwise be answered from gigabytes
    /// held at once. A filtered page may be short, even empty, and still have a `next`.
    public func referrers(
        name: String, digest: String, artifactType: String?, after: String? = nil, pageBytes: Int = 4 << 20,
        scanLimit: Int = 10_000
    ) throws -> Page<Descriptor> {
        let (registryName, _) = try Names.splitRepository(name)
        _ = try requireRegistry(registryName)
        let subject = try ContentDigest(parsing: digest, forLookup: true).description
        let after = try after.map { try ContentDigest(parsing: $0, forLookup: true).description }
        var items: [Descriptor] = []
        var (lastRead, more) = (String?.none, false)
        var (bytes, scanned) = (0, 0)
        try db.scan(.catalog, prefix: Key("F", name, subject).childPrefix, after: after.map { Key("F", name, subject, $0).bytes }) {
            _, value in
            if bytes >= pageBytes || scanned == scanLimit {
                more = true
                return false
            }
            scanned += 1
            let descriptor = try RecordCodec.decode(Descriptor.self, value)
            lastRead = descriptor.digest
            if artifactType == nil || descriptor.artifactType == artifactType {
                items.append(descriptor)
                bytes += value.count
            }
            return true
        }
        return Page(items: items, next: more ? lastRead : nil)
    }
}
