import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird's HTTP/1.1 channel with ``ExpectContinueHandler`` behind its
/// codec and ``HTTP10ExpectationFilter`` in front of it.
///
/// `readTimeout` closes a connection whose request body stalls (nothing read
/// for that long), that sits idle between requests, or whose client reads
/// none of a response for that long (``WriteStallHandler``). With `limits`,
/// a connection from an address holding its share is closed at once (the
/// TLS listener passes none here: it checks before the handshake).
struct BerthHTTP1Channel: HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    private let http1: HTTP1Channel
    private let readTimeout: TimeAmount
    private let limits: ConnectionLimits?
    var responder: Responder { http1.responder }

    init(responder: @escaping Responder, readTimeout: TimeAmount, limits: ConnectionLimits?) {
        http1 = HTTP1Channel(
            responder: responder,
            configuration: .init(additionalChannelHandlers: [ExpectContinueHandler(http1: true)], idleTimeout: readTimeout))
        self.readTimeout = readTimeout
        self.limits = limits
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        if let refusal: EventLoopFuture<Value> = limits?.refusal(channel) { return refusal }
        do {
            try channel.pipeline.syncOperations.addHandler(WriteStallHandler(timeout: readTimeout))
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            try HTTP10ExpectationFilter.install(in: channel)
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}
