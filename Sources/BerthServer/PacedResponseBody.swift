import Hummingbird
import NIOCore

extension ResponseBody {
    /// A body that streams `chunks` with at most two of them waiting for the
    /// channel's event loop.
    ///
    /// A write only queues its chunk on the event loop; the writer suspends
    /// when the socket backs up, not when the loop itself is the bottleneck.
    /// Over TLS the loop is (it encrypts every byte), so a producer reading
    /// from the page cache ran hundreds of MiB ahead of it: a 1 GiB pull held
    /// 140–300 MiB, every chunk in fresh pages. After each write this body
    /// queues an empty task behind it and waits for the one queued after the
    /// previous chunk, which the loop runs only once that chunk is written.
    ///
    /// A client that takes none of a chunk for `stallTimeout` (it stopped
    /// reading, or keeps an HTTP/2 window shut) has its channel closed: the
    /// connection over HTTP/1.1, the stream over HTTP/2. Otherwise the write
    /// would wait forever, holding the chunks in flight (2–3 MiB).
    ///
    /// `ended` runs once the body is written or its writing failed.
    static func paced<Chunks: AsyncSequence & Sendable>(
        _ chunks: Chunks, on channel: any Channel, stallTimeout: TimeAmount, ended: @escaping @Sendable () -> Void
    ) -> ResponseBody where Chunks.Element == ByteBuffer {
        ResponseBody { writer in
            defer { ended() }
            let eventLoop = channel.eventLoop
            var previousTaken: EventLoopFuture<Void>?
            for try await chunk in chunks {
                let stalled = eventLoop.scheduleTask(in: stallTimeout) { channel.close(promise: nil) }
                defer { stalled.cancel() }
                try await writer.write(chunk)
                let taken = eventLoop.submit {}
                try await previousTaken?.get()
                previousTaken = taken
            }
            try await writer.finish(nil)
        }
    }
}
