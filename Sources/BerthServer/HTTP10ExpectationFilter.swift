import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// Removes `Expect` from HTTP/1.0 requests: RFC 9110 §10.1.1 has a server
/// ignore a `100-continue` expectation from HTTP/1.0, whose clients do not
/// know interim responses.
///
/// It sits in front of the HTTP/1 codec, the last place that knows a
/// request's version, so ``ExpectContinueHandler`` behind the codec never
/// sees such an expectation.
final class HTTP10ExpectationFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), head.version == .http1_0, head.headers.contains(name: "expect")
        else {
            context.fireChannelRead(data)
            return
        }
        head.headers.remove(name: "expect")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// Adds the filter in front of the HTTP/1 codec of `channel`'s pipeline.
    static func install(in channel: any Channel) throws {
        let pipeline = channel.pipeline.syncOperations
        let codec = try pipeline.handler(type: HTTP1ToHTTPServerCodec.self)
        try pipeline.addHandler(HTTP10ExpectationFilter(), position: .before(codec))
    }
}
