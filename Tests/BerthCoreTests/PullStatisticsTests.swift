import BerthStorage
import Crypto
import Foundation
import NIOCore
import Testing

@testable import BerthCore

/// Pull counts read the same before, while and after a flush writes them.
@Suite struct PullStatisticsTests {
    private static let config: [UInt8] = Array("{}".utf8)

    private static func digest(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// Pushes one small image to `ps/app`; returns its manifest digest.
    private func pushImage(_ registry: Registry) async throws -> String {
        if try registry.registry("ps") == nil { _ = try await registry.createRegistry("ps") }
        let upload = try await registry.startUpload(name: "ps/app")
        let bytes = AsyncStream<ByteBuffer> { $0.yield(ByteBuffer(bytes: Self.config)); $0.finish() }
        _ = try await registry.appendUpload(name: "ps/app", id: upload.id, start: nil, expectedLength: nil, body: bytes)
        _ = try await registry.completeUpload(name: "ps/app", id: upload.id, digest: Self.digest(Self.config))
        let manifest = Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\(Self.digest(Self.config))","size":2},\
            "layers":[]}
            """.utf8)
        let digest = Self.digest(manifest)
        _ = try await registry.putManifest(
            name: "ps/app", reference: "v1", bytes: manifest, contentType: "application/vnd.oci.image.manifest.v1+json")
        return digest
    }

    private func count(_ registry: Registry, _ digest: String) throws -> Int64 {
        try registry.pullRecord(name: "ps/app", digest: digest).count
    }

    @Test func aFlushLandingNeitherHidesNorDoublesCounts() async throws {
        try await withScratchRegistry { registry, _ in
            let digest = try await pushImage(registry)
            for _ in 0..<3 { registry.recordPull(name: "ps/app", digest: digest) }
            try await registry.flushPulls()
            #expect(try count(registry, digest) == 3)

            for _ in 0..<2 { registry.recordPull(name: "ps/app", digest: digest) }
            let flush = registry.pulls.beginFlush()
            #expect(try count(registry, digest) == 5)  // taken, not yet written
            registry.recordPull(name: "ps/app", digest: digest)
            try await registry.writePulls(flush)
            #expect(try count(registry, digest) == 6)  // written, still in flight
            registry.pulls.endFlush(landed: true)
            #expect(try count(registry, digest) == 6)
            try await registry.flushPulls()
            #expect(try count(registry, digest) == 6)
        }
    }

    @Test func aFailedFlushKeepsItsCountsPending() async throws {
        try await withScratchRegistry { registry, _ in
            let digest = try await pushImage(registry)
            for _ in 0..<4 { registry.recordPull(name: "ps/app", digest: digest) }
            _ = registry.pulls.beginFlush()
            registry.recordPull(name: "ps/app", digest: digest)
            registry.pulls.endFlush(landed: false)
            #expect(try count(registry, digest) == 5)
            try await registry.flushPulls()
            #expect(try count(registry, digest) == 5)
        }
    }

    /// Counts of an artifact deleted while a flush holds them, then pushed
    /// again, are not passed to the new push.
    @Test func aDeleteDuringAFlushDropsItsCounts() async throws {
        try await withScratchRegistry { registry, _ in
            let digest = try await pushImage(registry)
            for _ in 0..<2 { registry.recordPull(name: "ps/app", digest: digest) }
            let flush = registry.pulls.beginFlush()
            try await registry.deleteManifest(name: "ps/app", reference: digest)
            #expect(try await pushImage(registry) == digest)
            try await registry.writePulls(flush)
            registry.pulls.endFlush(landed: true)
            #expect(try count(registry, digest) == 0)
        }
    }

    /// Pending counts of a deleted registry do not land in one created again under its name.
    @Test func aDeletedRegistrysCountsGoWithIt() async throws {
        try await withScratchRegistry { registry, _ in
            let digest = try await pushImage(registry)
            for _ in 0..<2 { registry.recordPull(name: "ps/app", digest: digest) }
            try await registry.deleteRegistry("ps", force: true)
            #expect(try await pushImage(registry) == digest)
            try await registry.flushPulls()
            #expect(try count(registry, digest) == 0)
        }
    }

    @Test func aReaderThatMissedALaterFlushLooksAgain() {
        let statistics = PullStatistics()
        statistics.record(name: "ps/app", digest: "d")
        // The reader's snapshot sees one pending pull; before it reads the
        // stored record, a whole flush takes that pull and lands.
        var stored: PullRecord?
        var reads = 0
        let total = statistics.total(name: "ps/app", digest: "d") {
            reads += 1
            if reads == 1 {
                let flush = statistics.beginFlush()
                stored = statistics.inFlight(name: "ps/app", digest: "d")
                stored?.flush = flush.mark
                statistics.endFlush(landed: true)
            }
            return stored
        }
        #expect(total.count == 1)
        #expect(reads == 2)
    }

    @Test func recordsFromAnEarlierRunCountAsStored() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-ps-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let digest: String
        do {
            let store = try Store(directory: directory, threads: 2)
            let registry = try Registry(store: store)
            digest = try await pushImage(registry)
            for _ in 0..<2 { registry.recordPull(name: "ps/app", digest: digest) }
            try await registry.flushPulls()
            try await registry.flushPulls()  // a later flush of that run, which took nothing
            try await store.shutdown()
        }
        // The next run's flush numbers start again: its first flush is still
        // the newer one, and the earlier run's counts are stored, not in flight.
        let store = try Store(directory: directory, threads: 2)
        let registry = try Registry(store: store)
        #expect(try count(registry, digest) == 2)
        registry.recordPull(name: "ps/app", digest: digest)
        let flush = registry.pulls.beginFlush()
        #expect(try count(registry, digest) == 3)
        try await registry.writePulls(flush)
        #expect(try count(registry, digest) == 3)
        registry.pulls.endFlush(landed: true)
        #expect(try count(registry, digest) == 3)
        try await store.shutdown()
    }
}
