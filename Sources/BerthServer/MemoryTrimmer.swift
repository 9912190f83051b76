import NIOConcurrencyHelpers
import ServiceLifecycle
import Synchronization

/// Gives memory back after large transfers and after bursts of requests.
///
/// `MemoryAllocator.tune` keeps 1 MiB chunk buffers in the heap so that a
/// transfer reuses them instead of faulting in fresh pages for each, and the
/// heap does not shrink while a free block sits below a used one. So after a
/// blob push or pull the process held 20–70 MiB it no longer used until the
/// next one (measured: 35 → 15 MiB anon after one `malloc_trim`), and after
/// a request load 20 MiB (47 → 26 MiB).
///
/// Once no large transfer has ended for `quietPeriod`, the trimmer trims the
/// heap; a chunked push's back-to-back PATCHes trim once, after the last. As
/// a service it also checks every `idleCheck` whether requests came in: once
/// `burst` or more have since the last trim and a check finds none new, it
/// trims.
final class MemoryTrimmer: Service, Sendable {
    /// Transfers of at least this many bytes ask for a trim.
    static let largeTransfer = 4 << 20
    /// Requests that, once they stop, ask for a trim.
    static let burst = 100

    let quietPeriod: Duration
    let idleCheck: Duration
    private let trim: @Sendable () -> Void
    private let endedTransfers = NIOLockedValueBox<UInt64>(0)
    private let requests = Atomic<Int>(0)

    /// `trim` gives the memory back (tests pass their own).
    init(
        quietPeriod: Duration = .milliseconds(500), idleCheck: Duration = .seconds(1),
        trim: @escaping @Sendable () -> Void = MemoryAllocator.trim
    ) {
        self.quietPeriod = quietPeriod
        self.idleCheck = idleCheck
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

    /// Notes that a request ended (one atomic add).
    func requestEnded() {
        requests.add(1, ordering: .relaxed)
    }

    /// Trims after each burst of requests, until the server shuts down.
    func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            var seen = 0
            var sinceTrim = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: idleCheck)
                let count = requests.load(ordering: .relaxed)
                if count != seen {
                    sinceTrim += count &- seen
                    seen = count
                } else if sinceTrim >= Self.burst {
                    sinceTrim = 0
                    trim()
                }
            }
        }
    }
}
