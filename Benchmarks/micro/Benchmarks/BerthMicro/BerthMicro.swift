import Benchmark
import BerthCore
import BerthStorage
import Crypto
import Foundation
import NIOCore

// Berth's hot paths, one at a time, on a real store in a temporary directory:
// digest hashing, manifest parse and validate, object store put / get /
// ranged get, and catalog operations (tag put, tag list of 10,000, an
// artifact's push and delete in an image of 10,000).

/// A store, a registry `bench` and what the benchmarks read, made in the
/// setup hooks and removed at the end.
final class Fixture: @unchecked Sendable {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-micro-\(UUID().uuidString)").path
    var store: Store!
    var registry: Registry!
    var blob16MiB: ObjectRecord!
    var manifestDigest = ""

    func open() async throws {
        guard store == nil else { return }
        store = try Store(directory: directory, threads: 4)
        registry = try Registry(store: store)
        _ = try await registry.createRegistry("bench")
    }

    func close() async throws {
        try await store?.shutdown()
        store = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Uploads `bytes` to repository `bench/app` in pieces of 256 KiB, as a request body arrives.
    func upload(_ bytes: [UInt8]) async throws -> ObjectRecord {
        let upload = try await registry.startUpload(name: "bench/app")
        let body = AsyncStream<ByteBuffer> { continuation in
            for start in stride(from: 0, to: bytes.count, by: 256 << 10) {
                continuation.yield(ByteBuffer(bytes: bytes[start..<min(start + (256 << 10), bytes.count)]))
            }
            continuation.finish()
        }
        _ = try await registry.appendUpload(name: "bench/app", id: upload.id, start: nil, expectedLength: nil, body: body)
        return try await registry.completeUpload(name: "bench/app", id: upload.id, digest: Self.digest(bytes))
    }

    static func digest(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// A realistic image manifest: a config and `layers` layers, with annotations.
    static func manifest(configDigest: String, layers: Int) -> [UInt8] {
        let layerList = (0..<layers).map { index in
            let digest = "sha256:" + String(repeating: String(format: "%02x", index % 256), count: 32)
            return #"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\#(digest)","size":\#(1_000_000 + index)}"#
        }
        let json = #"""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\#
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(configDigest)","size":2},\#
            "layers":[\#(layerList.joined(separator: ","))],\#
            "annotations":{"org.opencontainers.image.created":"2026-11-23T00:00:00Z","org.opencontainers.image.source":"https://example.com/app"}}
            """#
        return Array(json.utf8)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident],
        warmupIterations: 2, maxDuration: .seconds(3), maxIterations: 2_000)

    // MARK: Digests

    let oneMiB = Fixture.randomBytes(1 << 20)
    Benchmark("sha256 of 1 MiB (one shot)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(SHA256.hash(data: oneMiB)) }
    }
    let piece = ByteBuffer(bytes: oneMiB[0..<(64 << 10)])
    Benchmark("sha256 of 1 MiB in 64 KiB ByteBuffers (as a body arrives)") { benchmark in
        for _ in benchmark.scaledIterations {
            var hasher = SHA256()
            for _ in 0..<16 { piece.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) } }
            blackHole(hasher.finalize())
        }
    }

    // MARK: Manifests

    let emptyConfig = Array("{}".utf8)
    let smallManifest = Fixture.manifest(configDigest: Fixture.digest(emptyConfig), layers: 5)
    let largeManifest = Fixture.manifest(configDigest: Fixture.digest(emptyConfig), layers: 200)
    Benchmark("manifest parse and validate, 5 layers") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ParsedManifest(bytes: smallManifest, contentType: "application/vnd.oci.image.manifest.v1+json"))
        }
    }
    Benchmark("manifest parse and validate, 200 layers") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ParsedManifest(bytes: largeManifest, contentType: "application/vnd.oci.image.manifest.v1+json"))
        }
    }

    // MARK: Object store (put is durable: synced before it returns)

    // Benchmarks may run in processes of their own: each sets up the store it
    // needs and removes it after.
    let fixture = Fixture()
    let sixteenMiB = Fixture.randomBytes(16 << 20)
    let setUpStore: Benchmark.BenchmarkSetupHook = {
        try await fixture.open()
        guard fixture.blob16MiB == nil else { return }
        fixture.blob16MiB = try await fixture.upload(sixteenMiB)
        _ = try await fixture.upload(emptyConfig)
        let manifest = Fixture.manifest(configDigest: Fixture.digest(emptyConfig), layers: 0)
        fixture.manifestDigest = Fixture.digest(manifest)
        for image in ["bench/app", "bench/puts"] {
            _ = try await fixture.registry.putManifest(
                name: image, reference: fixture.manifestDigest, bytes: manifest,
                contentType: "application/vnd.oci.image.manifest.v1+json")
        }
    }
    let setUpTags: Benchmark.BenchmarkSetupHook = {
        try await setUpStore()
        guard try fixture.registry.tags(name: "bench/app", after: nil, limit: 1).items.isEmpty else { return }
        for index in 0..<10_000 {
            _ = try await fixture.registry.setTag(image: "bench/app", tag: String(format: "t%05d", index), digest: fixture.manifestDigest)
        }
    }
    /// An image manifest made distinct by `label`.
    func distinctManifest(_ label: Int) -> [UInt8] {
        let base = Fixture.manifest(configDigest: Fixture.digest(emptyConfig), layers: 0)
        return Array(String(decoding: base, as: UTF8.self).replacingOccurrences(of: "example.com/app", with: "example.com/app/\(label)").utf8)
    }
    let setUpManyArtifacts: Benchmark.BenchmarkSetupHook = {
        try await setUpStore()
        guard (try? fixture.registry.tags(name: "bench/many", after: nil, limit: 1))?.items.isEmpty ?? true else { return }
        for index in 0..<10_000 {
            _ = try await fixture.registry.putManifest(
                name: "bench/many", reference: "m\(index)", bytes: distinctManifest(index),
                contentType: "application/vnd.oci.image.manifest.v1+json")
        }
    }
    let tearDown: Benchmark.BenchmarkTeardownHook = {
        try await fixture.close()
        fixture.blob16MiB = nil
    }
    let objectStore = Benchmark.Configuration(maxDuration: .seconds(5), maxIterations: 200, setup: setUpStore, teardown: tearDown)
    let tagList = Benchmark.Configuration(maxDuration: .seconds(3), maxIterations: 5_000, setup: setUpTags, teardown: tearDown)
    let manyArtifacts = Benchmark.Configuration(
        maxDuration: .seconds(5), maxIterations: 500, setup: setUpManyArtifacts, teardown: tearDown)

    Benchmark("object put 16 MiB (upload, verify, commit)", configuration: objectStore) { benchmark in
        // Distinct content each time: an existing digest would be deduplicated.
        var bytes = sixteenMiB
        for _ in benchmark.scaledIterations {
            bytes[0] &+= 1
            blackHole(try await fixture.upload(bytes))
        }
    }
    Benchmark("object put 4 KiB (a small layer)", configuration: objectStore) { benchmark in
        var bytes = Array(oneMiB[0..<4096])
        var counter: UInt32 = 0
        for _ in benchmark.scaledIterations {
            counter &+= 1
            withUnsafeBytes(of: counter) { bytes.replaceSubrange(0..<4, with: $0) }
            blackHole(try await fixture.upload(bytes))
        }
    }
    Benchmark("object get 16 MiB", configuration: objectStore) { benchmark in
        for _ in benchmark.scaledIterations {
            var total = 0
            for try await buffer in fixture.registry.readBlob(fixture.blob16MiB, range: 0..<fixture.blob16MiB.size) {
                total += buffer.readableBytes
            }
            blackHole(total)
        }
    }
    Benchmark("object ranged get 64 KiB across a chunk boundary", configuration: objectStore) { benchmark in
        let start = Int64(1 << 20) - 32_768
        for _ in benchmark.scaledIterations {
            var total = 0
            for try await buffer in fixture.registry.readBlob(fixture.blob16MiB, range: start..<(start + 65_536)) {
                total += buffer.readableBytes
            }
            blackHole(total)
        }
    }

    // MARK: Catalog

    Benchmark("tag put (durable)", configuration: objectStore) { benchmark in
        var index = 0
        for _ in benchmark.scaledIterations {
            index += 1
            blackHole(try await fixture.registry.setTag(image: "bench/puts", tag: "p\(index)", digest: fixture.manifestDigest))
        }
    }
    // What a cleanup run does per artifact: quadratic in the image's size
    // while a delete scanned the image's tags and manifests.
    Benchmark("artifact push and delete, image of 10,000 tagged artifacts (durable)", configuration: manyArtifacts) { benchmark in
        var index = 100_000
        for _ in benchmark.scaledIterations {
            index += 1
            let manifest = try await fixture.registry.putManifest(
                name: "bench/many", reference: "x\(index)", bytes: distinctManifest(index),
                contentType: "application/vnd.oci.image.manifest.v1+json")
            try await fixture.registry.deleteManifest(name: "bench/many", reference: manifest.digest)
        }
    }
    Benchmark("tag list, 10,000 tags in one page", configuration: tagList) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try fixture.registry.tags(name: "bench/app", after: nil, limit: 100_000))
        }
    }
    Benchmark("tag list, a page of 100 from the middle", configuration: tagList) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try fixture.registry.tags(name: "bench/app", after: "t05000", limit: 100))
        }
    }
}
