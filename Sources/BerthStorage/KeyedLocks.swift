import NIOConcurrencyHelpers

/// Mutual exclusion by name, for read-modify-write sequences on records that
/// concurrent requests share (an object's digest, an upload session).
///
/// Waiters are resumed in arrival order. Locks are released even when the body throws.
public final class KeyedLocks: Sendable {
    private struct State {
        var held: Set<String> = []
        var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Runs `body` while holding every lock in `names` (taken in sorted order).
    public func withLocks<T>(_ names: [String], _ body: () async throws -> T) async throws -> T {
        let ordered = Array(Set(names)).sorted()
        for name in ordered { await acquire(name) }
        defer { for name in ordered.reversed() { release(name) } }
        return try await body()
    }

    public func withLock<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        try await withLocks([name], body)
    }

    /// Takes the lock only if it is free right now.
    public func tryLock(_ name: String) -> Bool {
        state.withLockedValue { $0.held.insert(name).inserted }
    }

    public func acquire(_ name: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLockedValue { state -> Bool in
                if state.held.insert(name).inserted { return true }
                state.waiters[name, default: []].append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    public func release(_ name: String) {
        let next = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            if var queue = state.waiters[name], !queue.isEmpty {
                let first = queue.removeFirst()
                state.waiters[name] = queue.isEmpty ? nil : queue
                return first  // ownership passes to the waiter; `held` keeps the name
            }
            state.held.remove(name)
            return nil
        }
        next?.resume()
    }
}
