import NIOCore

/// Copies what TLS decrypted into a buffer sized to it (NIO rounds capacities
/// up to a power of two) before HTTP/1.1 parses it, so the TLS handler's read
/// buffer is free again at once.
///
/// NIOSSL decrypts every record of a socket read into one buffer it keeps
/// (32 KiB or more, growing with the reads) and passes that buffer on. The
/// HTTP/1.1 decoder hands the body on in slices of it, and each slice waiting
/// in the request body keeps the whole buffer alive; at its next read NIOSSL
/// then finds the buffer shared and copies all of it, stale bytes included,
/// into a fresh one of the same capacity. With a copy here instead, of the
/// readable bytes only, a waiting body slice holds no more than its read,
/// and NIOSSL writes into its own buffer in place.
final class PlaintextCompactor: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        var copy = context.channel.allocator.buffer(capacity: bytes.readableBytes)
        copy.writeImmutableBuffer(bytes)
        context.fireChannelRead(wrapInboundOut(copy))
    }
}
