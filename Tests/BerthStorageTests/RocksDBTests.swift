import BerthStorage
import Foundation
import Testing

@Suite struct RocksDBTests {
    /// A sweep's blocks do not stay in the block cache; a request's do.
    @Test func sweepsLeaveTheBlockCacheAlone() throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let db = try RocksDB(path: directory)
            var batch = WriteBatch()
            for i in 0..<20_000 { batch.put(.objects, Array("o/\(i)".utf8), [UInt8](repeating: UInt8(i & 0xff), count: 100)) }
            try db.write(batch, .synced)
            try db.flush(.objects)
        }
        // Reopened: the cache starts empty and every read comes from the table files.
        let db = try RocksDB(path: directory)
        let before = db.blockCacheBytesInUse
        var seen = 0
        try db.scan(.objects, prefix: Array("o/".utf8), fillingCache: false) { _, _ in
            seen += 1
            return true
        }
        #expect(seen == 20_000)
        let afterSweep = db.blockCacheBytesInUse
        // Only index and filter blocks may be loaded: far less than the 2 MB of data.
        #expect(afterSweep - before < 256 << 10)
        seen = 0
        try db.scan(.objects, prefix: Array("o/".utf8)) { _, _ in
            seen += 1
            return true
        }
        #expect(seen == 20_000)
        #expect(db.blockCacheBytesInUse - afterSweep > 1 << 20)
    }
}
