import NIOConcurrencyHelpers
import Testing

@testable import BerthServer

/// The trimmer trims once a burst of requests or a large transfer is over,
/// not for a few requests or small transfers.
@Suite struct MemoryTrimmerTests {
    private let check = Duration.milliseconds(100)

    /// Runs a trimmer whose trims are counted in `trims` while `body` runs.
    private func withTrimmer(
        startups: NIOLockedValueBox<Int> = NIOLockedValueBox(0),
        _ body: (MemoryTrimmer, NIOLockedValueBox<Int>) async throws -> Void
    ) async throws {
        let trims = NIOLockedValueBox(0)
        let trimmer = MemoryTrimmer(
            idleCheck: check, startupGrace: check,
            trim: { trims.withLockedValue { $0 += 1 } },
            afterStartup: { startups.withLockedValue { $0 += 1 } })
        let service = Task { try await trimmer.run() }
        defer { service.cancel() }
        try await body(trimmer, trims)
    }

    /// Waits until `condition` holds or 10 s pass (tests run in parallel, so a
    /// check may come late); returns whether it held.
    private func eventually(_ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    @Test func aBurstOfRequestsTrimsOnceItIsOver() async throws {
        try await withTrimmer { trimmer, trims in
            for _ in 0..<MemoryTrimmer.burst { trimmer.requestEnded() }
            #expect(try await eventually { trims.withLockedValue { $0 } == 1 })
            for _ in 0..<5 { trimmer.requestEnded() }  // a health check or two: no trim
            try await Task.sleep(for: check * 6)
            #expect(trims.withLockedValue { $0 } == 1)
        }
    }

    @Test func startUpIsGivenBackOnceAndIsNoTrim() async throws {
        let startups = NIOLockedValueBox(0)
        try await withTrimmer(startups: startups) { trimmer, trims in
            #expect(try await eventually { startups.withLockedValue { $0 } == 1 })
            try await Task.sleep(for: check * 6)
            #expect(startups.withLockedValue { $0 } == 1)
            #expect(trims.withLockedValue { $0 } == 0)
        }
    }

    @Test func smallTransfersDoNotTrim() async throws {
        try await withTrimmer { trimmer, trims in
            trimmer.transferEnded(bytes: 4096)
            trimmer.transferEnded(bytes: MemoryTrimmer.largeTransfer - 1)
            try await Task.sleep(for: check * 6)
            #expect(trims.withLockedValue { $0 } == 0)
        }
    }

    @Test func backToBackTransfersTrimOnceAfterTheLast() async throws {
        try await withTrimmer { trimmer, trims in
            for _ in 0..<5 { trimmer.transferEnded(bytes: 8 << 20) }  // a chunked push's PATCHes
            #expect(try await eventually { trims.withLockedValue { $0 } == 1 })
            try await Task.sleep(for: check * 6)
            #expect(trims.withLockedValue { $0 } == 1)
            trimmer.transferEnded(bytes: nil)  // a body of unknown length counts as large
            #expect(try await eventually { trims.withLockedValue { $0 } == 2 })
        }
    }
}
