import BerthStorage
import Crypto
import Foundation
import NIOCore
import Testing

@testable import BerthCore

/// A registry delete removes the catalog's records, then empties the bucket
/// blob by blob; these tests cut it between the two, as a crash would.
@Suite struct InterruptedDeletionTests {
    private static let bytes: [UInt8] = Array("{\"cut\":true}".utf8)
    private static var digest: String { "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    /// A registry `gone` holding one blob whose record, alone, was deleted;
    /// user `alice` held roles on `gone` and on `planned`, which was never created.
    /// `marked: false` is a deletion cut short by a version that wrote no deletion mark.
    private func withCutShortDelete(marked: Bool = true, _ body: (Registry, Store, Identity) async throws -> Void) async throws {
        try await withRoles(user: "alice", [(.admin, "gone"), (.viewer, "planned")]) { registry, store, identity in
            _ = try await registry.createRegistry("gone")
            _ = try await registry.createRegistry("kept")
            for name in ["gone/app", "kept/app"] {
                let upload = try await registry.startUpload(name: name)
                let body = AsyncStream<ByteBuffer> { $0.yield(ByteBuffer(bytes: Self.bytes)); $0.finish() }
                _ = try await registry.appendUpload(name: name, id: upload.id, start: nil, expectedLength: nil, body: body)
                _ = try await registry.completeUpload(name: name, id: upload.id, digest: Self.digest)
            }
            // The deletion's catalog batch, as `deleteRegistry` writes it: the record goes, the mark comes.
            var batch = WriteBatch()
            batch.delete(.catalog, CatalogKey.registry("gone").bytes)
            if marked { batch.put(.catalog, CatalogKey.deletion("gone").bytes, []) }
            try store.db.write(batch, .synced)
            #expect(try registry.registry("gone") == nil)
            #expect(store.objects.usage(bucket: "gone").objects == 1)
            try await body(registry, store, identity)
        }
    }

    /// A registry whose deletion releases `user`'s roles, each `(role, registry)` bound to them.
    private func withRoles(
        user: String, _ roles: [(Role, String)], _ body: (Registry, Store, Identity) async throws -> Void
    ) async throws {
        try await withScratchRegistry { _, store in
            let identity = try Identity(store: store)
            let registry = try Registry(store: store, releaseRegistry: identity.releaseRegistry)
            _ = try await identity.createUser(user)
            for (role, name) in roles { _ = try await identity.addBinding(user: user, RoleBinding(role: role, registry: name)) }
            try await body(registry, store, identity)
        }
    }

    @Test func aNewRegistryOfTheSameNameStartsEmpty() async throws {
        try await withCutShortDelete { registry, store, identity in
            _ = try await registry.createRegistry("gone")
            #expect(identity.bindings(user: "alice").map(\.id) == ["viewer@planned"])
            #expect(throws: RegistryError.self) { try registry.blob(name: "gone/app", digest: Self.digest) }
            #expect(store.objects.usage(bucket: "gone").objects == 0)
            #expect(try registry.blob(name: "kept/app", digest: Self.digest).size == Int64(Self.bytes.count))
        }
    }

    /// A creation cut short between its bucket and its record leaves an empty
    /// bucket and no deletion mark: it is emptied, and roles bound to the name
    /// ahead of the registry stay, for maintenance and for a creation alike.
    @Test func aCreationCutShortReleasesNothing() async throws {
        try await withRoles(user: "bob", [(.uploader, "team"), (.viewer, "later")]) { registry, store, identity in
            for name in ["team", "later"] { try await store.objects.createBucket(name) }
            let finished: [String] = try await registry.finishInterruptedDeletions()
            #expect(finished.isEmpty)
            #expect(try store.objects.buckets().isEmpty)
            try await store.objects.createBucket("team")
            _ = try await registry.createRegistry("team")
            #expect(identity.bindings(user: "bob").map(\.id).sorted() == ["uploader@team", "viewer@later"])
        }
    }

    @Test(arguments: [true, false])
    func maintenanceEmptiesBucketsNoRegistryOwns(marked: Bool) async throws {
        try await withCutShortDelete(marked: marked) { registry, store, identity in
            #expect(identity.bindings(user: "alice").count == 2)
            let finished: [String] = try await registry.finishInterruptedDeletions()
            #expect(finished == ["gone"])
            // The roles on the deleted registry go; a role on one not created yet stays.
            #expect(identity.bindings(user: "alice").map(\.id) == ["viewer@planned"])
            let buckets: [String] = try store.objects.buckets()
            #expect(buckets == ["kept"])
            #expect(store.objects.usage().logicalBytes == Int64(Self.bytes.count))
            let again: [String] = try await registry.finishInterruptedDeletions()
            #expect(again.isEmpty)
            let kept = try registry.blob(name: "kept/app", digest: Self.digest)
            #expect(kept.size == Int64(Self.bytes.count))
        }
    }
}
