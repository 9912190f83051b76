import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Answers `Expect: 100-continue` with an interim `100 Continue`, so a client
/// that waits for it (curl does for bodies over 1 MiB) sends its body at once
/// instead of after its own timeout (one second for curl). Hummingbird does not
/// answer the expectation itself.
///
/// The interim response goes out when the request's head arrives, unless the
/// connection is still writing the response to an earlier (pipelined)
/// request: then it goes out after that response's end, and not at all if the
/// final response to this request has begun by then. A request that declares
/// an empty body gets none. The handler sits after the HTTP/1.1 or HTTP/2
/// codec, where the request's version is no longer known; an HTTP/1.0
/// request's expectation, which RFC 9110 says to ignore, is removed in front
/// of the codec (``HTTP10ExpectationFilter``).
final class ExpectContinueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Request heads read so far; the first request is number 1.
    private var headsRead = 0
    /// Responses ended so far: the response being written answers request `ended + 1`.
    private var ended = 0
    /// Requests, in order, whose `100 Continue` waits for the responses before them.
    private var waiting: [Int] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let request) = unwrapInboundIn(data) {
            headsRead += 1
            if Self.expectsContinue(request) {
                if headsRead == ended + 1 {
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
                } else {
                    waiting.append(headsRead)
                }
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response) where response.status.kind != .informational:
            // The final response to this request begins: a `100` would be moot.
            if waiting.first == ended + 1 { waiting.removeFirst() }
            context.write(data, promise: promise)
        case .end:
            ended += 1
            context.write(data, promise: promise)
            if waiting.first == ended + 1 {
                waiting.removeFirst()
                context.write(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
        default:
            context.write(data, promise: promise)
        }
    }

    /// Whether `request` expects a `100 Continue` before sending its body.
    static func expectsContinue(_ request: HTTPRequest) -> Bool {
        guard let expect = request.headerFields[.expect], expect.lowercased() == "100-continue" else { return false }
        return request.headerFields[.contentLength] != "0"
    }
}
