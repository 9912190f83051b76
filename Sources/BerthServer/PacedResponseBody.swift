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
    /// `ended` runs once the body is written or its writing failed.
    static func paced<Chunks: AsyncSequence & Sendable>(
        _ chunks: Chunks, on eventLoop: any EventLoop, ended: @escaping @Sendable () -> Void
    ) -> ResponseBody where Chunks.Element == ByteBuffer {
        ResponseBody { writer in
            defer { ended() }
            var previousTaken: EventLoopFuture<Void>?
            for try await chunk in chunks {
                try await writer.write(chunk)
                let taken = eventLoop.submit {}
                try await previousTaken?.get()
                previousTaken = taken
            }
            try await writer.finish(nil)
        }
    }
}
