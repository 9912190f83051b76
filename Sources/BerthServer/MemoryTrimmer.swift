import NIOConcurrencyHelpers

/// Gives memory back after large transfers.
///
/// `MemoryAllocator.tune` keeps 1 MiB chunk buffers in the heap so that a
/// transfer reuses them instead of faulting in fresh pages for each, and the
/// heap does not shrink while a free block sits below a used one. So after a
/// blob push or pull the process held 20–70 MiB it no longer used until the
/// next one (measured: 35 → 15 MiB anon after one `malloc_trim`). Once no
/// large transfer has ended for `quietPeriod`, the trimmer trims the heap;
/// a chunked push's back-to-back PATCHes trim once, after the last.
final class MemoryTrimmer: Sendable {
    /// Transfers of at least this many bytes ask for a trim.
    static let largeTransfer = 4 << 20

    let quietPeriod: Duration
    private let trim: @Sendable () -> Void
    private let endedTransfers = NIOLockedValueBox<UInt64>(0)

    /// `trim` gives the memory back (tests pass their own).
    init(quietPeriod: Duration = .milliseconds(500), trim: @escaping @Sendable () -> Void = MemoryAllocator.trim) {
        self.quietPeriod = quietPeriod
        self.trim = trim
    }

    /// Notes that a transfer of `bytes` (nil: not known) ended.
    func transferEnded(bytes: Int?) {
        guard (bytes ?? .max) >= Self.largeTransfer else { return }
        let ended = endedTransfers.withLockedValue { count in
            count &+= 1
            return count
        }
        Task.detached(priority: .background) { [self] in
            try? await Task.sleep(for: quietPeriod)
            guard endedTransfers.withLockedValue({ $0 == ended }) else { return }  // a later transfer will trim
            trim()
        }
    }
}
