import NIOConcurrencyHelpers

/// Records decoded from the catalog, each kept with the bytes it came from.
///
/// A read still gets the record's bytes from RocksDB, the source of truth, and
/// skips only the JSON decoding when the bytes are the ones last decoded; so a
/// write never has to invalidate anything. Every manifest GET reads its
/// registry's record two or three times (authorization, visibility, the
/// lookup) and its manifest record once: JSON decoding was 9 % of the
/// server's CPU under an HTTP/2 manifest GET load.
final class DecodedRecords<Record: Sendable>: Sendable {
    private struct Entry {
        var bytes: [UInt8]
        var record: Record
    }

    /// At most this many records are kept; the next one past it starts over.
    let capacity: Int
    private let entries = NIOLockedValueBox([[UInt8]: Entry]())

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// The record `bytes` (read at `key`) decode to.
    func record(at key: [UInt8], bytes: [UInt8], decode: ([UInt8]) throws -> Record) throws -> Record {
        if let entry = entries.withLockedValue({ $0[key] }), entry.bytes == bytes { return entry.record }
        let record = try decode(bytes)
        entries.withLockedValue { entries in
            if entries.count >= capacity, entries[key] == nil { entries.removeAll(keepingCapacity: true) }
            entries[key] = Entry(bytes: bytes, record: record)
        }
        return record
    }
}
