import Foundation
import NIOConcurrencyHelpers

/// Slows down guessing: more than `limit` failed authentications within the
/// window from one source address, or against one access key, and further
/// attempts from it or on it are refused until the window has passed.
public final class AuthThrottle: Sendable {
    public let limit: Int
    public let window: Double
    private let failures = NIOLockedValueBox([String: [Date]]())

    public init(limit: Int, window: Double = 60) {
        self.limit = limit
        self.window = window
    }

    /// Seconds to wait, when `source` or `accessKey` is throttled now.
    public func retryAfter(source: String, accessKey: String?, now: Date = Date()) -> Int? {
        let names = ["source:" + source] + (accessKey.map { ["key:" + $0] } ?? [])
        return failures.withLockedValue { table -> Int? in
            var wait: Double = 0
            for name in names {
                let recent = (table[name] ?? []).filter { now.timeIntervalSince($0) < window }
                table[name] = recent.isEmpty ? nil : recent
                if recent.count >= limit, let oldest = recent.first {
                    wait = max(wait, window - now.timeIntervalSince(oldest))
                }
            }
            return wait > 0 ? Int(wait.rounded(.up)) : nil
        }
    }

    public func recordFailure(source: String, accessKey: String?, now: Date = Date()) {
        failures.withLockedValue { table in
            table["source:" + source, default: []].append(now)
            if let accessKey { table["key:" + accessKey, default: []].append(now) }
            if table.count > 100_000 { table.removeAll() }  // bound memory under a flood of random keys
        }
    }
}
