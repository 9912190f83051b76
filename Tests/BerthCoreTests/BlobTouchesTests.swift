import BerthStorage
import Foundation
import Testing

@testable import BerthCore

/// The record of blob uses stays bounded without garbage collections.
@Suite struct BlobTouchesTests {
    @Test func unknownMountsLeaveNoUseAndOldUsesAreForgotten() async throws {
        try await withScratchRegistry { registry, _ in
            _ = try await registry.createRegistry("bt")
            for i in 0..<50 {
                let digest = "sha256:" + String(repeating: String(i % 10), count: 63) + String(i / 10)
                let mounted = try await registry.mount(name: "bt/app", digest: digest, from: "bt/other")
                #expect(mounted == nil)
            }
            #expect(registry.touches.count == 0)  // nothing to mount, nothing recorded
            registry.touches.touch(registry: "bt", digest: "sha256:" + String(repeating: "a", count: 64))
            registry.forgetBlobUses(olderThan: 3600)
            #expect(registry.touches.count == 1)  // within the grace: kept
            registry.forgetBlobUses(olderThan: -1)
            #expect(registry.touches.count == 0)
        }
    }

    @Test func failedCompletionsLeaveNoUse() async throws {
        try await withScratchRegistry { registry, _ in
            _ = try await registry.createRegistry("bt")
            for i in 0..<20 {
                let upload = try await registry.startUpload(name: "bt/app")
                let madeUp = "sha256:" + String(repeating: String(i % 10), count: 63) + String(i / 10)
                await #expect(throws: RegistryError.self) { try await registry.completeUpload(name: "bt/app", id: upload.id, digest: madeUp) }
            }
            #expect(registry.touches.count == 0)  // no digest was verified
            let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            let upload = try await registry.startUpload(name: "bt/app")
            _ = try await registry.completeUpload(name: "bt/app", id: upload.id, digest: empty)
            #expect(registry.touches.count == 1)
        }
    }
}
