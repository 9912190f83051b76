import NIOHTTP1
import NIOHTTP2
import NIOSSL
import ServiceLifecycle
import Synchronization

/// A request its client gave up on: the connection closed while its body was
/// read (the body ended before its declared length, or a TLS connection ended
/// without its close), its HTTP/2 stream was reset, or its connection went away
/// and the request's task was cancelled. An interrupted `docker push` does
/// this. It is the client's doing, not a server error: it is logged at `info`
/// and counted as 400 or 499, never as a 500 that would page an operator.
/// While the server stops, the same errors are the stop's doing: 503, which
/// clients retry.
enum ClientAbort {
    /// Recorded for a request whose client left before any answer could
    /// reach it (nginx's "client closed request"); it is never sent.
    static let goneStatus = 499

    /// What an aborted request is recorded as: 400 when its body ended early
    /// (a half-closed client may still read that answer), 499 when nothing
    /// can reach its client, 503 for either while the server stops; nil for
    /// any other error.
    static func status(for error: any Error, stopping: Bool) -> Int? {
        let bodyEnded: Bool
        if let parse = error as? HTTPParserError, parse == .invalidEOFState {
            bodyEnded = true
        } else if error is CancellationError || error is NIOHTTP2Errors.StreamClosed
            || (error as? NIOSSLError).map({ if case .uncleanShutdown = $0 { true } else { false } }) == true
        {
            bodyEnded = false
        } else {
            return nil
        }
        if stopping { return 503 }
        return bodyEnded ? 400 : goneStatus
    }
}

/// Says whether the server has begun a graceful stop: a request cut off by
/// the stop is the server's doing, not its client's (``ClientAbort``).
final class StopSignal: Service, Sendable {
    private let stopping = Atomic<Bool>(false)

    var isStopping: Bool { stopping.load(ordering: .relaxed) }

    func run() async throws {
        try? await gracefulShutdown()
        stopping.store(true, ordering: .relaxed)
    }
}

/// Runs `action` once a graceful stop reaches it: the service group stops its
/// services in the reverse of their order, so one appended late acts early.
struct OnGracefulStop: Service {
    let action: @Sendable () async -> Void

    func run() async throws {
        // Cancelled instead (a service failed): the server's own stop does it.
        guard (try? await gracefulShutdown()) != nil else { return }
        await action()
    }
}
