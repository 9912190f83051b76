import BerthCore
import Hummingbird
import NIOCore

/// The request context: Hummingbird's core storage plus who is calling and from where.
struct BerthRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``AuthMiddleware``; anonymous until credentials are checked.
    var principal: Principal = .anonymous
    /// The peer's IP address, for the audit log and throttling.
    let source: String

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.source = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }
}
