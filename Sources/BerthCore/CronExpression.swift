import Foundation

/// A five-field cron expression evaluated in UTC: minute, hour, day of month,
/// month (1–12 or JAN–DEC), day of week (0–6 or SUN–SAT). Fields take `*`,
/// values, ranges `a-b`, steps `*/n`, `a-b/n`, `a/n`, comma lists, and `?`
/// ("any") in the day fields. When both day fields are restricted (neither
/// starts with `*` or is `?`), a day matching either one matches; otherwise
/// a day must match both (as in Vixie cron).
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let source: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    enum Field: String, CaseIterable {
        case minute, hour
        case dayOfMonth = "day-of-month"
        case month
        case dayOfWeek = "day-of-week"

        var range: ClosedRange<Int> {
            switch self {
            case .minute: 0...59
            case .hour: 0...23
            case .dayOfMonth: 1...31
            case .month: 1...12
            case .dayOfWeek: 0...6
            }
        }

        var names: [String] {
            switch self {
            case .month: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
            case .dayOfWeek: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
            default: []
            }
        }

        var allowsQuestionMark: Bool { self == .dayOfMonth || self == .dayOfWeek }
    }

    /// The longest expression a client may set: a full minute list (`0,1,…,59`) is 169 characters.
    public static let maxLength = 1024

    /// Parses `source`. `strict` is for what a client sends now: at most
    /// ``maxLength`` characters, numbers as the API spec writes them (no sign,
    /// no leading zero). Without it, as text stored or configured before
    /// those rules is read back (`05`, `+5`), so an upgrade drops no schedule.
    public init(_ source: String, strict: Bool = false) throws(CronError) {
        guard !strict || source.utf8.count <= Self.maxLength else {
            throw CronError(field: nil, message: "a cron expression is at most \(Self.maxLength) characters")
        }
        let fields = source.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw CronError(field: nil, message: "a cron expression has 5 fields (minute hour day-of-month month day-of-week), got \(fields.count)")
        }
        var sets: [Set<Int>] = []
        var restricted: [Bool] = []
        for (field, text) in zip(Field.allCases, fields) {
            let (values, isRestricted) = try Self.parse(text, field, strict: strict)
            sets.append(values)
            restricted.append(isRestricted)
        }
        self.source = fields.joined(separator: " ")
        (minutes, hours, daysOfMonth, months, daysOfWeek) = (sets[0], sets[1], sets[2], sets[3], sets[4])
        dayOfMonthRestricted = restricted[2]
        dayOfWeekRestricted = restricted[4]
    }

    public var description: String { source }

    /// Whether the expression fires in the minute holding `date`.
    public func matches(_ date: Date) -> Bool {
        let c = Self.calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: date)
        return minutes.contains(c.minute!) && hours.contains(c.hour!) && months.contains(c.month!)
            && dayMatches(day: c.day!, weekday: c.weekday! - 1)
    }

    /// The first minute strictly after `date` at which the expression fires,
    /// or nil when none falls in the next five years (`0 0 31 2 *`).
    public func next(after date: Date) -> Date? {
        let calendar = Self.calendar
        let start = calendar.dateInterval(of: .minute, for: date)!.start.addingTimeInterval(60)
        var day = calendar.startOfDay(for: start)
        for _ in 0..<(366 * 5) {
            let c = calendar.dateComponents([.day, .month, .weekday], from: day)
            if months.contains(c.month!), dayMatches(day: c.day!, weekday: c.weekday! - 1) {
                for hour in hours.sorted() {
                    for minute in minutes.sorted() {
                        let candidate = day.addingTimeInterval(Double(hour * 3600 + minute * 60))
                        if candidate >= start { return candidate }
                    }
                }
            }
            day = calendar.date(byAdding: .day, value: 1, to: day)!
        }
        return nil
    }

    private func dayMatches(day: Int, weekday: Int) -> Bool {
        // An unrestricted field holds every day (`*`, `?`) or some (`*/2`): "and" then.
        if dayOfMonthRestricted && dayOfWeekRestricted {
            return daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
        }
        return daysOfMonth.contains(day) && daysOfWeek.contains(weekday)
    }

    static let calendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt  // UTC, without loading ICU's zone data as TimeZone(identifier:) does
        return calendar
    }()

    /// The values of one field, and whether it restricts anything.
    private static func parse(_ text: String, _ field: Field, strict: Bool) throws(CronError) -> (Set<Int>, Bool) {
        if text == "?" {
            guard field.allowsQuestionMark else {
                throw CronError(field: field.rawValue, message: "'?' is only allowed in the day fields")
            }
            return (Set(field.range), false)
        }
        if text == "*" { return (Set(field.range), false) }
        var values = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw CronError(field: field.rawValue, message: "empty list item in '\(text)'") }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw CronError(field: field.rawValue, message: "'\(item)' has more than one '/'") }
            var step = 1
            if parts.count == 2 {
                guard let parsed = number(parts[1], strict: strict), parsed >= 1 else {
                    throw CronError(field: field.rawValue, message: "step '\(parts[1])' must be a positive integer")
                }
                step = parsed
            }
            let range: ClosedRange<Int>
            if parts[0] == "*" {
                range = field.range
            } else {
                let bounds = parts[0].split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count <= 2 else { throw CronError(field: field.rawValue, message: "'\(parts[0])' is not a range") }
                let low = try value(bounds[0], field, strict: strict)
                let high =
                    bounds.count == 2 ? try value(bounds[1], field, strict: strict) : (parts.count == 2 ? field.range.upperBound : low)
                guard low <= high else {
                    throw CronError(field: field.rawValue, message: "range '\(parts[0])' runs backwards")
                }
                range = low...high
            }
            values.formUnion(stride(from: range.lowerBound, through: range.upperBound, by: step))
        }
        // As in Vixie cron, a field that starts with `*` (`*/2`) counts as unrestricted
        // for the day rule: with the other day field it is "and", not "or".
        return (values, !text.hasPrefix("*"))
    }

    /// A number; when `strict`, as the spec writes one: ASCII digits, no sign,
    /// no leading zero, at most 18 digits.
    private static func number(_ text: Substring, strict: Bool) -> Int? {
        guard strict else { return Int(text) }
        let digits = text.utf8
        guard (1...18).contains(digits.count), digits.allSatisfy({ (0x30...0x39).contains($0) }),
            digits.count == 1 || digits.first != 0x30
        else { return nil }
        return Int(text)
    }

    private static func value(_ text: Substring, _ field: Field, strict: Bool) throws(CronError) -> Int {
        if let number = number(text, strict: strict) {
            guard field.range.contains(number) else {
                throw CronError(
                    field: field.rawValue,
                    message: "\(number) is out of range \(field.range.lowerBound)–\(field.range.upperBound)")
            }
            return number
        }
        if let index = field.names.firstIndex(of: text.uppercased()) {
            return field == .month ? index + 1 : index
        }
        throw CronError(field: field.rawValue, message: "'\(text)' is not a valid value")
    }
}

/// An invalid cron expression; `field` names the field at fault.
public struct CronError: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String?
    public var message: String

    public var description: String { field.map { "\($0): \(message)" } ?? message }
}
