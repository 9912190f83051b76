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

    private struct State {
        var entries: [[UInt8]: Entry] = [:]
        /// The keys' and the stored bytes' sizes, summed.
        var size = 0
    }

    /// The most bytes of keys and stored records kept (the decoded records
    /// take about as much again); the record that would pass it starts over.
    let budget: Int
    private let state = NIOLockedValueBox(State())

    init(budget: Int) {
        self.budget = budget
    }

    /// The record `bytes` (read at `key`) decode to.
    func record(at key: [UInt8], bytes: [UInt8], decode: ([UInt8]) throws -> Record) throws -> Record {
        if let entry = state.withLockedValue({ $0.entries[key] }), entry.bytes == bytes { return entry.record }
        let record = try decode(bytes)
        let size = key.count + bytes.count
        guard size <= budget / 16 else { return record }  // a record this large is rare: not worth the room
        state.withLockedValue { state in
            if let old = state.entries[key] { state.size -= key.count + old.bytes.count }
            if state.size + size > budget {
                state.entries.removeAll(keepingCapacity: false)
                state.size = 0
            }
            state.entries[key] = Entry(bytes: bytes, record: record)
            state.size += size
        }
        return record
    }
}
