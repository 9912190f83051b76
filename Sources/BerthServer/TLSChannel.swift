import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2
import NIOSSL

/// The TLS listener's connections: ALPN picks HTTP/2 or HTTP/1.1.
///
/// Hummingbird's own HTTP/2 channel keeps the protocol's flow-control
/// defaults (64 KiB windows, 16 KiB frames), which hold a 1 GiB push over h2
/// to about half its speed over HTTP/1.1 (DESIGN §9). This one announces
/// `HTTP2Tuning`'s windows and frame size, and closes a connection gracefully
/// (GOAWAY, then close once its streams are done) when the server quiesces.
struct TLSChannel: HTTPChannelHandler {
    typealias Stream = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>
    typealias Multiplexer = NIOHTTP2Handler.AsyncStreamMultiplexer<Stream>

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<NIONegotiatedHTTPVersion<BerthHTTP1Channel.Value, Multiplexer>>
        let channel: any Channel
    }

    /// The longest a TLS handshake and ALPN may take, whatever `read_timeout` is.
    static let handshakeLimit = TimeAmount.seconds(10)

    let responder: Responder
    private let contexts: TLSContextBox
    private let http1: BerthHTTP1Channel
    private let http2: NIOHTTP2Handler.Configuration
    private let readTimeout: TimeAmount
    private let limits: ConnectionLimits

    /// `readTimeout`: see ``BerthHTTP1Channel``; over HTTP/2 it resets a stream
    /// whose request body stalls and closes a connection with no open stream;
    /// before either, it bounds the TLS handshake (at most ``handshakeLimit``).
    /// `contexts`: the TLS context a new connection takes (``context(_:)``).
    init(
        contexts: TLSContextBox, tuning: HTTP2Tuning, readTimeout: TimeAmount, limits: ConnectionLimits,
        responder: @escaping Responder
    ) {
        self.contexts = contexts
        self.responder = responder
        self.http1 = BerthHTTP1Channel(responder: responder, readTimeout: readTimeout, limits: nil)
        self.http2 = tuning.handlerConfiguration
        self.readTimeout = readTimeout
        self.limits = limits
    }

    /// The served context for a certificate and key: ALPN offers h2 and http/1.1.
    static func context(_ tlsConfiguration: TLSConfiguration) throws -> NIOSSLContext {
        var tls = tlsConfiguration
        tls.applicationProtocols = NIOHTTP2SupportedALPNProtocols
        // How long a close waits for the client's close_notify (default 5 s):
        // a client that never answers would otherwise hold a shutdown that long.
        tls.shutdownTimeout = .seconds(1)
        return try NIOSSLContext(configuration: tls)
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        if let refusal: EventLoopFuture<Value> = limits.refusal(channel) { return refusal }
        let negotiating = CloseWhileNegotiating()
        do {
            try channel.pipeline.syncOperations.addHandlers(NIOSSLServerHandler(context: contexts.current), negotiating)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        let negotiatingOnLoop = NIOLoopBound(negotiating, eventLoop: channel.eventLoop)
        let streamTimeout = Duration.nanoseconds(readTimeout.nanoseconds)
        // Until ALPN has picked a protocol no idle timer runs: a client that
        // connects and never finishes its handshake is closed after `readTimeout`, at most
        // `handshakeLimit`: a handshake takes milliseconds, and sockets held open without
        // one would fill the address's and the listener's shares for minutes.
        let handshakeDeadline = channel.eventLoop.scheduleTask(in: min(readTimeout, Self.handshakeLimit)) {
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in handshakeDeadline.cancel() }
        return channel.configureHTTP2AsyncSecureUpgrade { channel -> EventLoopFuture<BerthHTTP1Channel.Value> in
            do {
                try channel.pipeline.syncOperations.addHandler(PlaintextCompactor())
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
            return http1.setup(channel: channel, logger: logger)
        } http2ConnectionInitializer: { channel in
            channel.eventLoop.makeCompletedFuture {
                let closer = HTTP2GracefulClose(idleTimeout: readTimeout)
                try channel.pipeline.syncOperations.addHandler(FlushCoalescer())
                try channel.pipeline.syncOperations.addHandler(InboundSlicer())
                let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(
                    mode: .server, streamDelegate: closer.delegate(on: channel.eventLoop), configuration: http2
                ) { stream in
                    stream.eventLoop.makeCompletedFuture {
                        if !limits.admitStream(stream) {
                            try stream.pipeline.syncOperations.addHandler(RefusedStreamHandler())
                        }
                        try stream.pipeline.syncOperations.addHandlers(
                            HTTP2FramePayloadToHTTPServerCodec(), ExpectContinueHandler(http1: false),
                            HTTPConnectionStateHandler(idleTimeout: streamTimeout, logger: logger))
                        return try Stream(wrappingChannelSynchronously: stream)
                    }
                }
                try channel.pipeline.syncOperations.addHandler(closer)
                return multiplexer
            }
        }
        .map { negotiated in
            negotiated.whenComplete { _ in  // on the channel's event loop, whose future it is
                handshakeDeadline.cancel()
                let negotiating = negotiatingOnLoop.value
                negotiating.negotiated = true
                channel.pipeline.syncOperations.removeHandler(negotiating, promise: nil)  // off the path of every read
            }
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            // A future's wait ignores cancellation: closing the channel ends it, as a
            // stop that cancels its connections must not wait for a handshake's deadline.
            let negotiated = try await withTaskCancellationHandler {
                try await value.negotiated.get()
            } onCancel: {
                value.channel.close(promise: nil)
            }
            switch negotiated {
            case .http1_1(let connection):
                await http1.handle(value: connection, logger: logger)
            case .http2(let multiplexer):
                try await withThrowingDiscardingTaskGroup { group in
                    for try await stream in multiplexer.inbound {
                        group.addTask { await handleHTTP(asyncChannel: stream, logger: logger) }
                    }
                }
            }
        } catch {
            logger.debug("TLS connection ended", metadata: ["error": "\(error)"])
        }
    }
}

/// HTTP/2 settings of the TLS listener.
///
/// The windows bound what the server buffers of a client's uploads, and the
/// buffering costs more than its size: swift-nio-http2 copies each read into
/// a fresh buffer and every DATA frame it emits keeps that buffer alive. With
/// 4 MiB stream windows (16 MiB for the connection) 512 MiB pushes over h2
/// peaked at 48-59 MiB of anon memory (medians), against 28-34 MiB with 1 MiB
/// (4 MiB), at the same speed on loopback (docs/performance.md). 1 MiB is also the
/// per-stream upload buffer of Go's HTTP/2 server, which the peer uses.
struct HTTP2Tuning: Sendable {
    /// The largest window HTTP/2 allows (2^31 - 1).
    static let maxWindow = Int(Int32.max)
    /// `http2_stream_window`'s default.
    static let defaultStreamWindow = 1 << 20

    /// The window each stream starts with and is kept at (SETTINGS_INITIAL_WINDOW_SIZE).
    var streamWindow: Int
    /// The connection's window, shared by its streams.
    var connectionWindow: Int
    /// The largest DATA frame the client may send (SETTINGS_MAX_FRAME_SIZE).
    var maxFrameSize = 1 << 20
    /// Streams a client may have open at once; with `streamWindow` this bounds
    /// the request bytes one connection can have buffered.
    var maxConcurrentStreams = 64

    /// A stream window in 65,535...2^31-1; the connection's is four times it, so
    /// that a few concurrent uploads (a client pushing layers in parallel) each get theirs.
    init(streamWindow: Int = defaultStreamWindow) {
        self.streamWindow = streamWindow
        self.connectionWindow = min(Self.maxWindow, 4 * streamWindow)
    }

    var handlerConfiguration: NIOHTTP2Handler.Configuration {
        var configuration = NIOHTTP2Handler.Configuration()
        configuration.connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16_384),  // NIO's default
            HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
            HTTP2Setting(parameter: .maxFrameSize, value: maxFrameSize),
        ]
        configuration.connection.targetWindowSize = connectionWindow
        configuration.stream.targetWindowSize = streamWindow
        return configuration
    }
}

/// Closes an HTTP/2 connection when the server quiesces, or once it has had no
/// open stream for `idleTimeout` (`read_timeout`): a GOAWAY naming the last
/// stream it took, then the close once those streams are done.
final class HTTP2GracefulClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private var context: ChannelHandlerContext?
    private var openStreams = 0
    private var lastStream = HTTP2StreamID(0)
    private var closing = false
    /// How long the connection may have no open stream before it is closed.
    private let idleTimeout: TimeAmount
    private var idleTimer: Scheduled<Void>?

    init(idleTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
    }

    /// The stream delegate that keeps the count of open streams (events arrive on the channel's loop).
    func delegate(on eventLoop: any EventLoop) -> any NIOHTTP2StreamDelegate {
        StreamCounter(handler: NIOLoopBound(self, eventLoop: eventLoop))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        startIdleTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        self.context = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            closeGracefully()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// GOAWAY naming the last stream taken; the close follows once no stream is open.
    private func closeGracefully() {
        guard !closing, let context else { return }
        closing = true
        idleTimer?.cancel()
        idleTimer = nil
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStream, errorCode: .noError, opaqueData: nil))
        context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
        if openStreams == 0 { context.close(promise: nil) }
    }

    private func startIdleTimer() {
        guard let context, !closing, idleTimer == nil else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: idleTimeout) {
            handler.value.idleTimer = nil
            if handler.value.openStreams == 0 { handler.value.closeGracefully() }
        }
    }

    fileprivate func streamOpened(_ id: HTTP2StreamID) {
        openStreams += 1
        lastStream = max(lastStream, id)
        idleTimer?.cancel()
        idleTimer = nil
    }

    fileprivate func streamClosed() {
        openStreams -= 1
        guard openStreams == 0 else { return }
        if closing { context?.close(promise: nil) } else { startIdleTimer() }
    }

    private struct StreamCounter: NIOHTTP2StreamDelegate {
        let handler: NIOLoopBound<HTTP2GracefulClose>
        func streamCreated(_ id: HTTP2StreamID, channel: any Channel) { handler.value.streamOpened(id) }
        func streamClosed(_ id: HTTP2StreamID, channel: any Channel) { handler.value.streamClosed() }
    }
}

/// Holds a flush until the event loop's current tick is over, so that the
/// responses of many HTTP/2 streams finished in one tick leave in one write.
///
/// Each stream's response reaches the connection as a task of its own that
/// ends in a flush, and every flush made TLS records of what was written and
/// a `write(2)` of them: under 160 concurrent streams of small responses,
/// a syscall and a wake-up of the client per response.
final class FlushCoalescer: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny

    private var flushPending = false

    func flush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        // After the channel closes, the context's flush goes nowhere: harmless.
        context.eventLoop.execute {
            let (handler, context) = bound.value
            guard handler.flushPending else { return }
            handler.flushPending = false
            context.flush()
        }
    }

    /// What was written before a close (a GOAWAY, say) leaves before it.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }
}

/// Closes a TLS connection that has not finished its handshake and ALPN when
/// the server quiesces; once a protocol is picked, its own handlers drain it.
///
/// Until then nothing in the pipeline answers the quiesce event, and the
/// connection would hold a graceful stop until its handshake deadline
/// (`read_timeout`), then its cancellation, past the stop's limits.
final class CloseWhileNegotiating: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    /// Set on the channel's event loop once ALPN has picked a protocol.
    var negotiated = false

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, !negotiated {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
