@testable import BerthStorage
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Where an extent's bytes live: full chunks in its file, the partial tail in RocksDB.
@Suite struct ExtentFileTests {
    func fileSize(_ store: Store, _ extent: UInt64) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: store.files.path(extent)))?[.size] as? Int
    }

    func storedChunk(_ store: Store, _ extent: UInt64, _ index: Int64) throws -> [UInt8]? {
        try store.db.get(.chunks, RocksObjectStore.chunkKey(extent, index))
    }

    /// Rewrites an extent the way stores before extent files kept it: every chunk in RocksDB, no file.
    func moveFileIntoRocksDB(_ store: Store, _ extent: UInt64, size: Int, chunkSize: Int = 1024) throws {
        for index in 0..<(size / chunkSize) {
            var chunk = ByteBuffer()
            try #require(try store.files.read(extent, offset: Int64(index * chunkSize), count: chunkSize, appendingTo: &chunk))
            try chunk.withUnsafeReadableBytes {
                try store.db.put(.chunks, RocksObjectStore.chunkKey(extent, Int64(index)), $0, .synced)
            }
        }
        store.files.remove(extent)
    }

    @Test func fullChunksGoToTheFileAndTheTailToRocksDB() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let large = try await put(store, "a", random(5000))
            #expect(fileSize(store, large.extent) == 4096)
            #expect(try storedChunk(store, large.extent, 0) == nil)
            #expect(try storedChunk(store, large.extent, 4)?.count == 5000 - 4096)
            let small = try await put(store, "a", random(500))
            #expect(fileSize(store, small.extent) == nil)
            #expect(try storedChunk(store, small.extent, 0)?.count == 500)
            let exact = try await put(store, "a", random(2048))
            #expect(fileSize(store, exact.extent) == 2048)
            #expect(try storedChunk(store, exact.extent, 2) == nil)
        }
    }

    /// Chunks of 64 KiB are written directly (and two at a time); a carried
    /// tail, appends in odd pieces and ranged reads see every byte.
    @Test func directWritesKeepEveryByte() async throws {
        try await withStore(chunkSize: 64 << 10) { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(1_000_000)
            let upload = try await startUpload(store, "a", Array(bytes[0..<100_000]))
            _ = try await store.objects.append(
                upload: upload.id, start: 100_000, expectedLength: nil, body: body(Array(bytes[100_000...]), piece: 33_333))
            #expect(fileSize(store, upload.extent) == 15 * (64 << 10))
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(try await readAll(store, object) == bytes)
            #expect(try await readAll(store, object, 65_000..<900_001) == Array(bytes[65_000..<900_001]))
        }
    }

    /// A handle writes aligned bytes directly, copies misaligned memory to an
    /// aligned buffer, and falls back to buffered writes for unaligned ranges.
    /// (Direct where the scratch directory's file system takes `O_DIRECT`.)
    @Test func handleWritesAlignedAndUnalignedRanges() throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = try ExtentFiles(directory: directory)
        let bytes = random(5 * 4096 + 100)
        let handle = try files.openForAppend(7)
        let openedDirect = handle.isDirect
        var aligned = ChunkBuffers(chunkSize: 8192).take(aligned: true)
        aligned.writeBytes(bytes[0..<8192])
        try aligned.withUnsafeReadableBytes { try handle.write($0, at: 0) }
        // Memory 16 bytes past a page boundary: copied, still written directly.
        let misaligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096 + 16, alignment: 4096)
        defer { misaligned.deallocate() }
        let unaligned = UnsafeMutableRawBufferPointer(rebasing: misaligned[16..<(4096 + 16)])
        bytes[8192..<12288].withUnsafeBytes { unaligned.copyMemory(from: $0) }
        try handle.write(UnsafeRawBufferPointer(unaligned), at: 8192)
        #expect(handle.isDirect == openedDirect)
        try bytes[12288..<12388].withUnsafeBytes { try handle.write($0, at: 12288) }
        #expect(!handle.isDirect)
        try bytes[12388...].withUnsafeBytes { try handle.write($0, at: 12388) }
        try handle.sync()
        handle.close()
        var read = ByteBuffer()
        try #require(try files.read(7, offset: 0, count: bytes.count, appendingTo: &read))
        #expect(Array(read.readableBytesView) == bytes)
    }

    @Test func aCarriedTailMovesIntoTheFile() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(3000)
            let upload = try await startUpload(store, "a", Array(bytes[0..<700]))
            #expect(try storedChunk(store, upload.extent, 0)?.count == 700)
            _ = try await store.objects.append(upload: upload.id, start: 700, expectedLength: nil, body: body(Array(bytes[700...])))
            #expect(try storedChunk(store, upload.extent, 0) == nil)
            #expect(fileSize(store, upload.extent) == 2048)
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(try await readAll(store, object) == bytes)
            #expect(try await readAll(store, object, 1000..<2100) == Array(bytes[1000..<2100]))
        }
    }

    @Test func filesOfDroppedExtentsAreRemoved() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(4096)
            async let first = put(store, "a", bytes)
            async let second = put(store, "a", bytes)
            let (x, _) = try await (first, second)
            #expect(try store.files.list() == [x.extent])  // the duplicate's file is gone

            let cancelled = try await startUpload(store, "a", random(3000))
            #expect(fileSize(store, cancelled.extent) == 2048)
            try await store.objects.cancel(upload: cancelled.id)
            #expect(fileSize(store, cancelled.extent) == nil)

            let wrong = try await startUpload(store, "a", random(3000))
            await #expect(throws: ObjectStoreError.self) {
                try await store.objects.complete(upload: wrong.id, digest: digest(random(10)))
            }
            #expect(fileSize(store, wrong.extent) == nil)

            #expect(try await store.objects.delete(bucket: "a", digest: x.digest))
            #expect(try await store.objects.sweepExtents(grace: 0).bytes == 4096)
            #expect(try store.files.list().isEmpty)
        }
    }

    @Test func bytesPastTheRecordedSizeAreNeverRead() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(6000)
            let upload = try await startUpload(store, "a", Array(bytes[0..<2500]))
            // An append cut short by a crash: chunks written to the file, size never recorded.
            let file = try store.files.openForAppend(upload.extent)
            try random(3072).withUnsafeBytes { try file.write($0, at: 2048) }
            try file.sync()
            file.close()
            // An append cut short changes nothing; the next one writes over the stray bytes.
            await #expect(throws: ObjectStoreError.incomplete(expected: 10, received: 3)) {
                _ = try await store.objects.append(upload: upload.id, start: 2500, expectedLength: 10, body: body([1, 2, 3]))
            }
            _ = try await store.objects.append(upload: upload.id, start: 2500, expectedLength: nil, body: body(Array(bytes[2500...])))
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(try await readAll(store, object) == bytes)
        }
    }

    /// A long body cut short leaves full chunks in the file past the recorded
    /// size; a shorter append never reaches them, so the commit cuts them off
    /// (else a pusher could leave gigabytes behind a 10-byte blob).
    @Test func bytesPastTheRecordedSizeAreCutAtCommit() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let upload = try await startUpload(store, "a", [])
            await #expect(throws: ObjectStoreError.incomplete(expected: 8193, received: 8192)) {
                _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: 8193, body: body(random(8192)))
            }
            #expect(fileSize(store, upload.extent) == 8192)
            let bytes = random(1500)
            _ = try await store.objects.append(upload: upload.id, start: 0, expectedLength: nil, body: body(bytes))
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(fileSize(store, upload.extent) == 1024)  // one full chunk; the rest is in RocksDB
            #expect(try await readAll(store, object) == bytes)
        }
    }

    /// A body the client cuts off (after full chunks went to the file) keeps the
    /// upload's running hash: the next append does not re-hash the whole upload.
    @Test func anAppendTheClientCutsShortKeepsTheSession() async throws {
        struct ClientGone: Error {}
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(9000)
            let upload = try await startUpload(store, "a", Array(bytes[0..<2500]))
            let cut = AsyncThrowingStream<ByteBuffer, any Error> { continuation in
                continuation.yield(ByteBuffer(bytes: random(3000)))
                continuation.finish(throwing: ClientGone())
            }
            await #expect(throws: ClientGone.self) {
                _ = try await store.objects.append(upload: upload.id, start: 2500, expectedLength: nil, body: cut)
            }
            #expect(try store.objects.upload(upload.id)?.size == 2500)
            let rebuilds = store.objects.sessionRebuilds.withLockedValue { $0 }
            _ = try await store.objects.append(upload: upload.id, start: 2500, expectedLength: nil, body: body(Array(bytes[2500...])))
            #expect(store.objects.sessionRebuilds.withLockedValue { $0 } == rebuilds)
            let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
            #expect(try await readAll(store, object) == bytes)
        }
    }

    @Test func orphanFilesAreRemovedAtStart() async throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var kept: [UInt64] = []
        do {
            let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
            try await store.objects.createBucket("a")
            kept.append(try await put(store, "a", random(3000)).extent)
            let upload = try await startUpload(store, "a", random(2000))
            kept.append(upload.extent)
            // A crash after an upload's file was created and before its record was written.
            let orphan = try store.files.openForAppend(12345)
            try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try orphan.write($0, at: 0) }
            orphan.close()
            try await store.shutdown()
        }
        let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
        #expect(try store.files.list().sorted() == kept.sorted())
        try await store.shutdown()
    }

    @Test func extentsFromBeforeExtentFilesStayReadable() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(5000)
            let object = try await put(store, "a", bytes)
            try moveFileIntoRocksDB(store, object.extent, size: 5000)
            #expect(fileSize(store, object.extent) == nil)
            #expect(try await readAll(store, object) == bytes)
            #expect(try await readAll(store, object, 1500..<4500) == Array(bytes[1500..<4500]))
        }
    }

    /// Leaves in `directory` a store with one upload of `bytes[0..<2600]` kept
    /// as stores before extent files kept it; returns it and its file's path.
    func oldLayoutUpload(in directory: String, _ bytes: [UInt8]) async throws -> (UploadRecord, path: String) {
        let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
        try await store.objects.createBucket("a")
        let upload = try await startUpload(store, "a", Array(bytes[0..<2600]))
        try moveFileIntoRocksDB(store, upload.extent, size: 2600)
        try await store.shutdown()
        return (upload, store.files.path(upload.extent))
    }

    /// Appends the rest of `bytes` to the upload, completes it and reads it back.
    func completeAndReadBack(_ store: Store, _ upload: UploadRecord, _ bytes: [UInt8]) async throws {
        _ = try await store.objects.append(upload: upload.id, start: 2600, expectedLength: nil, body: body(Array(bytes[2600...])))
        let object = try await store.objects.complete(upload: upload.id, digest: digest(bytes))
        #expect(try await readAll(store, object) == bytes)
    }

    @Test func uploadsFromBeforeExtentFilesMoveIntoAFileAtStart() async throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = random(5000)
        let (upload, _) = try await oldLayoutUpload(in: directory, bytes)
        let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
        #expect(fileSize(store, upload.extent) == 2048)
        #expect(try storedChunk(store, upload.extent, 0) == nil)
        #expect(try storedChunk(store, upload.extent, 2)?.count == 2600 - 2048)
        try await completeAndReadBack(store, upload, bytes)
        try await store.shutdown()
    }

    @Test func anUploadWhoseMoveFailsIsKeptAndTheOpenFails() async throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = random(3000)
        let (upload, path) = try await oldLayoutUpload(in: directory, bytes)
        let fanout = (path as NSString).deletingLastPathComponent
        // The file cannot be created (as on a full disk): the store refuses to open
        // rather than drop bytes its client was told are stored.
        try FileManager.default.removeItem(atPath: fanout)
        FileManager.default.createFile(atPath: fanout, contents: Data())
        #expect(throws: (any Error).self) { _ = try Store(directory: directory, chunkSize: 1024, threads: 2) }
        try FileManager.default.removeItem(atPath: fanout)
        try FileManager.default.createDirectory(atPath: fanout, withIntermediateDirectories: false)
        let store = try Store(directory: directory, chunkSize: 1024, threads: 2)
        #expect(fileSize(store, upload.extent) == 2048)
        try await completeAndReadBack(store, upload, bytes)
        try await store.shutdown()
    }

    @Test func aBackupHoldsOffTheSweepUntilItHasItsFiles() async throws {
        let backup = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: backup) }
        let bytes = random(5000)
        var object = ObjectRecord(digest: "", size: 0, created: Date(), extent: 0, chunkSize: 0)
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            object = try await put(store, "a", bytes)
            let sweep = try await store.objects.withSweepsHeld {
                try store.db.checkpoint(to: backup)
                // Deleted after the checkpoint, which still holds it, and swept with no grace:
                // the sweep waits, or the copy would name an object whose file is gone.
                #expect(try await store.objects.delete(bucket: "a", digest: object.digest))
                let swept = NIOLockedValueBox(false)
                let sweep = Task {
                    defer { swept.withLockedValue { $0 = true } }
                    return try await store.objects.sweepExtents(grace: 0)
                }
                try await Task.sleep(for: .milliseconds(500))  // unheld, a sweep of one extent takes milliseconds
                #expect(!swept.withLockedValue { $0 }, "the sweep ran while the backup held it off")
                let copy = try RocksDB(path: backup)
                try RocksObjectStore.addExtentFiles(from: store.files, to: copy)
                #expect(try copy.get(.objects, RocksObjectStore.extentKey(object.extent)) != nil)
                return sweep
            }
            #expect(try await sweep.value.extents == 1)
        }
        let restored = try Store(directory: backup, chunkSize: 1024, threads: 2)
        #expect(try await readAll(restored, object) == bytes)
        try await restored.shutdown()
    }

    @Test func aCheckpointGetsTheFilesItsRecordsName() async throws {
        let backup = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: backup) }
        var kept = ObjectRecord(digest: "", size: 0, created: Date(), extent: 0, chunkSize: 0)
        let keptBytes = random(5000)
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            kept = try await put(store, "a", keptBytes)
            let swept = try await put(store, "a", random(3000))
            #expect(try await store.objects.delete(bucket: "a", digest: swept.digest))
            let cancelled = try await startUpload(store, "a", random(2000))
            try store.db.checkpoint(to: backup)
            // Between the checkpoint and the links: a sweep and a cancel remove two files.
            #expect(try await store.objects.sweepExtents(grace: 0).extents == 1)
            try await store.objects.cancel(upload: cancelled.id)
            do {
                let copy = try RocksDB(path: backup)
                try RocksObjectStore.addExtentFiles(from: store.files, to: copy)
                #expect(try copy.get(.objects, RocksObjectStore.extentKey(swept.extent)) == nil)
                #expect(try copy.get(.objects, RocksObjectStore.contentKey(swept.digest)) == nil)
                #expect(try copy.get(.uploads, RocksObjectStore.uploadKey(cancelled.id)) == nil)
                // Their partial last chunks (1 KiB chunks: 3000 and 2000 bytes) leave with them.
                #expect(try copy.get(.chunks, RocksObjectStore.chunkKey(swept.extent, 2)) == nil)
                #expect(try copy.get(.chunks, RocksObjectStore.chunkKey(cancelled.extent, 1)) == nil)
                #expect(try copy.get(.chunks, RocksObjectStore.chunkKey(kept.extent, 4)) != nil)
            }
        }
        // The copy opens as a store of its own and serves the blob it holds.
        let restored = try Store(directory: backup, chunkSize: 1024, threads: 2)
        #expect(try await readAll(restored, kept) == keptBytes)
        #expect(restored.objects.usage().openUploads == 0)
        try await restored.shutdown()
    }

    /// /dev/shm when it is another file system than the scratch directories'
    /// (so `link` fails with EXDEV and extent files are copied), else nil.
    static let otherFileSystem: String? = {
        var shm = stat()
        var scratch = stat()
        guard stat("/dev/shm", &shm) == 0, stat(FileManager.default.temporaryDirectory.path, &scratch) == 0,
            shm.st_dev != scratch.st_dev
        else { return nil }
        return "/dev/shm"
    }()

    @Test(.enabled(if: otherFileSystem != nil, "needs /dev/shm on a file system of its own"))
    func aCopyLeavesTheReserveFreeOrFailsNamingIt() async throws {
        let refused = Self.otherFileSystem! + "/berth-backup-\(UUID().uuidString)"
        let copied = Self.otherFileSystem! + "/berth-backup-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: refused)
            try? FileManager.default.removeItem(atPath: copied)
        }
        let bytes = random(5000)
        var object = ObjectRecord(digest: "", size: 0, created: Date(), extent: 0, chunkSize: 0)
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            object = try await put(store, "a", bytes)
            try store.db.checkpoint(to: refused)
            do {
                let copy = try RocksDB(path: refused)
                let available = try SpaceReserve.measure(refused).available
                #expect(throws: StorageError.self) {
                    try RocksObjectStore.addExtentFiles(from: store.files, to: copy, keepFree: available)
                }
            }
            try store.db.checkpoint(to: copied)
            do {
                let copy = try RocksDB(path: copied)
                try RocksObjectStore.addExtentFiles(from: store.files, to: copy, keepFree: 1 << 20)
            }
        }
        var linked = stat()
        #expect(stat(copied + "/extents", &linked) == 0)
        let restored = try Store(directory: copied, chunkSize: 1024, threads: 2)
        #expect(try await readAll(restored, object) == bytes)
        try await restored.shutdown()
    }

    @Test func aStoppedCopyEndsBetweenFiles() async throws {
        let backup = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: backup) }
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            _ = try await put(store, "a", random(5000))
            try store.db.checkpoint(to: backup)
            let copy = try RocksDB(path: backup)
            #expect(throws: CancellationError.self) {
                try RocksObjectStore.addExtentFiles(from: store.files, to: copy, stopped: { true })
            }
            #expect(try ExtentFiles(directory: backup + "/extents").list().isEmpty)
        }
    }
}
