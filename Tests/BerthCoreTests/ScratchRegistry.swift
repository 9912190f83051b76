import BerthStorage
import Foundation

@testable import BerthCore

/// Runs `body` with a registry over a store in a fresh temporary directory,
/// then shuts the store down and removes the directory.
func withScratchRegistry(_ body: (Registry, Store) async throws -> Void) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-core-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try Store(directory: directory, threads: 2)
    try await body(try Registry(store: store), store)
    try await store.shutdown()
}
