import NIOConcurrencyHelpers
import NIOCore

/// A few chunk buffers kept for reuse, so that a push or a pull does not take
/// a fresh megabyte from the heap for every chunk it moves.
///
/// Without reuse, the heap either keeps freed chunk buffers for the next ones
/// (a high trim threshold: up to that much stays resident in each malloc
/// arena after a transfer, which `malloc_trim` does not reach outside the
/// main one) or gives them back and faults in and zeroes fresh pages for each
/// chunk (an eighth of a pull's CPU, measured). With reuse it need do
/// neither: the chunk buffers come back here, and the heap can give back
/// what is freed at once (`MemoryAllocator`'s low trim threshold).
///
/// A buffer handed back may still be referenced elsewhere (a write queued on
/// a socket). `take` clears it, and `ByteBuffer.clear()` gives a buffer whose
/// storage is shared fresh storage, so reuse never changes bytes another
/// holder still reads; it only saves the allocation when nobody does.
public final class ChunkBuffers: Sendable {
    /// The bytes a chunk holds.
    public let chunkSize: Int
    /// Buffers kept at most; more handed back are freed.
    public let limit: Int
    private let free: NIOLockedValueBox<[ByteBuffer]>
    /// Room for a chunk and the padding that aligns its first byte.
    private var capacity: Int { chunkSize + ExtentFiles.directAlignment }

    public init(chunkSize: Int, limit: Int = 8) {
        self.chunkSize = chunkSize
        self.limit = limit
        self.free = NIOLockedValueBox([])
    }

    /// An empty buffer with room for one chunk. `aligned`: its bytes start at
    /// an address a direct write accepts (its reader and writer indices are
    /// past the padding that takes), else at index 0.
    public func take(aligned: Bool) -> ByteBuffer {
        var buffer = free.withLockedValue { $0.popLast() } ?? ByteBufferAllocator().buffer(capacity: capacity)
        buffer.clear()
        if aligned {
            let address = buffer.withUnsafeMutableWritableBytes { Int(bitPattern: $0.baseAddress!) }
            let alignment = ExtentFiles.directAlignment
            let padding = (alignment - address % alignment) % alignment
            buffer.moveWriterIndex(forwardBy: padding)
            buffer.moveReaderIndex(forwardBy: padding)
        }
        return buffer
    }

    /// Keeps `buffer` for a later `take`, if it came from `take` and fewer
    /// than `limit` are kept.
    public func recycle(_ buffer: ByteBuffer) {
        guard buffer.capacity >= capacity else { return }
        free.withLockedValue { if $0.count < limit { $0.append(buffer) } }
    }

    /// Frees the buffers kept (once transfers are over, before the heap is trimmed).
    public func release() {
        var kept: [ByteBuffer] = []
        free.withLockedValue { swap(&$0, &kept) }
    }  // `kept` is freed here, outside the lock

    /// Buffers kept now (for tests).
    public var kept: Int { free.withLockedValue { $0.count } }
}
