import NIOHTTP1

/// A request its client gave up on: the connection closed while its body was
/// read (the body ended before its declared length), or the connection or
/// HTTP/2 stream went away and the request's task was cancelled. An
/// interrupted `docker push` does this. It is the client's doing, not a
/// server error: it is logged at `info` and counted as 400 or 499, never as
/// a 500 that would page an operator.
enum ClientAbort {
    /// Recorded for a request whose client left before any answer could
    /// reach it (nginx's "client closed request"); it is never sent.
    static let goneStatus = 499

    /// What an aborted request is recorded as: 400 when its body ended early
    /// (a half-closed client may still read that answer), 499 when it was
    /// cancelled; nil for any other error.
    static func status(for error: any Error) -> Int? {
        if let parse = error as? HTTPParserError, parse == .invalidEOFState { return 400 }
        if error is CancellationError { return goneStatus }
        return nil
    }
}
