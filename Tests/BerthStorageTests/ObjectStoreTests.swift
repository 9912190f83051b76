import BerthStorage
import Crypto
import Foundation
import NIOCore
import Testing

/// A fresh path under the temporary directory (not created); remove it when done.
func scratchDirectory() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("berth-test-\(UUID().uuidString)").path
}

/// Opens a store in a fresh temporary directory with small chunks, so tests cross chunk boundaries.
func withStore(chunkSize: Int = 1024, maxObjectSize: Int64 = 1 << 30, _ body: (Store, String) async throws -> Void) async throws {
    let directory = scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try Store(directory: directory, chunkSize: chunkSize, maxObjectSize: maxObjectSize, threads: 4)
    try await body(store, directory)
    try await store.shutdown()
}

func digest(_ bytes: [UInt8]) -> String { "sha256:" + SHA256.hash(data: bytes).hexString }

func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

/// A request body delivered in pieces of `piece` bytes.
func body(_ bytes: [UInt8], piece: Int = 700) -> AsyncStream<ByteBuffer> {
    AsyncStream { continuation in
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            continuation.yield(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
        }
        continuation.finish()
    }
}

func readAll(_ store: Store, _ object: ObjectRecord, _ range: Range<Int64>? = nil) async throws -> [UInt8] {
    var out: [UInt8] = []
    for try await buffer in store.objects.read(object, range: range ?? 0..<object.size) {
        out.append(contentsOf: buffer.readableBytesView)
    }
    return out
}

/// Starts an upload and appends `bytes` to it in one request.
func startUpload(_ store: Store, _ bucket: String, _ bytes: [UInt8]) async throws -> UploadRecord {
    let upload = try await store.objects.startUpload(bucket: bucket, owner: "\(bucket)/x")
    return try await store.objects.append(upload: upload.id, start: 0, expectedLength: Int64(bytes.count), body: body(bytes))
}

/// Uploads `bytes` in one append and completes it.
func put(_ store: Store, _ bucket: String, _ bytes: [UInt8]) async throws -> ObjectRecord {
    let upload = try await startUpload(store, bucket, bytes)
    return try await store.objects.complete(upload: upload.id, digest: digest(bytes))
}

@Suite struct ObjectStoreTests {
    @Test func roundTripAcrossChunks() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(5000)
            let object = try await put(store, "a", bytes)
            #expect(object.size == 5000)
            #expect(try await readAll(store, object) == bytes)
            #expect(try await readAll(store, object, 1000..<3100) == Array(bytes[1000..<3100]))
            #expect(try await readAll(store, object, 4999..<5000) == [bytes[4999]])
            #expect(store.objects.usage(bucket: "a") == BucketUsage(objects: 1, bytes: 5000))
        }
    }

    @Test func chunkedAppendsAndRangeMismatch() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(3000)
            let upload = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: nil, body: body(Array(bytes[0..<1500])))
            await #expect(throws: ObjectStoreError.rangeMismatch(current: 1500)) {
                _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: nil, body: body([1, 2]))
            }
            let record = try await store.objects.append(upload: upload.id, start: 1500, expectedLength: nil, body: body(Array(bytes[1500...])))
            #expect(record.size == 3000)
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(try await readAll(store, object) == bytes)
            #expect(store.objects.usage().openUploads == 0)
        }
    }

    @Test func digestMismatchStoresNothing() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let upload = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: nil, body: body(random(2000)))
            let wrong = digest([1, 2, 3])
            await #expect(throws: ObjectStoreError.self) {
                _ = try await store.objects.complete(upload: upload.id, digest: wrong)
            }
            #expect(try store.objects.object(bucket: "a", digest: wrong) == nil)
            #expect(try store.objects.upload(upload.id) == nil)
            #expect(store.objects.usage() == StoreUsage(logicalBytes: 0, physicalBytes: 0, openUploads: 0, uploadBytes: 0))
        }
    }

    @Test func incompleteBodyLeavesUploadAsItWas() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(2500)
            let upload = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: nil, body: body(Array(bytes[0..<1100])))
            // Declares more than it sends: refused, and the upload keeps its 1100 bytes.
            await #expect(throws: ObjectStoreError.incomplete(expected: 5000, received: 1400)) {
                _ = try await store.objects.append(upload: upload.id, start: 1100, expectedLength: 5000, body: body(Array(bytes[1100..<2500])))
            }
            #expect(try store.objects.upload(upload.id)?.size == 1100)
            _ = try await store.objects.append(upload: upload.id, start: 1100, expectedLength: 1400, body: body(Array(bytes[1100..<2500])))
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(try await readAll(store, object) == bytes)
        }
    }

    @Test func sizeLimitIsEnforced() async throws {
        try await withStore(maxObjectSize: 4000) { store, _ in
            try await store.objects.createBucket("a")
            let upload = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            await #expect(throws: ObjectStoreError.tooLarge(limit: 4000)) {
                _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: nil, body: body(random(5000)))
            }
            #expect(try store.objects.upload(upload.id)?.size == 0)
        }
    }

    @Test func sharedContentIsStoredOnce() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            try await store.objects.createBucket("b")
            let bytes = random(3000)
            async let first = put(store, "a", bytes)
            async let second = put(store, "a", bytes)
            let (x, y) = try await (first, second)
            #expect(x.extent == y.extent)
            let third = try await put(store, "b", bytes)
            #expect(third.extent == x.extent)
            let usage = store.objects.usage()
            #expect(usage.logicalBytes == 6000)
            #expect(usage.physicalBytes == 3000)
            #expect(store.objects.usage(bucket: "a") == BucketUsage(objects: 1, bytes: 3000))
        }
    }

    @Test func copyDeleteAndSweep() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            try await store.objects.createBucket("b")
            let bytes = random(1500)
            let object = try await put(store, "a", bytes)
            let copied = try await store.objects.copy(digest: object.digest, from: "a", to: "b")
            #expect(copied?.extent == object.extent)
            #expect(try await store.objects.delete(bucket: "a", digest: object.digest))
            #expect(try await store.objects.sweepExtents(grace: 0).extents == 0)  // still referenced by b
            #expect(try await readAll(store, copied!) == bytes)
            #expect(try await store.objects.delete(bucket: "b", digest: object.digest))
            #expect(try await store.objects.sweepExtents(grace: 0).extents == 1)
            #expect(store.objects.usage().physicalBytes == 0)
        }
    }

    @Test func theSweepLeavesAnExtentBeingReadAlone() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(4000)
            let object = try await put(store, "a", bytes)
            var read: [UInt8] = []
            do {
                var chunks = store.objects.read(object, range: 0..<object.size).makeAsyncIterator()
                let first = try #require(try await chunks.next())
                read.append(contentsOf: first.readableBytesView)
                #expect(try await store.objects.delete(bucket: "a", digest: object.digest))
                // Let go, past a grace of 0, but still being read.
                #expect(try await store.objects.sweepExtents(grace: 0).extents == 0)
                while let chunk = try await chunks.next() { read.append(contentsOf: chunk.readableBytesView) }
            }
            #expect(read == bytes)
            #expect(try await store.objects.sweepExtents(grace: 0).extents == 1)
        }
    }

    @Test func uploadsSurviveReopenAndExpire() async throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = random(2600)
        var id = ""
        do {
            let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
            try await store.objects.createBucket("a")
            let upload = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            id = upload.id
            _ = try await store.objects.append(upload: id, start: 0, expectedLength: nil, body: body(Array(bytes[0..<1300])))
            try await store.shutdown()
        }
        let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
        #expect(store.objects.usage().uploadBytes == 1300)
        // The running hash is rebuilt from the stored chunks.
        _ = try await store.objects.append(upload: id, start: 1300, expectedLength: nil, body: body(Array(bytes[1300...])))
        let object = try await store.objects.complete(upload: id, digest: digest(bytes))
        #expect(try await readAll(store, object) == bytes)
        let idle = try await store.objects.startUpload(bucket: "a", owner: "a/x")
        #expect(try await store.objects.expireUploads(idleFor: -1) == 1)
        #expect(try store.objects.upload(idle.id) == nil)
        try await store.shutdown()
    }
}

@Suite struct OpenUploadLimitTests {
    /// A bucket has at most `maxOpenUploads` uploads open; finishing, cancelling
    /// or a restart (which counts the stored ones) keeps the count right.
    @Test func aBucketOpensAtMostTheLimit() async throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let firstBytes = random(10)
        let (first, third) = try await {
            let store = try Store(directory: directory, chunkSize: 1024, threads: 2, maxOpenUploads: 2)
            try await store.objects.createBucket("a")
            try await store.objects.createBucket("b")
            let first = try await startUpload(store, "a", firstBytes)
            let second = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            await #expect(throws: ObjectStoreError.tooManyUploads(limit: 2)) {
                _ = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            }
            _ = try await store.objects.startUpload(bucket: "b", owner: "b/x")
            try await store.objects.cancel(upload: second.id)
            let third = try await store.objects.startUpload(bucket: "a", owner: "a/x")
            try await store.shutdown()
            return (first, third)
        }()

        // After a restart the stored uploads count.
        let store = try Store(directory: directory, chunkSize: 1024, threads: 2, maxOpenUploads: 2)
        await #expect(throws: ObjectStoreError.tooManyUploads(limit: 2)) {
            _ = try await store.objects.startUpload(bucket: "a", owner: "a/x")
        }
        _ = try await store.objects.complete(upload: first.id, digest: digest(firstBytes))
        _ = try await store.objects.startUpload(bucket: "a", owner: "a/x")
        #expect(store.objects.usage().openUploads == 3)  // `third`, the new one, and b's
        #expect(try store.objects.upload(third.id) != nil)
        try await store.shutdown()
    }
}
