import Foundation

/// Where a listing resumes: after the item with this sort value and name.
/// Orders run by value, highest first (a push or update time in
/// milliseconds, a pull count), then by name; name order ignores the value.
/// Its text form, `<value>~<name>`, is the `next_cursor` of image and
/// artifact listings: it names the last item listed, so items deleted
/// between pages skip nothing, unlike an offset. (In a value order an item
/// whose value changes meanwhile, by a push or a pull, moves, and may be
/// listed twice or not at all; a cursor goes back with the sort it came from.)
struct ListCursor: Sendable, Equatable {
    var value: Int64
    var name: String

    init(value: Int64, name: String) {
        self.value = value
        self.name = name
    }

    /// Parses a cursor a listing returned; nil for none.
    init?(parsing text: String?) throws(InvalidRequest) {
        guard let text else { return nil }
        guard let tilde = text.firstIndex(of: "~"), let value = Int64(text[..<tilde]), value >= 0,
            text.index(after: tilde) < text.endIndex
        else {
            throw InvalidRequest(message: "'cursor' must be a cursor this listing returned, got '\(text)'")
        }
        self.init(value: value, name: String(text[text.index(after: tilde)...]))
    }

    var text: String { "\(value)~\(name)" }

    /// Whether an item at `self` comes before one at `other`: higher value first, then name.
    func precedes(_ other: ListCursor) -> Bool {
        value != other.value ? value > other.value : name < other.name
    }

    /// The page of `entries` that follows `after` in cursor order, at most
    /// `limit` long, with the cursor of the next page when more follow.
    static func page<Item>(_ entries: [(ListCursor, Item)], after: ListCursor?, limit: Int) -> Page<Item> {
        let ordered = entries.sorted { $0.0.precedes($1.0) }
        let rest = ordered.drop { entry in after.map { !$0.precedes(entry.0) } ?? false }
        let page = rest.prefix(limit)
        return Page(items: page.map(\.1), next: rest.count > limit ? page.last?.0.text : nil)
    }

    /// A time as a cursor value: whole milliseconds since 1970, clamped to
    /// what a cursor holds (a clock set before 1970 is 0).
    static func milliseconds(_ date: Date) -> Int64 {
        Int64(min(max(0, (date.timeIntervalSince1970 * 1000).rounded(.down)), 1e17))
    }
}
