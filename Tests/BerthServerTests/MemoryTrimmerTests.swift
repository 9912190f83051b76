import NIOConcurrencyHelpers
import Testing

@testable import BerthServer

/// The trimmer trims once after the last large transfer, never for small ones.
@Suite struct MemoryTrimmerTests {
    private let quiet = Duration.milliseconds(400)

    @Test func smallTransfersDoNotTrim() async throws {
        let trims = NIOLockedValueBox(0)
        let trimmer = MemoryTrimmer(quietPeriod: quiet) { trims.withLockedValue { $0 += 1 } }
        trimmer.transferEnded(bytes: 4096)
        trimmer.transferEnded(bytes: MemoryTrimmer.largeTransfer - 1)
        try await Task.sleep(for: quiet * 3)
        #expect(trims.withLockedValue { $0 } == 0)
    }

    @Test func backToBackTransfersTrimOnceAfterTheLast() async throws {
        let trims = NIOLockedValueBox(0)
        let trimmer = MemoryTrimmer(quietPeriod: quiet) { trims.withLockedValue { $0 += 1 } }
        for _ in 0..<5 {  // a chunked push: PATCHes closer together than the quiet period
            trimmer.transferEnded(bytes: 8 << 20)
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(trims.withLockedValue { $0 } == 0)
        try await Task.sleep(for: quiet * 3)
        #expect(trims.withLockedValue { $0 } == 1)
        trimmer.transferEnded(bytes: nil)  // a body of unknown length counts as large
        try await Task.sleep(for: quiet * 3)
        #expect(trims.withLockedValue { $0 } == 2)
    }
}
