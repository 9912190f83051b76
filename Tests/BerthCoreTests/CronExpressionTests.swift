import BerthCore
import Foundation
import Testing

@Suite struct CronExpressionTests {
    static func utc(_ text: String) -> Date {
        let formatter = ISO8601DateFormatter()
        return formatter.date(from: text)!
    }

    @Test(arguments: [
        // expression, after, next
        ("* * * * *", "2026-11-23T10:00:30Z", "2026-11-23T10:01:00Z"),
        ("*/15 * * * *", "2026-11-23T10:01:00Z", "2026-11-23T10:15:00Z"),
        ("*/15 * * * *", "2026-11-23T10:45:00Z", "2026-11-23T11:00:00Z"),
        ("15 3 * * *", "2026-11-23T03:15:00Z", "2026-11-24T03:15:00Z"),
        ("0 0 1,15 * *", "2026-11-02T00:00:00Z", "2026-11-15T00:00:00Z"),
        ("0 12 ? JAN-MAR MON-FRI", "2026-11-23T10:00:00Z", "2027-01-01T12:00:00Z"),
        ("5 4 * * sun", "2026-11-23T10:00:00Z", "2026-11-29T04:05:00Z"),
        ("0 0-23/2 * * *", "2026-11-23T01:00:00Z", "2026-11-23T02:00:00Z"),
        ("30 6 1 * *", "2026-12-31T23:59:00Z", "2027-01-01T06:30:00Z"),
        ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
        ("10/20 * * * *", "2026-11-23T10:31:00Z", "2026-11-23T10:50:00Z"),
        // Both day fields restricted: either matches (the 1st, or a Friday).
        ("0 0 1 * FRI", "2026-11-23T00:00:00Z", "2026-11-27T00:00:00Z"),
        // A day field starting with '*' restricts nothing for that rule: a Monday on an odd day.
        ("0 4 */2 * MON", "2026-11-23T10:00:00Z", "2026-12-07T04:00:00Z"),
    ])
    func nextRun(_ expression: String, _ after: String, _ next: String) throws {
        let cron = try CronExpression(expression)
        #expect(cron.next(after: Self.utc(after)) == Self.utc(next))
        #expect(cron.matches(Self.utc(next)))
    }

    @Test func impossibleDateHasNoNextRun() throws {
        #expect(try CronExpression("0 0 31 2 *").next(after: Self.utc("2026-01-01T00:00:00Z")) == nil)
    }

    @Test(arguments: [
        ("60 * * * *", "minute"), ("* 24 * * *", "hour"), ("* * 0 * *", "day-of-month"), ("* * * 13 *", "month"),
        ("* * * * 7", "day-of-week"), ("* * * FOO *", "month"), ("*/0 * * * *", "minute"), ("1-70 * * * *", "minute"),
        ("? * * * *", "minute"), ("5-1 * * * *", "minute"), ("1,,2 * * * *", "minute"), ("* * * * MON-XYZ", "day-of-week"),
        // Numbers as the spec writes them: no sign, no leading zero.
        ("+5 * * * *", "minute"), ("05 4 * * *", "minute"), ("*/+2 * * * *", "minute"), ("* */02 * * *", "hour"),
        ("* * * * -1", "day-of-week"),
    ])
    func refusalsNameTheField(_ expression: String, _ field: String) {
        #expect {
            try CronExpression(expression, strict: true)
        } throws: { error in
            (error as? CronError)?.field == field && (error as? CronError)?.description.hasPrefix(field + ":") == true
        }
    }

    @Test(arguments: ["", "* * * *", "* * * * * *"])
    func refusesWrongFieldCounts(_ expression: String) {
        #expect(throws: CronError.self) { try CronExpression(expression) }
    }

    @Test func refusesAnOverlongExpression() throws {
        let minutes = Array(repeating: "0", count: 600).joined(separator: ",")
        #expect(throws: CronError.self) { try CronExpression(minutes + " * * * *", strict: true) }
        #expect(try CronExpression((0...59).map(String.init).joined(separator: ",") + " 0 * * *", strict: true).description.count < 200)
    }

    /// What an older version stored or an operator configured still reads: an upgrade drops no schedule.
    @Test func storedTextReadsAsBefore() throws {
        #expect(try CronExpression("0 03 * * *").next(after: Self.utc("2026-01-01T00:00:00Z")) == Self.utc("2026-01-01T03:00:00Z"))
        #expect(try CronExpression("+5 * * * *").next(after: Self.utc("2026-01-01T00:00:00Z")) == Self.utc("2026-01-01T00:05:00Z"))
        #expect(throws: CronError.self) { try CronExpression("0 03 * * *", strict: true) }
    }
}
