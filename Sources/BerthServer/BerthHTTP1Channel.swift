import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird's HTTP/1.1 channel with ``ExpectContinueHandler`` behind its
/// codec and ``HTTP10ExpectationFilter`` in front of it.
///
/// `readTimeout` closes a connection whose request body stalls (nothing read
/// for that long) or that sits idle between requests. A response being
/// written is not timed here: a blob GET closes the connection itself when
/// its client takes nothing for that long (``ResponseBody/paced(_:on:stallTimeout:ended:)``).
struct BerthHTTP1Channel: HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    private let http1: HTTP1Channel
    var responder: Responder { http1.responder }

    init(responder: @escaping Responder, readTimeout: TimeAmount) {
        http1 = HTTP1Channel(
            responder: responder,
            configuration: .init(additionalChannelHandlers: [ExpectContinueHandler()], idleTimeout: readTimeout))
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
