import NIOConcurrencyHelpers

/// Locks by name: one task holds a name's lock alone (`withLock`), for
/// read-modify-write sequences on records that concurrent requests share (an
/// object's digest, an upload session), or any number hold it together
/// (`withShared`), as the writes into a registry do while only its deletion
/// holds it alone.
///
/// Waiters are served in arrival order, so a waiter for the lock alone goes
/// before the shared ones that come after it and a steady stream of them cannot
/// starve it. Keep what runs under a shared lock short and free of further
/// waits on the same names: a task that asks for a shared lock it already
/// holds waits behind any waiter for the lock alone, which waits for it. Locks
/// are released even when the body throws.
public final class KeyedLocks: Sendable {
    private struct Waiter {
        let exclusive: Bool
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct Entry {
        var shared = 0
        var exclusive = false
        var waiters: [Waiter] = []

        var isIdle: Bool { shared == 0 && !exclusive && waiters.isEmpty }

        /// Takes the lock if a new arrival may have it now.
        mutating func take(exclusive: Bool) -> Bool {
            guard waiters.isEmpty, !self.exclusive, !exclusive || shared == 0 else { return false }
            if exclusive { self.exclusive = true } else { shared += 1 }
            return true
        }

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

    /// Runs `body` holding the lock of every name in `names` alone (taken in sorted order).
    public func withLocks<T>(_ names: [String], _ body: () async throws -> T) async throws -> T {
        try await holding(names, exclusive: true, body)
    }

    /// Runs `body` holding the lock of `name` alone.
    public func withLock<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        try await holding([name], exclusive: true, body)
    }

    /// Runs `body` holding the shared lock of every name in `names` (taken in sorted order).
    public func withShared<T>(_ names: [String], _ body: () async throws -> T) async throws -> T {
        try await holding(names, exclusive: false, body)
    }

    /// Runs `body` holding the shared lock of `name`.
    public func withShared<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        try await holding([name], exclusive: false, body)
    }

    /// Takes the lock of `name` alone only if that is possible right now; `release` gives it back.
    public func tryLock(_ name: String) -> Bool {
        entries.withLockedValue { entries in
            var entry = entries[name] ?? Entry()
            defer { entries[name] = entry.isIdle ? nil : entry }
            return entry.take(exclusive: true)
        }
    }

    /// Gives back a lock `tryLock` took.
    public func release(_ name: String) {
        release(name, exclusive: true)
    }

    private func holding<T>(_ names: [String], exclusive: Bool, _ body: () async throws -> T) async throws -> T {
        let ordered = Array(Set(names)).sorted()
        for name in ordered { await acquire(name, exclusive: exclusive) }
        defer { for name in ordered.reversed() { release(name, exclusive: exclusive) } }
        return try await body()
    }

    private func acquire(_ name: String, exclusive: Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = entries.withLockedValue { entries -> Bool in
                var entry = entries[name] ?? Entry()
                defer { entries[name] = entry }
                if entry.take(exclusive: exclusive) { return true }
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
