@testable import BerthServer
import NIOCore
import NIOEmbedded
import Testing

@Suite struct PlaintextCompactorTests {
    @Test func aReadIsPassedOnAsACopySizedToItsBytes() throws {
        let channel = EmbeddedChannel(handler: PlaintextCompactor())
        // A 600-byte read at the front of a 64 KiB buffer, as TLS hands on a read.
        var read = ByteBufferAllocator().buffer(capacity: 64 * 1024)
        read.writeBytes((0..<600).map { UInt8($0 % 251) })
        try channel.writeInbound(read)
        let copy = try #require(try channel.readInbound(as: ByteBuffer.self))
        #expect(copy == read)
        #expect(copy.capacity == 1024)
        // Its own storage: nothing downstream keeps the TLS handler's buffer.
        let original = read.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(copy.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } != original)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(try channel.finish().isClean)
    }
}
