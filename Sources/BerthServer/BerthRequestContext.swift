import BerthCore
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// The request context: Hummingbird's core storage plus who is calling and from where.
struct BerthRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``AuthMiddleware``; anonymous until credentials are checked.
    var principal: Principal = .anonymous
    /// The client's IP address, for the audit log, throttling and response
    /// memory: the peer's, or behind trusted proxies the one they forwarded
    /// (``ForwardedForMiddleware``).
    var source: String
    /// The request's channel (an HTTP/2 stream's own), which response bodies
    /// pace themselves against and close when the client stops reading.
    let channel: any Channel
    /// Shared with the middlewares before the one that authenticates, so the request log names the caller.
    let trace = RequestTrace()
    /// The `/v2` route of `path`, parsed once by ``ObservabilityMiddleware`` for its label and reused by
    /// ``DistributionController`` (which parses again only if the path changed in between).
    var parsedRoute: (path: String, route: DistributionRoute?)?

    /// Whom the request's response leases memory for: its client address and connection.
    var holder: ResponseBudget.Holder {
        // An HTTP/2 stream's parent is its connection; an accepted connection's is the listening socket.
        let connection = channel.parent.flatMap { $0.parent == nil ? nil : $0 } ?? channel
        // IPv6 clients share by their /64, as for connections and the auth throttle.
        return ResponseBudget.Holder(address: AuthThrottle.sourceName(source), connection: ObjectIdentifier(connection))
    }

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.source = source.channel.remoteAddress?.ipAddress ?? "unknown"
        self.channel = source.channel
    }
}

/// What later middlewares learn about a request, for earlier ones to report.
final class RequestTrace: Sendable {
    private let box = NIOLockedValueBox("anonymous")
    var actor: String {
        get { box.withLockedValue { $0 } }
        set { box.withLockedValue { $0 = newValue } }
    }
}
