import BerthStorage
import Crypto
import Foundation
import NIOCore
import Testing

@testable import BerthCore

/// The delete a cleanup run makes happens only if what it decided from still
/// holds under the image's lock (docs/lifecycle.md, "Runs, schedules and details").
@Suite struct ConditionalDeleteTests {
    private static let emptyConfig: [UInt8] = Array("{}".utf8)
    private static var emptyDigest: String { "sha256:" + SHA256.hash(data: emptyConfig).map { String(format: "%02x", $0) }.joined() }

    private func withRegistry(_ body: (Registry) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-cd-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try Store(directory: directory, threads: 2)
        let registry = try Registry(store: store)
        _ = try await registry.createRegistry("cd")
        try await uploadConfig(registry)
        try await body(registry)
        try await store.shutdown()
    }

    private func uploadConfig(_ registry: Registry) async throws {
        let upload = try await registry.startUpload(name: "cd/app")
        let bytes = AsyncStream<ByteBuffer> { $0.yield(ByteBuffer(bytes: Self.emptyConfig)); $0.finish() }
        _ = try await registry.appendUpload(name: "cd/app", id: upload.id, start: nil, expectedLength: nil, body: bytes)
        _ = try await registry.completeUpload(name: "cd/app", id: upload.id, digest: Self.emptyDigest)
    }

    /// What a cleanup run decided from, in the registry as it is now.
    private func precondition(_ registry: Registry, tags: Set<String>) throws -> DeletePrecondition {
        DeletePrecondition(tags: tags, registryCreated: try registry.requireRegistry("cd").created)
    }

    /// Pushes an image manifest (distinct per `label`) by `reference`; returns its digest.
    private func push(_ registry: Registry, _ label: String, as reference: String? = nil) async throws -> String {
        let json = """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\(Self.emptyDigest)","size":2},\
            "layers":[],"annotations":{"label":"\(label)"}}
            """
        let digest = "sha256:" + SHA256.hash(data: Array(json.utf8)).map { String(format: "%02x", $0) }.joined()
        _ = try await registry.putManifest(
            name: "cd/app", reference: reference ?? digest, bytes: Array(json.utf8), contentType: "application/vnd.oci.image.manifest.v1+json")
        return digest
    }

    private func exists(_ registry: Registry, _ digest: String) -> Bool {
        (try? registry.manifest(name: "cd/app", reference: digest)) != nil
    }

    private func expectChanged(_ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("the delete went ahead")
        } catch let error as LifecycleError {
            #expect(error.code == "CHANGED")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func protectionAsACleanupRunReadItHoldsAfterItIsDisabledOrNarrowed() async throws {
        try await withRegistry { registry in
            let digest = try await push(registry, "a", as: "v1")
            let policy = try await registry.createProtectionPolicy(
                registry: "cd", changes: PolicyChanges(imagePattern: "app", tagPattern: "v*"))
            let atStart = try registry.protectionPolicies(registry: "cd").filter(\.enabled)
            _ = try await registry.updateProtectionPolicy(registry: "cd", id: policy.id, changes: PolicyChanges(enabled: false))
            #expect(try registry.protection(repository: "cd/app", digest: digest) == nil)
            let (kept, tag) = try #require(try registry.protection(repository: "cd/app", digest: digest, alsoApplying: atStart))
            #expect(kept.id == policy.id && tag == "v1")
            // Narrowed and enabled again: the version the run read still protects v1.
            _ = try await registry.updateProtectionPolicy(
                registry: "cd", id: policy.id, changes: PolicyChanges(tagPattern: "release-*", enabled: true))
            #expect(try registry.protection(repository: "cd/app", digest: digest) == nil)
            #expect(try registry.protection(repository: "cd/app", digest: digest, alsoApplying: atStart)?.0.id == policy.id)
            // A policy added or widened now protects whatever the run read at its start.
            _ = try await registry.updateProtectionPolicy(registry: "cd", id: policy.id, changes: PolicyChanges(tagPattern: "*"))
            #expect(try registry.protection(repository: "cd/app", digest: digest, alsoApplying: [])?.0.id == policy.id)
        }
    }

    @Test func deletesWhenUnchanged() async throws {
        try await withRegistry { registry in
            let digest = try await push(registry, "a", as: "v1")
            try await registry.deleteManifest(
                name: "cd/app", reference: digest, actor: nil, ifUnchanged: try precondition(registry, tags: ["v1"]))
            #expect(!exists(registry, digest))
        }
    }

    @Test func keepsAnArtifactTaggedMeanwhile() async throws {
        try await withRegistry { registry in
            let digest = try await push(registry, "b", as: "v2")
            _ = try await registry.setTag(image: "cd/app", tag: "stable", digest: digest)
            await expectChanged {
                try await registry.deleteManifest(
                    name: "cd/app", reference: digest, actor: nil, ifUnchanged: try precondition(registry, tags: ["v2"]))
            }
            #expect(exists(registry, digest))
            #expect(try registry.tags(name: "cd/app", after: nil, limit: 10).items == ["stable", "v2"])
        }
    }

    /// Whatever rule decided (an untagged one, or a tagged one a keep rule
    /// dropped), an index listing the artifact since keeps it.
    @Test(arguments: [[], ["v3"]] as [[String]])
    func keepsAnArtifactAnIndexListsMeanwhile(tags: [String]) async throws {
        try await withRegistry { registry in
            let child = try await push(registry, "c", as: tags.first)
            let index = """
                {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(child)","size":1,\
                "platform":{"architecture":"amd64","os":"linux"}}]}
                """
            // The size must be the child's: take it from the stored bytes.
            let size = try registry.manifest(name: "cd/app", reference: child).bytes.count
            let fixed = index.replacingOccurrences(of: "\"size\":1,", with: "\"size\":\(size),")
            _ = try await registry.putManifest(
                name: "cd/app", reference: "multi", bytes: Array(fixed.utf8), contentType: "application/vnd.oci.image.index.v1+json")
            await expectChanged {
                try await registry.deleteManifest(
                    name: "cd/app", reference: child, actor: nil, ifUnchanged: try precondition(registry, tags: Set(tags)))
            }
            #expect(exists(registry, child))
        }
    }

    /// A push of the artifact again since the decision moves its push time: kept.
    @Test func keepsAnArtifactPushedAgainMeanwhile() async throws {
        try await withRegistry { registry in
            let digest = try await push(registry, "f", as: "v1")
            var decided = try precondition(registry, tags: ["v1"])
            decided.pushed = try registry.manifestRecord(name: "cd/app", digest: digest)?.created
            try await Task.sleep(for: .milliseconds(5))  // a later push time
            #expect(try await push(registry, "f", as: "v1") == digest)
            await expectChanged {
                try await registry.deleteManifest(name: "cd/app", reference: digest, actor: nil, ifUnchanged: decided)
            }
            #expect(exists(registry, digest))
        }
    }

    /// An artifact someone else deleted since the decision is reported as changed,
    /// not as deleted by the run (nor as a failure).
    @Test func reportsAnArtifactDeletedMeanwhileAsChanged() async throws {
        try await withRegistry { registry in
            let digest = try await push(registry, "e", as: "v1")
            let decided = try precondition(registry, tags: ["v1"])
            try await registry.deleteManifest(name: "cd/app", reference: digest, actor: nil)
            await expectChanged {
                try await registry.deleteManifest(name: "cd/app", reference: digest, actor: nil, ifUnchanged: decided)
            }
        }
    }

    /// A decision made in a registry deleted since deletes nothing in one created again under its name.
    @Test func leavesARegistryCreatedAgainUnderTheName() async throws {
        try await withRegistry { registry in
            let digest = try await push(registry, "d", as: "v1")
            let decided = try precondition(registry, tags: ["v1"])
            try await registry.deleteRegistry("cd", force: true)
            try await Task.sleep(for: .milliseconds(5))  // a later creation time
            _ = try await registry.createRegistry("cd")
            try await uploadConfig(registry)
            #expect(try await push(registry, "d", as: "v1") == digest)
            do {
                try await registry.deleteManifest(name: "cd/app", reference: digest, actor: nil, ifUnchanged: decided)
                Issue.record("the delete went ahead")
            } catch let error as RegistryError {
                #expect(error.code == .nameUnknown)
            }
            #expect(exists(registry, digest))
        }
    }
}
