import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// Memory that `/v2` response bodies hold until their clients take them, bounded
/// in all, per client address and per connection.
///
/// A body waits in the server until its client reads it: a manifest, tag list
/// or referrers page whole, a blob GET its chunks in flight (three). A client
/// that reads nothing (an HTTP/2 window kept at 0, a socket never read) while
/// it opens streams and connections made the server hold all those bodies
/// until `read_timeout`: one connection with 64 streams of 3 MiB manifests
/// took 236 MiB. Each such body now leases its bytes here first. A request
/// whose lease does not fit waits for room, holding nothing (it reads its body
/// again once it fits), and leases come back as bodies are taken or their
/// channels close. A client that reads nothing thus stalls its own requests,
/// and at worst other clients' large ones, instead of exhausting memory.
///
/// Bodies of at most ``sliceBytes`` are not leased: they cost no more than the
/// stream or connection that carries them, which ``ConnectionLimits`` and
/// HTTP/2's stream limit bound.
///
/// A request waits at most as long as the server waits for a stalled client
/// (`read_timeout`): by then every body held by a client that reads nothing
/// has been dropped, so what still holds the room is real load, and the
/// request is refused with 429 and `Retry-After` instead of waiting on.
final class ResponseBudget: Sendable {
    /// The largest body sent without a lease, and the slices leased bodies are written in.
    static let sliceBytes = 16 << 10

    /// Bytes all leases together may hold.
    let total: Int
    /// Bytes the leases of one client address may hold.
    let perAddress: Int
    /// Bytes the leases of one connection (all its HTTP/2 streams) may hold;
    /// also the most one lease is charged, so that any body fits alone.
    let perConnection: Int

    /// Whom a lease is held for.
    struct Holder: Hashable, Sendable {
        let address: String
        let connection: ObjectIdentifier
    }

    /// Why a request stopped waiting for a lease: its channel closed, or its task was cancelled.
    struct Abandoned: Error {}

    /// Why a request stopped waiting for a lease: none fit within its longest wait.
    struct TimedOut: Error {}

    private let state = NIOLockedValueBox(State())

    /// `total`'s quarter for each address, and at most 64 MiB for each connection.
    init(total: Int) {
        self.total = total
        self.perAddress = total / 4
        self.perConnection = min(64 << 20, perAddress)
    }

    /// The default total: an eighth of the machine's memory, 64 MiB to 1 GiB.
    static func defaultTotal(physicalMemory: UInt64) -> Int {
        Int(min(max(physicalMemory / 8, 64 << 20), 1 << 30))
    }

    /// A lease of `bytes` for `holder` if it fits now.
    func tryLease(_ bytes: Int, for holder: Holder) -> Lease? {
        let charged = min(bytes, perConnection)
        let taken = state.withLockedValue { $0.take(charged, for: holder, within: self) }
        return taken ? Lease(charged, for: holder, from: self) : nil
    }

    /// A lease of `bytes` for `holder`, once it fits. Waiting stops with
    /// ``Abandoned`` when `closed` completes (the request's channel closed) or
    /// the task is cancelled, and with ``TimedOut`` after `maxWait`.
    func lease(
        _ bytes: Int, for holder: Holder, until closed: EventLoopFuture<Void>, waitingAtMost maxWait: TimeAmount
    ) async throws -> Lease {
        if let lease = tryLease(bytes, for: holder) { return lease }
        let charged = min(bytes, perConnection)
        let id = state.withLockedValue { $0.nextID() }
        let expiry = NIOLockedValueBox<Scheduled<Void>?>(nil)
        defer { expiry.withLockedValue { $0?.cancel() } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let granted = state.withLockedValue {
                    $0.wait(Waiter(id: id, bytes: charged, holder: holder, continuation: continuation), within: self)
                }
                if granted { return continuation.resume() }
                // Queued first, so that neither a close nor a cancellation before this point is missed: the
                // flag is set before `onCancel` runs, and a future that has completed still runs the callback.
                closed.whenComplete { _ in self.abandon(id) }
                if Task.isCancelled { abandon(id) }
                let timer = closed.eventLoop.scheduleTask(in: maxWait) { self.abandon(id, with: TimedOut()) }
                expiry.withLockedValue { $0 = timer }
            }
            return Lease(charged, for: holder, from: self)
        } onCancel: {
            self.abandon(id)
        }
    }

    /// Leased bytes and waiting requests, for metrics and tests.
    var usage: (leased: Int, waiting: Int) { state.withLockedValue { ($0.total, $0.waiters.count) } }

    fileprivate func give(_ bytes: Int, for holder: Holder) {
        let granted = state.withLockedValue { $0.give(bytes, for: holder, within: self) }
        for waiter in granted { waiter.continuation.resume() }
    }

    private func abandon(_ id: UInt64, with error: any Error = Abandoned()) {
        state.withLockedValue { $0.abandon(id) }?.continuation.resume(throwing: error)
    }

    /// Bytes a response holds, given back once by ``release()`` or when the lease is dropped.
    final class Lease: Sendable {
        /// What the lease was charged: the body's size, at most ``ResponseBudget/perConnection``.
        let bytes: Int
        private let holder: Holder
        private let budget: ResponseBudget
        private let released = NIOLockedValueBox(false)

        fileprivate init(_ bytes: Int, for holder: Holder, from budget: ResponseBudget) {
            self.bytes = bytes
            self.holder = holder
            self.budget = budget
        }

        /// Whether a body of `size` bytes fits this lease.
        func covers(_ size: Int) -> Bool { bytes >= min(size, budget.perConnection) }

        func release() {
            guard !released.withLockedValue({ was in defer { was = true }; return was }) else { return }
            budget.give(bytes, for: holder)
        }

        deinit { release() }
    }

    private struct Waiter {
        let id: UInt64
        let bytes: Int
        let holder: Holder
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var total = 0
        var addresses: [String: Int] = [:]
        var connections: [ObjectIdentifier: Int] = [:]
        /// Requests waiting for room, oldest first.
        var waiters: [Waiter] = []
        var lastID: UInt64 = 0

        func fits(_ bytes: Int, for holder: Holder, within limits: ResponseBudget) -> Bool {
            total + bytes <= limits.total
                && addresses[holder.address, default: 0] + bytes <= limits.perAddress
                && connections[holder.connection, default: 0] + bytes <= limits.perConnection
        }

        mutating func take(_ bytes: Int, for holder: Holder, within limits: ResponseBudget) -> Bool {
            guard fits(bytes, for: holder, within: limits) else { return false }
            total += bytes
            addresses[holder.address, default: 0] += bytes
            connections[holder.connection, default: 0] += bytes
            return true
        }

        /// Gives `bytes` back and takes room for the waiters that now fit, in order.
        mutating func give(_ bytes: Int, for holder: Holder, within limits: ResponseBudget) -> [Waiter] {
            total -= bytes
            let address = addresses[holder.address, default: bytes] - bytes
            addresses[holder.address] = address > 0 ? address : nil
            let connection = connections[holder.connection, default: bytes] - bytes
            connections[holder.connection] = connection > 0 ? connection : nil
            guard !waiters.isEmpty else { return [] }
            var granted: [Waiter] = []
            var waiting: [Waiter] = []
            for waiter in waiters {
                if take(waiter.bytes, for: waiter.holder, within: limits) { granted.append(waiter) } else { waiting.append(waiter) }
            }
            waiters = waiting
            return granted
        }

        mutating func nextID() -> UInt64 {
            lastID += 1
            return lastID
        }

        /// Takes the waiter's room if it fits (true), else queues it.
        mutating func wait(_ waiter: Waiter, within limits: ResponseBudget) -> Bool {
            if take(waiter.bytes, for: waiter.holder, within: limits) { return true }
            waiters.append(waiter)
            return false
        }

        /// The waiter to fail, if `id` is still waiting.
        mutating func abandon(_ id: UInt64) -> Waiter? {
            waiters.firstIndex { $0.id == id }.map { waiters.remove(at: $0) }
        }
    }
}

/// A buffer as consecutive slices of at most `size` bytes, for a paced body.
struct BufferSlices: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let buffer: ByteBuffer
    let size: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var rest: ByteBuffer
        let size: Int
        mutating func next() async -> ByteBuffer? {
            rest.readableBytes > 0 ? rest.readSlice(length: Swift.min(size, rest.readableBytes)) : nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(rest: buffer, size: size) }
}

extension ResponseBody {
    /// `buffer` as the body: whole without a lease; with one, in slices paced
    /// against `channel` (closed when its client takes none for `stallTimeout`),
    /// the lease given back once the body is written.
    static func leased(
        _ buffer: ByteBuffer, _ lease: ResponseBudget.Lease?, on channel: any Channel, stallTimeout: TimeAmount
    ) -> ResponseBody {
        guard let lease else { return ResponseBody(byteBuffer: buffer) }
        let slices = BufferSlices(buffer: buffer, size: ResponseBudget.sliceBytes)
        return .paced(slices, on: channel, stallTimeout: stallTimeout) { lease.release() }
    }
}
