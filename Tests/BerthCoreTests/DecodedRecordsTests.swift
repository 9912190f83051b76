import BerthStorage
import Foundation
import Testing

@testable import BerthCore

/// Decoded records are reused only while their stored bytes are unchanged.
@Suite struct DecodedRecordsTests {
    @Test func reusesARecordOnlyForTheSameBytes() throws {
        let records = DecodedRecords<String>(budget: 160)  // entries of up to 10 bytes are kept
        var decodes = 0
        func read(_ key: String, _ bytes: String) throws -> String {
            try records.record(at: Array(key.utf8), bytes: Array(bytes.utf8)) {
                decodes += 1
                return String(decoding: $0, as: UTF8.self)
            }
        }
        #expect(try read("a", "one") == "one")
        #expect(try read("a", "one") == "one")
        #expect(decodes == 1)
        #expect(try read("a", "two") == "two")  // rewritten: decoded anew
        #expect(try read("a", "two") == "two")
        #expect(decodes == 2)
        let large = String(repeating: "x", count: 20)
        #expect(try read("big", large) == large)
        #expect(try read("big", large) == large)  // too large to keep
        #expect(decodes == 4)
        for index in 0..<60 { _ = try read("k\(index)", "v") }  // past the budget: starts over
        let before = decodes
        #expect(try read("a", "two") == "two")
        #expect(decodes == before + 1)
    }

    @Test func aRegistryReadSeesEveryUpdate() async throws {
        try await withScratchRegistry { registry, _ in
            _ = try await registry.createRegistry("dr")
            #expect(try registry.registry("dr")?.publicURIEnabled == true)
            #expect(try registry.registry("dr")?.publicURIEnabled == true)  // again: now the reused decoded record
            _ = try await registry.updateRegistry("dr", anonymousPull: true, publicURIEnabled: false)
            let updated = try #require(try registry.registry("dr"))
            #expect(!updated.publicURIEnabled && updated.anonymousPull)
            try await registry.deleteRegistry("dr", force: true)
            #expect(try registry.registry("dr") == nil)
        }
    }
}
