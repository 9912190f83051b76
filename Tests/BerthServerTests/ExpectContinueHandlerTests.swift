@testable import BerthServer
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

@Suite struct ExpectContinueHandlerTests {
    /// Counts the reads that reach the socket's end of the pipeline.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    private func connection() throws -> (EmbeddedChannel, ReadCounter) {
        let counter = ReadCounter()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers(counter, ExpectContinueHandler(http1: true))
        return (channel, counter)
    }

    /// A connection whose handler's output is recorded part by part and event by event.
    private func recordedConnection() throws -> (EmbeddedChannel, EventRecorder) {
        let (channel, _) = try connection()
        let events = EventRecorder()
        try channel.pipeline.syncOperations.addHandler(events)
        return (channel, events)
    }

    private func put(_ path: String) -> HTTPRequestPart {
        .head(HTTPRequest(method: .put, scheme: nil, authority: "localhost", path: path, headerFields: [.contentLength: "2"]))
    }

    private func paths(_ channel: EmbeddedChannel) throws -> [String] {
        var seen: [String] = []
        while let part = try channel.readInbound(as: HTTPRequestPart.self) {
            switch part {
            case .head(let request): seen.append(request.path ?? "")
            case .body: seen.append("body")
            case .end: seen.append("end")
            }
        }
        return seen
    }

    @Test func aPipelinedRequestWaitsForTheResponseBeforeItWithReadsPaused() throws {
        let (channel, counter) = try connection()
        try channel.writeInbound(put("/a"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "aa")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        try channel.writeInbound(put("/b"))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "bb")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        #expect(try paths(channel) == ["/a", "body", "end"])
        // Nothing more is read from the socket while /b is held.
        channel.read()
        #expect(counter.reads == 0)

        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .created)))
        #expect(try paths(channel) == [])
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        #expect(try paths(channel) == ["/b", "body", "end"])
        #expect(counter.reads == 1)
        channel.read()
        #expect(counter.reads == 2)
        _ = try channel.finish()
    }

    @Test func requestsBehindAResponseThatClosesTheConnectionAreDropped() throws {
        let (channel, _) = try connection()
        try channel.writeInbound(put("/a"))
        try channel.writeInbound(put("/b"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        try channel.writeInbound(put("/c"))
        #expect(try paths(channel) == ["/a"])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .contentTooLarge)))
        let head = try channel.readOutbound(as: HTTPResponsePart.self)
        guard case .head(let response) = head else {
            Issue.record("no response head: \(String(describing: head))")
            return
        }
        #expect(response.headerFields[.connection] == "close")
        // The response's end closes the connection (an embedded channel cannot close only its output).
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        #expect(try paths(channel) == [])
        #expect(!channel.isActive)
    }

    @Test func eachHeldRequestWaitsForItsOwnPredecessor() throws {
        let (channel, _) = try connection()
        for path in ["/a", "/b", "/c"] {
            try channel.writeInbound(put(path))
            try channel.writeInbound(HTTPRequestPart.end(nil))
        }
        #expect(try paths(channel) == ["/a", "end"])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        #expect(try paths(channel) == ["/b", "end"])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        #expect(try paths(channel) == ["/c", "end"])
        _ = try channel.finish()
    }

    @Test func aHalfCloseComesAfterTheHeldRequests() throws {
        let (channel, events) = try recordedConnection()
        try channel.writeInbound(put("/a"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        try channel.writeInbound(put("/b"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(events.seen == ["head", "end"])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        #expect(events.seen == ["head", "end", "head", "inputClosed"])
        _ = try channel.finish()
    }

    @Test func requestsBehindTheResponseAGracefulStopWaitsForAreDropped() throws {
        let (channel, _) = try connection()
        try channel.writeInbound(put("/a"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try channel.writeInbound(put("/b"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        #expect(try paths(channel) == ["/a", "end"])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        #expect(try paths(channel) == [])
        _ = try channel.finish()
    }

    @Test func onceDroppingNothingMoreIsHeldAndReadsGoOn() throws {
        let (channel, counter) = try connection()
        try channel.writeInbound(put("/a"))
        try channel.writeInbound(put("/b"))
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .contentTooLarge)))
        channel.writeAndFlush(HTTPResponsePart.end(nil), promise: nil)
        // Dropped as they come, during the linger: the socket keeps being read.
        try? channel.writeInbound(put("/c"))
        try? channel.writeInbound(put("/d"))
        #expect(try paths(channel) == ["/a"])
        let before = counter.reads
        channel.read()
        #expect(counter.reads == before + 1)
    }

    @Test func anErrorAfterAHeldRequestWaitsBehindIt() throws {
        let (channel, events) = try recordedConnection()
        try channel.writeInbound(put("/a"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        try channel.writeInbound(put("/b"))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        channel.pipeline.fireErrorCaught(ChannelError.inputClosed)
        #expect(events.seen == ["head", "end"])
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
        #expect(events.seen == ["head", "end", "head", "end", "error"])
        _ = try? channel.finish()
    }

    /// Records the order of reads and user events at the application's end.
    final class EventRecorder: ChannelInboundHandler {
        typealias InboundIn = HTTPRequestPart
        var seen: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head: seen.append("head")
            case .body: seen.append("body")
            case .end: seen.append("end")
            }
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .inputClosed? = event as? ChannelEvent { seen.append("inputClosed") }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            seen.append("error")
        }
    }
}
