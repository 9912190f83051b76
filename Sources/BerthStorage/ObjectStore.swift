import NIOCore

/// The bucket emulation: buckets of content-addressed objects over shared,
/// reference-counted extents. The seam behind which another engine (an
/// S3-compatible store) can stand; see docs/architecture.md.
public protocol ObjectStore: Sendable {
    func createBucket(_ bucket: String) async throws
    /// Removes the bucket, every object in it and its uploads in progress; a
    /// missing bucket is not an error.
    func deleteBucket(_ bucket: String) async throws
    /// Every bucket's name.
    func buckets() throws -> [String]
    func object(bucket: String, digest: String) throws -> ObjectRecord?
    /// Objects of a bucket in digest order, `limit` at most, after digest `after`
    /// (for sweeps: what it reads does not stay in the block cache).
    func objects(bucket: String, after: String?, limit: Int) throws -> [ObjectRecord]
    /// The bytes of `object` in `range`, streamed a chunk at a time.
    func read(_ object: ObjectRecord, range: Range<Int64>) -> ObjectReader
    /// Makes `digest` of bucket `from` an object of bucket `to` without copying bytes.
    func copy(digest: String, from: String, to: String) async throws -> ObjectRecord?
    /// Removes an object; its extent is swept once unreferenced for the grace period.
    @discardableResult func delete(bucket: String, digest: String) async throws -> Bool
    func usage(bucket: String) -> BucketUsage
    func usage() -> StoreUsage

    func startUpload(bucket: String, owner: String) async throws -> UploadRecord
    func upload(_ id: String) throws -> UploadRecord?
    /// Appends a request body to an upload. `start`, when given, must equal the upload's size.
    /// `expectedLength`, when given, is the declared body length. On any error the upload is
    /// left as it was before the call.
    func append<Body: AsyncSequence>(
        upload id: String, start: Int64?, expectedLength: Int64?, body: Body
    ) async throws -> UploadRecord where Body.Element == ByteBuffer
    /// Verifies the digest and turns the upload into an object of its bucket.
    func complete(upload id: String, digest: String) async throws -> ObjectRecord
    func cancel(upload id: String) async throws
    /// Drops uploads idle for longer than `idle` seconds; returns how many.
    func expireUploads(idleFor idle: Double) async throws -> Int
    /// Deletes extents unreferenced for longer than `grace` seconds.
    func sweepExtents(grace: Double) async throws -> SweepResult
}

/// Streams an object's bytes, fetching one chunk per step on the blocking pool.
///
/// Each step hands the buffer it returned two steps before back to `recycle`:
/// a consumer that writes a chunk and asks for the next once the one before
/// it is written (`ResponseBody.paced`) is done with it by then. One that is
/// not loses nothing (see `ChunkBuffers`).
public struct ObjectReader: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let fetch: @Sendable (_ chunk: Int64) async throws -> ByteBuffer
    let recycle: @Sendable (ByteBuffer) -> Void
    let object: ObjectRecord
    let range: Range<Int64>

    /// The most bytes a reading holds at once: two chunks handed out and one read ahead, within the range.
    public var bufferedBytes: Int { Int(Swift.min(Int64(range.count), 3 * Int64(object.chunkSize))) }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let reader: ObjectReader
        var position: Int64
        var prefetch: Task<ByteBuffer, any Error>?
        /// The last two buffers returned, oldest first.
        var handedOut: [ByteBuffer] = []

        public mutating func next() async throws -> ByteBuffer? {
            if handedOut.count == 2 { reader.recycle(handedOut.removeFirst()) }
            guard position < reader.range.upperBound else { return nil }
            let chunkSize = Int64(reader.object.chunkSize)
            let index = position / chunkSize
            let current = prefetch ?? Self.start(reader, index)
            // Fetch the next chunk while this one is being sent.
            let nextStart = (index + 1) * chunkSize
            prefetch = nextStart < reader.range.upperBound ? Self.start(reader, index + 1) : nil
            var buffer = try await current.value
            let offsetInChunk = Int(position - index * chunkSize)
            let end = Swift.min(Int64(buffer.writerIndex), reader.range.upperBound - index * chunkSize)
            guard end > offsetInChunk else {
                throw StorageError("object \(reader.object.digest): chunk \(index) is shorter than expected")
            }
            buffer.moveReaderIndex(to: offsetInChunk)
            buffer.moveWriterIndex(to: Int(end))
            position = index * chunkSize + end
            handedOut.append(buffer)
            return buffer
        }

        static func start(_ reader: ObjectReader, _ index: Int64) -> Task<ByteBuffer, any Error> {
            Task { try await reader.fetch(index) }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: self, position: range.lowerBound, prefetch: nil)
    }
}

/// What a sweep of unreferenced extents freed.
public struct SweepResult: Sendable, Equatable {
    public var extents: Int = 0
    public var bytes: Int64 = 0
}
