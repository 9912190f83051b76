import NIOConcurrencyHelpers
import Testing

@testable import BerthServer

/// Waits until `condition` holds or `timeout` passes (tests run in parallel,
/// so a timer may fire late); returns whether it held.
private func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline { return false }
        try await Task.sleep(for: .milliseconds(20))
    }
    return true
}

/// The trimmer trims once after the last large transfer, never for small ones.
@Suite struct MemoryTrimmerTests {
    private let quiet = Duration.milliseconds(200)

    @Test func smallTransfersDoNotTrim() async throws {
        let trims = NIOLockedValueBox(0)
        let trimmer = MemoryTrimmer(quietPeriod: quiet) { trims.withLockedValue { $0 += 1 } }
        trimmer.transferEnded(bytes: 4096)
        trimmer.transferEnded(bytes: MemoryTrimmer.largeTransfer - 1)
        try await Task.sleep(for: quiet * 5)
        #expect(trims.withLockedValue { $0 } == 0)
    }

    @Test func backToBackTransfersTrimOnceAfterTheLast() async throws {
        let trims = NIOLockedValueBox(0)
        let trimmer = MemoryTrimmer(quietPeriod: quiet) { trims.withLockedValue { $0 += 1 } }
        for _ in 0..<5 { trimmer.transferEnded(bytes: 8 << 20) }  // a chunked push's PATCHes
        #expect(try await eventually { trims.withLockedValue { $0 } == 1 })
        try await Task.sleep(for: quiet * 5)
        #expect(trims.withLockedValue { $0 } == 1)  // the four earlier ones found a later transfer
        trimmer.transferEnded(bytes: nil)  // a body of unknown length counts as large
        #expect(try await eventually { trims.withLockedValue { $0 } == 2 })
    }
}

/// As a service, the trimmer trims once a burst of requests is over.
@Suite struct MemoryTrimmerBurstTests {
    @Test func trimsOnceABurstIsOverAndNotForAFewRequests() async throws {
        let trims = NIOLockedValueBox(0)
        let check = Duration.milliseconds(100)
        let trimmer = MemoryTrimmer(idleCheck: check) { trims.withLockedValue { $0 += 1 } }
        let service = Task { try await trimmer.run() }
        defer { service.cancel() }
        for _ in 0..<MemoryTrimmer.burst { trimmer.requestEnded() }
        #expect(try await eventually { trims.withLockedValue { $0 } == 1 })
        for _ in 0..<5 { trimmer.requestEnded() }  // a health check or two: no trim
        try await Task.sleep(for: check * 6)
        #expect(trims.withLockedValue { $0 } == 1)
    }
}
