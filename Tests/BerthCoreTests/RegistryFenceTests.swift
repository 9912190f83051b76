import BerthStorage
import Foundation
import Testing

@testable import BerthCore

/// A write lands only in the registry its operation began in: not in one
/// deleted and created again under the name while the write waited.
@Suite struct RegistryFenceTests {
    private static let emptyIndex = Array(
        #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.utf8)

    @Test func aPushWaitingOutADeleteAndCreateLandsNowhere() async throws {
        try await withScratchRegistry { registry, _ in
            _ = try await registry.createRegistry("rf")
            let push = try await registry.locks.withLock("repository:rf/app") {
                // The push checks its registry, then waits for the image's lock.
                let push = Task {
                    try await registry.putManifest(
                        name: "rf/app", reference: "v1", bytes: Self.emptyIndex,
                        contentType: "application/vnd.oci.image.index.v1+json")
                }
                try await Task.sleep(for: .milliseconds(100))
                try await registry.deleteRegistry("rf", force: true)
                try await Task.sleep(for: .milliseconds(5))  // a later creation time
                _ = try await registry.createRegistry("rf")
                return push
            }
            do {
                _ = try await push.value
                Issue.record("the push landed in the registry created since")
            } catch let error as RegistryError {
                #expect(error.code == .nameUnknown)
            }
            #expect(throws: RegistryError.self) { try registry.requireImage("rf/app") }
        }
    }
}
