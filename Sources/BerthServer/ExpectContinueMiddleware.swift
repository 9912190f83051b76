import Hummingbird
import NIOCore

/// Lets ``ExpectContinueHandler`` send `100 Continue` when a handler first
/// reads the body of a request that expects it, not when its head arrives:
/// a request that is refused before its body is read (bad credentials, no
/// right, no such upload) is answered without inviting the body first.
/// Requests without the expectation pass through untouched.
struct ExpectContinueMiddleware: RouterMiddleware {
    typealias Context = BerthRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard ExpectContinueHandler.expectsContinue(request.head) else { return try await next(request, context) }
        var request = request
        request.body = RequestBody(asyncSequence: BodyAskingToContinue(body: request.body, channel: context.channel))
        return try await next(request, context)
    }
}

/// A request body that tells the channel it is being read at its first read.
struct BodyAskingToContinue: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let body: RequestBody
    let channel: any Channel

    struct AsyncIterator: AsyncIteratorProtocol {
        var body: RequestBody.AsyncIterator
        var channel: (any Channel)?

        mutating func next() async throws -> ByteBuffer? {
            if let channel {
                channel.triggerUserOutboundEvent(ExpectContinueHandler.ReadingBody(), promise: nil)
                self.channel = nil
            }
            return try await body.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(body: body.makeAsyncIterator(), channel: channel)
    }
}
