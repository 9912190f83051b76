import HummingbirdCore
import Logging
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

/// Hummingbird's HTTP/1.1 channel with ``ExpectContinueHandler`` behind its
/// codec and ``HTTP10ExpectationFilter`` in front of it.
struct BerthHTTP1Channel: HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    private let http1: HTTP1Channel
    var responder: Responder { http1.responder }

    init(responder: @escaping Responder) {
        http1 = HTTP1Channel(responder: responder, configuration: .init(additionalChannelHandlers: [ExpectContinueHandler()]))
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            try HTTP10ExpectationFilter.install(in: channel)
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}
