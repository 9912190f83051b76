import BerthStorage
import Crypto
import Foundation
import NIOCore
import Testing

@testable import BerthCore

/// The catalog's reverse keys (tags of an artifact, indexes listing a
/// manifest) follow every write, and a catalog from before them gets them at
/// its next open.
@Suite struct ReverseKeysTests {
    private static let config: [UInt8] = Array("{}".utf8)
    private static func digest(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }
    private static let imageType = "application/vnd.oci.image.manifest.v1+json"
    private static let indexType = "application/vnd.oci.image.index.v1+json"

    private static func image(_ label: String) -> [UInt8] {
        Array(
            """
            {"schemaVersion":2,"mediaType":"\(imageType)",\
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\(digest(config))","size":2},\
            "layers":[],"annotations":{"label":"\(label)"}}
            """.utf8)
    }

    private static func index(_ children: [[UInt8]]) -> [UInt8] {
        let manifests = children.map { #"{"mediaType":"\#(imageType)","digest":"\#(digest($0))","size":\#($0.count)}"# }
        return Array(#"{"schemaVersion":2,"mediaType":"\#(indexType)","manifests":[\#(manifests.joined(separator: ","))]}"#.utf8)
    }

    private func push(_ registry: Registry, _ bytes: [UInt8], as reference: String, type: String = imageType) async throws {
        _ = try await registry.putManifest(name: "rk/app", reference: reference, bytes: bytes, contentType: type)
    }

    private func reverseKeys(_ store: Store) throws -> [String] {
        var keys: [String] = []
        for kind in ["G", "L", "V"] {
            try store.db.scan(.catalog, prefix: Array(kind.utf8)) { key, _ in
                keys.append(kind + ":" + Key.components(key).joined(separator: " "))
                return true
            }
        }
        return keys.sorted()
    }

    @Test func aCatalogWithoutThemGetsThemAtItsNextOpenAndDeletesUseThem() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-rk-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (a, b) = (Self.image("a"), Self.image("b"))
        let multi = Self.index([a, b])
        let expected: [String]
        do {
            let store = try Store(directory: directory, threads: 2)
            let registry = try Registry(store: store)
            _ = try await registry.createRegistry("rk")
            let upload = try await registry.startUpload(name: "rk/app")
            let bytes = AsyncStream<ByteBuffer> { $0.yield(ByteBuffer(bytes: Self.config)); $0.finish() }
            _ = try await registry.appendUpload(name: "rk/app", id: upload.id, start: nil, expectedLength: nil, body: bytes)
            _ = try await registry.completeUpload(name: "rk/app", id: upload.id, digest: Self.digest(Self.config))
            try await push(registry, a, as: "v1")
            try await push(registry, a, as: "v2")
            try await push(registry, b, as: "moving")
            try await push(registry, a, as: "moving")  // the tag moves from b to a
            try await push(registry, multi, as: "multi", type: Self.indexType)
            expected = [
                "G:rk/app \(Self.digest(a)) moving", "G:rk/app \(Self.digest(a)) v1", "G:rk/app \(Self.digest(a)) v2",
                "G:rk/app \(Self.digest(multi)) multi",
                "L:rk/app \(Self.digest(a)) \(Self.digest(multi))", "L:rk/app \(Self.digest(b)) \(Self.digest(multi))",
                "V:reverse-keys",
            ].sorted()
            #expect(try reverseKeys(store) == expected)
            // As a version before them left the catalog.
            var batch = WriteBatch()
            for kind in ["G", "L"] { batch.deleteRange(.catalog, from: Array(kind.utf8), to: [Array(kind.utf8)[0] + 1]) }
            batch.delete(.catalog, CatalogKey.reverseKeysBuilt.bytes)
            try store.db.write(batch, .synced)
            #expect(try reverseKeys(store).isEmpty)
            try await store.shutdown()
        }
        let store = try Store(directory: directory, threads: 2)
        // A batch per key: the build writes while it scans.
        #expect(try Registry.buildReverseKeys(in: store.db, batchSize: 1) == .init(keys: 6, unreadableRecords: 0))
        #expect(try Registry.buildReverseKeys(in: store.db) == nil)
        let registry = try Registry(store: store)
        #expect(try reverseKeys(store) == expected)
        // A platform manifest an index lists is not deleted; the index is, with its tag.
        do {
            try await registry.deleteManifest(name: "rk/app", reference: Self.digest(a))
            Issue.record("a manifest an index lists was deleted")
        } catch let error as RegistryError {
            #expect(error.message.contains(Self.digest(multi)))
        }
        // Protected through the index's tag.
        _ = try await registry.createProtectionPolicy(registry: "rk", changes: PolicyChanges(imagePattern: "app", tagPattern: "mul*"))
        #expect(try registry.protection(repository: "rk/app", digest: Self.digest(b))?.tag == "multi")
        #expect(try registry.protection(repository: "rk/app", digest: Self.digest(a))?.tag == "multi")
        let policy = try #require(try registry.protectionPolicies(registry: "rk").first)
        _ = try await registry.updateProtectionPolicy(registry: "rk", id: policy.id, changes: PolicyChanges(enabled: false))
        try await registry.deleteManifest(name: "rk/app", reference: Self.digest(multi))
        try await registry.deleteManifest(name: "rk/app", reference: Self.digest(a))
        #expect(try registry.tags(name: "rk/app", after: nil, limit: 100).items.isEmpty)
        #expect(try reverseKeys(store) == ["V:reverse-keys"])
        try await store.shutdown()
    }

    private func withRegistry(_ body: (Registry, Store) async throws -> Void) async throws {
        try await withScratchRegistry { registry, store in
            _ = try await registry.createRegistry("rk")
            for image in ["rk/app", "rk/other"] { try await registry.pushBlob(Self.config, to: image) }
            try await body(registry, store)
        }
    }

    @Test func everyWriterKeepsThemAndDeletesTakeThemAway() async throws {
        try await withRegistry { registry, store in
            let (a, b) = (Self.image("a"), Self.image("b"))
            let (da, db) = (Self.digest(a), Self.digest(b))
            try await push(registry, a, as: "v1")
            try await push(registry, b, as: "v2")
            // The admin API's tag move, then the old-tags delete.
            _ = try await registry.setTag(image: "rk/app", tag: "v1", digest: db)
            #expect(try reverseKeys(store) == ["G:rk/app \(db) v1", "G:rk/app \(db) v2", "V:reverse-keys"])
            #expect(try await registry.deleteTags(registry: "rk", [TagDeletion(image: "app", tag: "v2")], actor: nil) == 1)
            #expect(try reverseKeys(store) == ["G:rk/app \(db) v1", "V:reverse-keys"])
            // An index of an index: protection reaches down both.
            let inner = Self.index([a, b])
            try await push(registry, inner, as: Self.digest(inner), type: Self.indexType)
            let outer = Array(
                #"{"schemaVersion":2,"mediaType":"\#(Self.indexType)","manifests":[{"mediaType":"\#(Self.indexType)","digest":"\#(Self.digest(inner))","size":\#(inner.count)}]}"#
                    .utf8)
            try await push(registry, outer, as: "outer", type: Self.indexType)
            _ = try await registry.createProtectionPolicy(registry: "rk", changes: PolicyChanges(imagePattern: "app", tagPattern: "out*"))
            #expect(try registry.protection(repository: "rk/app", digest: da)?.tag == "outer")
            #expect(try registry.protection(repository: "rk/app", digest: db)?.tag == "outer")  // v1 is not covered
            // Whole images and registries take theirs with them.
            _ = try await registry.putManifest(name: "rk/other", reference: "x", bytes: a, contentType: Self.imageType)
            #expect(try reverseKeys(store).contains("G:rk/other \(da) x"))
            try await registry.deleteImage("rk/other")
            #expect(try !reverseKeys(store).contains { $0.hasPrefix("G:rk/other") || $0.hasPrefix("L:rk/other") })
            let policy = try #require(try registry.protectionPolicies(registry: "rk").first)
            _ = try await registry.updateProtectionPolicy(registry: "rk", id: policy.id, changes: PolicyChanges(enabled: false))
            try await registry.deleteRegistry("rk", force: true)
            #expect(try reverseKeys(store) == ["V:reverse-keys"])
        }
    }
}
