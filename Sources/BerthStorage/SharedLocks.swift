import NIOConcurrencyHelpers

/// Shared and exclusive locks by name: any number of tasks hold a name's lock
/// together, or one holds it alone.
///
/// Waiters are served in arrival order, so an exclusive waiter goes before the
/// shared ones that come after it and a steady stream of them cannot starve
/// it. Keep what runs under a shared lock short and free of further waits on
/// the same names: a task that asks for a shared lock it already holds waits
/// behind any exclusive waiter, which waits for it.
public final class SharedLocks: Sendable {
    private struct Waiter {
        let exclusive: Bool
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct Entry {
        var shared = 0
        var exclusive = false
        var waiters: [Waiter] = []

        var isIdle: Bool { shared == 0 && !exclusive && waiters.isEmpty }

        /// Grants the lock to the waiters at the head of the queue that can have it now.
        mutating func admit() -> [CheckedContinuation<Void, Never>] {
            var admitted: [CheckedContinuation<Void, Never>] = []
            while let first = waiters.first, !exclusive {
                if first.exclusive {
                    guard shared == 0 else { break }
                    exclusive = true
                } else {
                    shared += 1
                }
                admitted.append(waiters.removeFirst().continuation)
            }
            return admitted
        }
    }

    private let entries = NIOLockedValueBox([String: Entry]())

    public init() {}

    /// Runs `body` holding the shared lock of every name in `names` (taken in sorted order).
    public func withShared<T>(_ names: [String], _ body: () async throws -> T) async throws -> T {
        let ordered = Array(Set(names)).sorted()
        for name in ordered { await acquire(name, exclusive: false) }
        defer { for name in ordered.reversed() { release(name, exclusive: false) } }
        return try await body()
    }

    /// Runs `body` holding the shared lock of `name`.
    public func withShared<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        try await withShared([name], body)
    }

    /// Runs `body` holding the lock of `name` alone.
    public func withExclusive<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        await acquire(name, exclusive: true)
        defer { release(name, exclusive: true) }
        return try await body()
    }

    private func acquire(_ name: String, exclusive: Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = entries.withLockedValue { entries -> Bool in
                var entry = entries[name] ?? Entry()
                defer { entries[name] = entry }
                if entry.waiters.isEmpty && !entry.exclusive && (!exclusive || entry.shared == 0) {
                    if exclusive { entry.exclusive = true } else { entry.shared += 1 }
                    return true
                }
                entry.waiters.append(Waiter(exclusive: exclusive, continuation: continuation))
                return false
            }
            if granted { continuation.resume() }
        }
    }

    private func release(_ name: String, exclusive: Bool) {
        let admitted = entries.withLockedValue { entries -> [CheckedContinuation<Void, Never>] in
            guard var entry = entries[name] else { preconditionFailure("released '\(name)', which is not held") }
            if exclusive { entry.exclusive = false } else { entry.shared -= 1 }
            let admitted = entry.admit()
            entries[name] = entry.isIdle ? nil : entry
            return admitted
        }
        for continuation in admitted { continuation.resume() }
    }
}
