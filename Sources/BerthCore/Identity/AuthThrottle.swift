import Foundation
import NIOConcurrencyHelpers

/// Slows down guessing: more than `limit` failed authentications within the
/// window from one source, or against one access key, and further attempts
/// from it or on it are refused until the window has passed.
///
/// A key's lockout spares the sources it authenticated from lately (its
/// last `trustedSourcesPerKey`, for `trustTime`): whoever knows a key's id
/// could otherwise hold it at 429 everywhere by sending bad secrets on it.
/// Failures from those sources still count, for the source and the key.
///
/// A source is an IPv4 address or an IPv6 /64, the block one client is
/// usually given: counted per IPv6 address, one client could spread its
/// guesses over 2^64 sources.
public final class AuthThrottle: Sendable {
    public let limit: Int
    public let window: Double
    /// The most sources remembered at once. Keys are never dropped: only keys
    /// that exist are counted, so their number is bounded already; a key's
    /// trusted sources are dropped a day after its last success.
    public let sourceCapacity: Int
    /// Seconds a source a key authenticated from stays exempt from that key's lockout.
    public let trustTime: Double
    /// The most sources remembered per key; the least recently successful goes first.
    public let trustedSourcesPerKey: Int
    private let failures = NIOLockedValueBox(Failures())

    /// Recent failure times, per source and per access key, and each key's recent good sources.
    private struct Failures {
        var sources: [String: [Date]] = [:]
        var keys: [String: [Date]] = [:]
        /// Per access key: source name → time of its last success (refreshed once a minute at most).
        var trusted: [String: [String: Date]] = [:]
        /// When `trusted` was last cleared of sources older than the trust time.
        var trustedSweep = Date.distantPast
    }

    public init(
        limit: Int, window: Double = 60, sourceCapacity: Int = 100_000, trustTime: Double = 86_400, trustedSourcesPerKey: Int = 32
    ) {
        self.limit = limit
        self.window = window
        self.sourceCapacity = sourceCapacity
        self.trustTime = trustTime
        self.trustedSourcesPerKey = trustedSourcesPerKey
    }

    /// Seconds to wait, when `source` or `accessKey` is throttled now.
    public func retryAfter(source: String, accessKey: String?, now: Date = Date()) -> Int? {
        let sourceName = Self.sourceName(source)
        return failures.withLockedValue { table -> Int? in
            var wait = self.wait(&table.sources, sourceName, now: now)
            // From a source the key works from, the key's lockout is someone else's doing.
            if let accessKey, !(table.trusted[accessKey]?[sourceName].map { now.timeIntervalSince($0) < trustTime } ?? false) {
                wait = max(wait, self.wait(&table.keys, accessKey, now: now))
            }
            return wait > 0 ? Int(wait.rounded(.up)) : nil
        }
    }

    /// Remembers that `accessKey` authenticated from `source`.
    public func recordSuccess(source: String, accessKey: String, now: Date = Date()) {
        let sourceName = Self.sourceName(source)
        failures.withLockedValue { table in
            // Basic authentication on every request is the common case: a read, not a write.
            if let last = table.trusted[accessKey]?[sourceName], now.timeIntervalSince(last) < 60 { return }
            if now.timeIntervalSince(table.trustedSweep) > trustTime / 24 {
                // Keys deleted, or unused for the trust time, leave the table (hourly with a day's trust).
                table.trustedSweep = now
                table.trusted = table.trusted.compactMapValues { sources in
                    let kept = sources.filter { now.timeIntervalSince($0.value) < trustTime }
                    return kept.isEmpty ? nil : kept
                }
            }
            if table.trusted[accessKey]?[sourceName] == nil, let sources = table.trusted[accessKey],
                sources.count >= trustedSourcesPerKey, let stalest = sources.min(by: { $0.value < $1.value })
            {
                table.trusted[accessKey]?[stalest.key] = nil
            }
            table.trusted[accessKey, default: [:]][sourceName] = now
        }
    }

    /// Drops `name`'s aged-out failures; seconds until it may try again.
    private func wait(_ table: inout [String: [Date]], _ name: String, now: Date) -> Double {
        let recent = (table[name] ?? []).filter { now.timeIntervalSince($0) < window }
        table[name] = recent.isEmpty ? nil : recent
        guard recent.count >= limit, let oldest = recent.first else { return 0 }
        return window - now.timeIntervalSince(oldest)
    }

    public func recordFailure(source: String, accessKey: String?, now: Date = Date()) {
        let sourceName = Self.sourceName(source)
        failures.withLockedValue { table in
            if table.sources[sourceName] == nil, table.sources.count >= sourceCapacity {
                // Aged-out sources go first; unless that frees a tenth of the table, every
                // source not locked out too (a flood from that many addresses is not
                // slowed by remembering each, and this scan then runs once per tenth of
                // the table at most), so a flood cannot lift the lockouts it joins.
                // Only when locked-out sources alone fill it do they go. Keys stay, so
                // a key's lockout holds.
                func recent(_ times: [Date]) -> Int { times.count { now.timeIntervalSince($0) < window } }
                let roomNeeded = sourceCapacity - sourceCapacity / 10
                table.sources = table.sources.filter { recent($0.value) > 0 }
                if table.sources.count >= roomNeeded { table.sources = table.sources.filter { recent($0.value) >= limit } }
                if table.sources.count >= roomNeeded { table.sources = [:] }
            }
            table.sources[sourceName, default: []].append(now)
            if let accessKey { table.keys[accessKey, default: []].append(now) }
        }
    }

    /// The table's name for a remote address: IPv6 addresses by their /64.
    public static func sourceName(_ address: String) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        guard address.contains(":"), inet_pton(AF_INET6, address, &bytes) == 1 else { return address }
        // An IPv4-mapped address (::ffff:a.b.c.d) is one IPv4 client.
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff { return address }
        let prefix = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return prefix.joined(separator: ":") + "::/64"
    }
}
