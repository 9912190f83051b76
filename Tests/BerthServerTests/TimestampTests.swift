@testable import BerthServer
import Foundation
import Testing

/// The RFC 3339 date-times the admin API reads (`before`, `since`, `until`) and writes.
@Suite struct TimestampTests {
    @Test func readsUTCOffsetsAndFractions() throws {
        let ten = Date(timeIntervalSince1970: 1_795_428_000)  // 2026-11-23T10:00:00Z
        #expect(AdminSupport.parseTimestamp("2026-11-23T10:00:00Z") == ten)
        #expect(AdminSupport.parseTimestamp("2026-11-23T11:30:00+01:30") == ten)
        #expect(AdminSupport.parseTimestamp("2026-11-23T05:00:00-05:00") == ten)
        let fraction = try #require(AdminSupport.parseTimestamp("2026-11-23T10:00:00.250Z"))
        #expect(abs(fraction.timeIntervalSince(ten) - 0.25) < 0.001)
        // RFC 3339 allows offsets to ±23:59 (Foundation's format style stops at ±18 h), any year from 0000,
        // lower-case separators, and a leap second.
        #expect(AdminSupport.parseTimestamp("2026-11-22T10:27:00-23:33") == ten)
        #expect(AdminSupport.parseTimestamp("2026-11-23t10:00:00z") == ten)
        #expect(AdminSupport.parseTimestamp("2026-11-23T09:59:60Z") == ten)
        #expect(AdminSupport.parseTimestamp("1970-01-01T00:00:00Z") == Date(timeIntervalSince1970: 0))
        #expect(AdminSupport.parseTimestamp("2024-02-29T00:00:00Z") == Date(timeIntervalSince1970: 1_709_164_800))
        #expect(AdminSupport.parseTimestamp("0030-02-14T16:54:38-23:33") == Date(timeIntervalSince1970: -61_216_500_742))
    }

    @Test func refusesWhatIsNotADateTime() {
        let refused = [
            "", "2026-11-23", "10:00:00Z", "2026-13-01T00:00:00Z", "2026-11-23T10:00:00", "yesterday", "1795435200",
            "2025-02-29T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T10:00:00.Z", "2026-11-23T10:00:00+0100",
            "2026-11-23T10:00:00+24:00", "2026-11-23 10:00:00Z", "2026-11-23T10:00:00Z ", "+2026-11-23T10:00:00Z",
        ]
        for text in refused {
            #expect(AdminSupport.parseTimestamp(text) == nil, "\(text)")
        }
    }

    @Test func writesWholeSecondsInUTC() {
        let text = AdminSupport.timestamp(Date(timeIntervalSince1970: 1_795_428_000.75)) as? String
        #expect(text == "2026-11-23T10:00:00Z")
    }
}
