import ServiceLifecycle
import Synchronization

/// Gives memory back once a burst of requests or a large transfer is over.
///
/// The object store keeps a few chunk buffers for the next transfer
/// (`ChunkBuffers`), and the heap does not shrink while a free block sits
/// below a used one. So after a blob push or pull the process held 20–70 MiB
/// it no longer used until the next one (measured, before the buffers were
/// reused: 35 → 15 MiB anon after one `malloc_trim`), and after a request
/// load 20 MiB (47 → 26 MiB). `trim` frees the kept buffers and the heap's
/// free pages.
///
/// Every `idleCheck` the trimmer looks at how much activity has ended: each
/// request counts one, a transfer of `largeTransfer` bytes or more counts
/// `burst`. Once `burst` or more has built up since the last trim and a check
/// finds nothing new, it trims; so a chunked push's back-to-back PATCHes, or
/// a load test, trim once, after the last.
final class MemoryTrimmer: Service, Sendable {
    /// Transfers of at least this many bytes count as a burst on their own.
    static let largeTransfer = 4 << 20
    /// Activity that, once it stops, asks for a trim.
    static let burst = 100

    let idleCheck: Duration
    /// How long after the services start `afterStartup` runs: the listeners
    /// bind within it.
    let startupGrace: Duration
    private let trim: @Sendable () -> Void
    private let afterStartup: @Sendable () -> Void
    private let activity = Atomic<Int>(0)

    /// `trim` gives the memory back, `afterStartup` what only start-up used
    /// (tests pass their own).
    init(
        idleCheck: Duration = .milliseconds(500), startupGrace: Duration = .seconds(2),
        trim: @escaping @Sendable () -> Void = MemoryAllocator.trim,
        afterStartup: @escaping @Sendable () -> Void = {}
    ) {
        self.idleCheck = idleCheck
        self.startupGrace = startupGrace
        self.trim = trim
        self.afterStartup = afterStartup
    }

    /// Notes that a request ended (one atomic add).
    func requestEnded() {
        activity.add(1, ordering: .relaxed)
    }

    /// Notes that a blob body of `bytes` (nil: not known) was sent or received.
    func transferEnded(bytes: Int?) {
        guard (bytes ?? .max) >= Self.largeTransfer else { return }
        activity.add(Self.burst, ordering: .relaxed)
    }

    /// Trims once start-up is over, then after each burst, until the server
    /// shuts down.
    func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            try? await Task.sleep(for: startupGrace)
            if !Task.isCancelled { afterStartup() }
            var seen = 0
            var sinceTrim = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: idleCheck)
                let count = activity.load(ordering: .relaxed)
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
