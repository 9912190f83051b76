import BerthStorage
import NIOCore
import Testing

/// Chunk buffers are reused only when nothing else holds them.
@Suite struct ChunkBuffersTests {
    func address(_ buffer: ByteBuffer) -> Int {
        buffer.withUnsafeReadableBytes { Int(bitPattern: $0.baseAddress!) }
    }

    @Test func anAlignedBufferHoldsAChunkWhereDirectWritesAccept() {
        let buffers = ChunkBuffers(chunkSize: 8192)
        var buffer = buffers.take(aligned: true)
        #expect(address(buffer) % ExtentFiles.directAlignment == 0)
        let before = address(buffer)
        buffer.writeBytes([UInt8](repeating: 7, count: 8192))
        #expect(address(buffer) == before)  // no reallocation on the way
        #expect(buffers.take(aligned: false).readerIndex == 0)
    }

    @Test func aBufferNobodyElseHoldsIsReused() {
        let buffers = ChunkBuffers(chunkSize: 8192)
        var buffer = buffers.take(aligned: false)
        buffer.writeBytes([1, 2, 3])
        let storage = address(buffer)
        buffers.recycle(buffer)
        buffer = ByteBuffer()  // the last other reference goes
        #expect(buffers.kept == 1)
        let again = buffers.take(aligned: false)
        #expect(address(again) == storage)
        #expect(again.readableBytes == 0)
        #expect(buffers.kept == 0)
    }

    @Test func aBufferStillHeldElsewhereIsNeverWrittenOver() {
        let buffers = ChunkBuffers(chunkSize: 8192)
        var held = buffers.take(aligned: false)
        held.writeBytes([UInt8](repeating: 1, count: 8192))
        buffers.recycle(held)  // handed back while a reader (a queued write) still has it
        var taken = buffers.take(aligned: false)
        #expect(address(taken) != address(held))
        taken.writeBytes([UInt8](repeating: 2, count: 8192))
        #expect(held.readableBytesView.allSatisfy { $0 == 1 })
    }

    @Test func keepsAtMostItsLimitAndReleasesThemAll() {
        let buffers = ChunkBuffers(chunkSize: 4096, limit: 3)
        for _ in 0..<5 { buffers.recycle(buffers.take(aligned: false)) }
        #expect(buffers.kept == 1)  // each take reuses the one handed back before
        let five = (0..<5).map { _ in buffers.take(aligned: true) }
        for buffer in five { buffers.recycle(buffer) }
        #expect(buffers.kept == 3)
        buffers.recycle(ByteBuffer(bytes: [1, 2, 3]))  // not one of the pool's: too small
        #expect(buffers.kept == 3)
        buffers.release()
        #expect(buffers.kept == 0)
    }

    /// A reader hands each chunk's buffer back two steps later; a consumer
    /// that keeps every chunk still finds each as it was read.
    @Test func aConsumerThatKeepsEveryChunkFindsThemIntact() async throws {
        try await withStore { store, _ in
            try await store.objects.createBucket("a")
            let bytes = random(10 * 1024 + 100)
            let object = try await put(store, "a", bytes)
            var chunks: [ByteBuffer] = []
            for try await chunk in store.objects.read(object, range: 0..<object.size) { chunks.append(chunk) }
            #expect(chunks.count == 11)
            #expect(store.objects.buffers.kept > 0)
            #expect(chunks.flatMap { Array($0.readableBytesView) } == bytes)
            // And a push after it takes those buffers and leaves the chunks alone.
            let more = random(4 * 1024)
            let other = try await put(store, "a", more)
            #expect(chunks.flatMap { Array($0.readableBytesView) } == bytes)
            #expect(try await readAll(store, other) == more)
        }
    }
}
