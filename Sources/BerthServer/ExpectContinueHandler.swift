import HTTPTypes
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2

/// Answers `Expect: 100-continue` with an interim `100 Continue` once the
/// application reads the request's body (``ExpectContinueMiddleware`` sends
/// ``ReadingBody`` then), so a client that waits for it (curl does for bodies
/// over 1 MiB) sends its body at once instead of after its own timeout (one
/// second for curl), and one whose request is refused (401, 404, 413 …) is
/// told so before it sends anything. Hummingbird does not answer the
/// expectation itself.
///
/// A request whose final response begins while its `100` is still withheld
/// gets none: over HTTP/1.1 that response carries `Connection: close` and the
/// connection closes after it (RFC 9110 §10.1.1, with a short linger), rather
/// than reading and throwing away a body the client may still send; so does
/// a `413`, whose request's body is not read to its end. Requests pipelined
/// behind such a response are dropped: over HTTP/1.1 what the client sends
/// after the head of a request whose predecessor is still unanswered is held
/// here, with the socket's reads paused, until that response ends, since a
/// request already handed on would run with nobody to answer it. Over HTTP/2, any response that ends
/// while its client is still sending the request's body is followed by
/// RST_STREAM(NO_ERROR) (RFC 9113 §8.1): nothing reads the rest, and the
/// stream, 30 KB of server memory, would otherwise stay open until the
/// client ends it or `read_timeout` passes (a client refused with a 401 and
/// silent after its headers held it two minutes). The application reads a request's body
/// only after writing the responses to the requests before it, so a `100`
/// always follows those. A request that declares an empty body expects
/// nothing. The handler sits after the HTTP/1.1 or HTTP/2 codec, where the
/// request's version is no longer known; an HTTP/1.0 request's expectation,
/// which RFC 9110 says to ignore, is removed in front of the codec
/// (``HTTP10ExpectationFilter``).
final class ExpectContinueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The outbound user event that says the application reads the current request's body.
    struct ReadingBody: Sendable {}

    /// Whether this handler serves an HTTP/1.1 connection (else one HTTP/2 stream).
    private let http1: Bool
    /// Request heads read so far; the first request is number 1.
    private var headsRead = 0
    /// Responses ended so far: the response being written answers request `ended + 1`.
    private var ended = 0
    /// Requests that expect a `100` not sent yet.
    private var expecting: Set<Int> = []
    /// HTTP/1.1: whether a response refused the rest of its request's body;
    /// once it ends, the connection closes.
    private var refusesBody = false
    /// Whether what the client sends is dropped: requests after the one whose response closes the connection.
    private var discarding = false
    /// HTTP/2: whether the request's end has been read; a response that ends
    /// before it resets the stream.
    private var requestEnded = false
    /// HTTP/1.1: what the client sent from the head of a request whose
    /// predecessor's response has not ended, in order; while it holds
    /// anything, the socket is not read.
    private var held = CircularBuffer<Inbound>()
    /// Whether a read was asked for while ``held`` held something.
    private var readPending = false

    /// Whether the server asked the connection to close once its current
    /// response is written (a graceful stop): requests after it are dropped.
    private var quiescing = false

    /// Something the client sent, held in order.
    private enum Inbound {
        case part(NIOAny)
        case event(Any)
        case error(any Error)
    }

    init(http1: Bool) {
        self.http1 = http1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if discarding { return }
        if http1, !held.isEmpty || (isHead(data) && ended < headsRead) {
            held.append(.part(data))
            return
        }
        deliver(context: context, data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server's own request to close after the current response goes on at once.
        if event is ChannelShouldQuiesceEvent {
            quiescing = http1
            context.fireUserInboundEventTriggered(event)
            return
        }
        // A half-close comes after the requests the client sent before it.
        if held.isEmpty {
            context.fireUserInboundEventTriggered(event)
        } else {
            held.append(.event(event))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request the client sent after a good one cannot fail that one first.
        if held.isEmpty {
            context.fireErrorCaught(error)
        } else {
            held.append(.error(error))
        }
    }

    func read(context: ChannelHandlerContext) {
        if held.isEmpty {
            context.read()
        } else {
            readPending = true
        }
    }

    /// Hands a request's part on, or drops it once the connection closes after a response.
    private func deliver(context: ChannelHandlerContext, _ data: NIOAny) {
        if case .end = unwrapInboundIn(data) { requestEnded = true }
        if case .head(let request) = unwrapInboundIn(data) {
            // The connection closes after the response begun (or the server is
            // stopping): a request sent after it would run with no way to answer it.
            if refusesBody || quiescing { discarding = true }
            headsRead += 1
            if Self.expectsContinue(request) { expecting.insert(headsRead) }
        }
        if !discarding { context.fireChannelRead(data) }
    }

    /// Hands on what was held behind the response that just ended, up to the
    /// next request's head that must wait for its own predecessor.
    private func releaseHeld(context: ChannelHandlerContext) {
        var delivered = false
        while let next = held.first {
            switch next {
            case .part(let data):
                if isHead(data), ended < headsRead, !refusesBody, !quiescing { break }
                held.removeFirst()
                deliver(context: context, data)
                delivered = true
                continue
            case .event(let event):
                held.removeFirst()
                context.fireUserInboundEventTriggered(event)
                continue
            case .error(let error):
                held.removeFirst()
                context.fireErrorCaught(error)
                continue
            }
            break
        }
        if delivered { context.fireChannelReadComplete() }
        if held.isEmpty, readPending {
            readPending = false
            context.read()
        }
    }

    private func isHead(_ data: NIOAny) -> Bool {
        if case .head = unwrapInboundIn(data) { return true }
        return false
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is ReadingBody else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        // The application handles one request at a time, after the responses before it.
        if expecting.remove(ended + 1) != nil {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        promise?.succeed()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var response) where response.status.kind != .informational:
            // Answered without its body, or refusing the rest of it: the client
            // sends none, or what it sends nobody reads.
            let withheld = expecting.remove(ended + 1) != nil
            if http1, withheld || response.status == .contentTooLarge {
                refusesBody = true
                response.headerFields[.connection] = "close"
            }
            context.write(wrapOutboundOut(.head(response)), promise: promise)
        case .end:
            ended += 1
            defer { if !held.isEmpty { releaseHeld(context: context) } }
            guard http1 ? refusesBody : !requestEnded else {
                context.write(data, promise: promise)
                return
            }
            // Closed or reset after the response's end, which the client then has whole.
            let written = context.eventLoop.makePromise(of: Void.self)
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { [http1, channel = context.channel] _ in
                if http1 {
                    Self.lingeringClose(channel)
                } else if !handler.value.requestEnded {
                    Self.resetStream(channel)
                }
            }
            written.futureResult.cascade(to: promise)
            context.write(data, promise: written)
        default:
            context.write(data, promise: promise)
        }
    }

    /// How long a connection closing after a response keeps reading (and
    /// dropping) what the client still sends before it closes.
    static let lingerTime = TimeAmount.seconds(2)

    /// Closes the connection's output, then the connection once the client
    /// closes or after ``lingerTime``: closed at once, a connection whose
    /// client is still sending would answer with a reset, and a reset can
    /// discard the response before the client has read it.
    static func lingeringClose(_ channel: any Channel) {
        channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        channel.eventLoop.scheduleTask(in: lingerTime) { channel.close(promise: nil) }
    }

    /// Ends an HTTP/2 stream whose response is whole with RST_STREAM(NO_ERROR),
    /// written below the codec (which takes only HTTP parts); a close would say CANCEL.
    static func resetStream(_ channel: any Channel) {
        guard let codec = try? channel.pipeline.syncOperations.context(handlerType: HTTP2FramePayloadToHTTPServerCodec.self) else {
            channel.close(promise: nil)
            return
        }
        codec.writeAndFlush(NIOAny(HTTP2Frame.FramePayload.rstStream(.noError)), promise: nil)
    }

    /// Whether `request` expects a `100 Continue` before sending its body.
    static func expectsContinue(_ request: HTTPRequest) -> Bool {
        guard let expect = request.headerFields[.expect], expect.lowercased() == "100-continue" else { return false }
        return request.headerFields[.contentLength] != "0"
    }
}
