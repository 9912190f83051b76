import BerthStorage
import Testing

/// Shared holders together, a holder alone, arrival order kept, `tryLock`.
@Suite struct KeyedLocksTests {
    /// Records the order in which tasks got their lock.
    actor Order {
        var entered: [String] = []
        func enter(_ name: String) { entered.append(name) }
    }

    /// A latch a holder waits on until the test opens it.
    final class Latch: Sendable {
        let stream: AsyncStream<Void>
        let continuation: AsyncStream<Void>.Continuation
        init() { (stream, continuation) = AsyncStream.makeStream() }
        func open() { continuation.finish() }
        func wait() async { for await _ in stream {} }
    }

    /// Gives waiting tasks time to run (the assertions that follow check what did not happen).
    func settle() async throws { try await Task.sleep(for: .milliseconds(50)) }

    @Test func sharedHoldersHoldTogether() async throws {
        let locks = KeyedLocks()
        let latch = Latch()
        let order = Order()
        let first = Task {
            try await locks.withShared("r") {
                await order.enter("first")
                await latch.wait()
            }
        }
        try await settle()
        try await locks.withShared("r") { await order.enter("second") }
        #expect(await order.entered == ["first", "second"])
        latch.open()
        try await first.value
    }

    @Test func exclusiveWaitsForSharedHoldersAndSharedArrivalsWaitBehindIt() async throws {
        let locks = KeyedLocks()
        let latch = Latch()
        let order = Order()
        let reader = Task {
            try await locks.withShared(["r", "s"]) {
                await order.enter("reader")
                await latch.wait()
            }
        }
        try await settle()
        let writer = Task { try await locks.withLock("r") { await order.enter("writer") } }
        try await settle()
        let late = Task { try await locks.withShared("r") { await order.enter("late reader") } }
        // Another name is not affected.
        try await locks.withLock("t") { await order.enter("other name") }
        try await settle()
        #expect(await order.entered == ["reader", "other name"])
        latch.open()
        try await reader.value
        try await writer.value
        try await late.value
        #expect(await order.entered == ["reader", "other name", "writer", "late reader"])
    }

    @Test func tryLockTakesOnlyAFreeLock() async throws {
        let locks = KeyedLocks()
        #expect(locks.tryLock("u"))
        #expect(!locks.tryLock("u"))
        let order = Order()
        let shared = Task { try await locks.withShared("u") { await order.enter("shared") } }
        try await settle()
        #expect(await order.entered == [])
        locks.release("u")
        try await shared.value
        #expect(await order.entered == ["shared"])
        #expect(locks.tryLock("u"))  // released again after the shared holder
        locks.release("u")
    }

    /// Who holds the lock right now, and whether anyone ever held it against the rules.
    actor Holders {
        var shared = 0
        var exclusive = false
        var violated = false
        var entered = 0

        func enter(exclusive wantsExclusive: Bool) {
            if exclusive || (wantsExclusive && shared > 0) { violated = true }
            if wantsExclusive { exclusive = true } else { shared += 1 }
            entered += 1
        }

        func leave(exclusive wasExclusive: Bool) {
            if wasExclusive { exclusive = false } else { shared -= 1 }
        }
    }

    @Test func exclusiveHoldersHoldAloneAndLocksAreReleasedOnThrow() async throws {
        struct Failure: Error {}
        let locks = KeyedLocks()
        await #expect(throws: Failure.self) {
            try await locks.withLock("r") { throw Failure() }
        }
        let holders = Holders()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                let exclusive = i.isMultiple(of: 3)
                group.addTask {
                    let body = {
                        await holders.enter(exclusive: exclusive)
                        // Stay a while, so that others try to come in meanwhile.
                        try await Task.sleep(for: .milliseconds(2))
                        await holders.leave(exclusive: exclusive)
                    }
                    if exclusive {
                        try await locks.withLock("r", body)
                    } else {
                        try await locks.withShared("r", body)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(await holders.entered == 40)
        #expect(await holders.violated == false)
        // Everything was released: an exclusive holder gets the lock at once.
        try await locks.withLock("r") {}
    }
}
