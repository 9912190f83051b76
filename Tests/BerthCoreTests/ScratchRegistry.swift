import BerthStorage
import Crypto
import Foundation
import NIOCore

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

extension Registry {
    /// Uploads `bytes` as a blob of repository `name` in one request.
    func pushBlob(_ bytes: [UInt8], to name: String) async throws {
        let upload = try await startUpload(name: name)
        let body = AsyncStream<ByteBuffer> { $0.yield(ByteBuffer(bytes: bytes)); $0.finish() }
        _ = try await appendUpload(name: name, id: upload.id, start: nil, expectedLength: nil, body: body)
        let digest = "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        _ = try await completeUpload(name: name, id: upload.id, digest: digest)
    }
}
