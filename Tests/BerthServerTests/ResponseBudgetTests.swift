import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import BerthServer

/// The budget grants what fits in all, per address and per connection; a
/// request that does not fit waits and is granted, in order, as leases come
/// back; a wait ends when its channel closes, its task is cancelled or its
/// longest wait has passed.
@Suite struct ResponseBudgetTests {
    private final class Connection {}
    private let budget = ResponseBudget(total: 16 << 20)  // 4 MiB per address and per connection
    private let first = Connection()
    private let second = Connection()

    private func holder(_ address: String, _ connection: Connection) -> ResponseBudget.Holder {
        ResponseBudget.Holder(address: address, connection: ObjectIdentifier(connection))
    }

    @Test func limitsAreATotalsQuarterPerAddressAndAtMost64MiBPerConnection() {
        #expect(budget.perAddress == 4 << 20 && budget.perConnection == 4 << 20)
        let large = ResponseBudget(total: 1 << 30)
        #expect(large.perAddress == 256 << 20 && large.perConnection == 64 << 20)
        #expect(ResponseBudget.defaultTotal(physicalMemory: 24 << 30) == 1 << 30)
        #expect(ResponseBudget.defaultTotal(physicalMemory: 256 << 20) == 64 << 20)
        #expect(ResponseBudget.defaultTotal(physicalMemory: 2 << 30) == 256 << 20)
    }

    @Test func anAddressGetsItsShareAndNoMore() throws {
        let held = try #require(budget.tryLease(3 << 20, for: holder("10.0.0.1", first)))
        #expect(budget.tryLease(2 << 20, for: holder("10.0.0.1", second)) == nil)
        let other = try #require(budget.tryLease(2 << 20, for: holder("10.0.0.2", second)))
        #expect(budget.usage.leased == 5 << 20)
        held.release()
        held.release()  // once only
        #expect(budget.usage.leased == 2 << 20)
        _ = other
    }

    @Test func aBodyLargerThanAConnectionsShareIsChargedThatShare() throws {
        let lease = try #require(budget.tryLease(100 << 20, for: holder("10.0.0.1", first)))
        #expect(lease.bytes == 4 << 20 && lease.covers(100 << 20))
        #expect(budget.tryLease(20 << 10, for: holder("10.0.0.1", first)) == nil)
    }

    @Test func aDroppedLeaseIsGivenBack() {
        do {
            let lease = budget.tryLease(4 << 20, for: holder("10.0.0.1", first))
            #expect(lease != nil && budget.usage.leased == 4 << 20)
        }
        #expect(budget.usage.leased == 0)
    }

    @Test func waitersAreGrantedInOrderAsLeasesComeBack() async throws {
        let open = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        defer { open.succeed() }
        let a = holder("10.0.0.1", first)
        /// The waiters' leases, in the order they were granted.
        let granted = NIOLockedValueBox<[(String, ResponseBudget.Lease)]>([])
        func waiter(_ name: String) -> Task<Void, any Error> {
            Task { [budget] in
                let lease = try await budget.lease(3 << 20, for: a, until: open.futureResult, waitingAtMost: .minutes(1))
                granted.withLockedValue { $0.append((name, lease)) }
            }
        }
        var held = budget.tryLease(3 << 20, for: a)
        #expect(held != nil)
        let earlier = waiter("earlier")
        try await waitUntil { budget.usage.waiting == 1 }
        let later = waiter("later")
        try await waitUntil { budget.usage.waiting == 2 }
        // The address's 4 MiB hold one of the two: the earlier waiter first, the later one still waits.
        held = nil
        try await waitUntil { granted.withLockedValue { $0.count } == 1 }
        #expect(granted.withLockedValue { $0.map(\.0) } == ["earlier"] && budget.usage.waiting == 1)
        granted.withLockedValue { $0[0].1.release() }
        try await waitUntil { granted.withLockedValue { $0.count } == 2 }
        #expect(granted.withLockedValue { $0.map(\.0) } == ["earlier", "later"])
        #expect(budget.usage.leased == 3 << 20 && budget.usage.waiting == 0)
        _ = (held, try await earlier.value, try await later.value)
    }

    /// Waits until `condition` holds (a task has queued), at most 10 s.
    private func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            try #require(ContinuousClock.now < deadline)
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test func aWaitEndsWhenItsChannelCloses() async throws {
        let a = holder("10.0.0.1", first)
        let held = try #require(budget.tryLease(4 << 20, for: a))
        let closed = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        let waiting = Task { [budget] in try await budget.lease(1 << 20, for: a, until: closed.futureResult, waitingAtMost: .minutes(1)) }
        try await waitUntil { budget.usage.waiting == 1 }
        closed.succeed()
        await #expect(throws: ResponseBudget.Abandoned.self) { try await waiting.value }
        // A channel closed before the wait begins ends it at once.
        await #expect(throws: ResponseBudget.Abandoned.self) {
            try await budget.lease(1 << 20, for: a, until: closed.futureResult, waitingAtMost: .minutes(1))
        }
        #expect(budget.usage.waiting == 0)
        held.release()
        #expect(budget.usage.leased == 0)
    }

    @Test func aWaitEndsAfterItsLongestWait() async throws {
        let open = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        defer { open.succeed() }
        let a = holder("10.0.0.1", first)
        let held = try #require(budget.tryLease(4 << 20, for: a))
        let started = ContinuousClock.now
        await #expect(throws: ResponseBudget.TimedOut.self) {
            try await budget.lease(1 << 20, for: a, until: open.futureResult, waitingAtMost: .milliseconds(200))
        }
        #expect(ContinuousClock.now - started >= .milliseconds(200))
        #expect(budget.usage.waiting == 0)
        // A wait granted in time gets its lease.
        let waiting = Task { [budget] in
            try await budget.lease(1 << 20, for: a, until: open.futureResult, waitingAtMost: .minutes(1))
        }
        try await waitUntil { budget.usage.waiting == 1 }
        held.release()
        let lease = try await waiting.value
        #expect(budget.usage.leased == 1 << 20 && budget.usage.waiting == 0)
        lease.release()
        #expect(budget.usage.leased == 0)
    }

    @Test func aWaitEndsWhenItsTaskIsCancelled() async throws {
        let open = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        defer { open.succeed() }
        let a = holder("10.0.0.1", first)
        let held = try #require(budget.tryLease(4 << 20, for: a))
        let waiting = Task { [budget] in try await budget.lease(1 << 20, for: a, until: open.futureResult, waitingAtMost: .minutes(1)) }
        try await waitUntil { budget.usage.waiting == 1 }
        waiting.cancel()
        await #expect(throws: ResponseBudget.Abandoned.self) { try await waiting.value }
        #expect(budget.usage.waiting == 0)
        held.release()
        #expect(budget.usage.leased == 0)
    }
}
