@testable import BerthServer
import NIOCore
import NIOEmbedded
import Testing

@Suite struct InboundSlicerTests {
    @Test func aLargeReadIsPassedOnInSlicesInOrder() throws {
        let channel = EmbeddedChannel(handler: InboundSlicer(limit: 16))
        let bytes = (0..<40).map { UInt8($0) }
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        var sizes: [Int] = []
        var received: [UInt8] = []
        while let slice = try channel.readInbound(as: ByteBuffer.self) {
            sizes.append(slice.readableBytes)
            received += slice.readableBytesView
        }
        #expect(sizes == [16, 16, 8])
        #expect(received == bytes)
        #expect(try channel.finish().isClean)
    }

    @Test func aReadWithinTheLimitIsPassedOnWhole() throws {
        let channel = EmbeddedChannel(handler: InboundSlicer(limit: 16))
        for size in [1, 16] {
            try channel.writeInbound(ByteBuffer(repeating: 7, count: size))
            #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == size)
            #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        }
        #expect(try channel.finish().isClean)
    }
}
