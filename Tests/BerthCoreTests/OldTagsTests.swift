import BerthStorage
import Crypto
import Foundation
import NIOCore
import Testing

@testable import BerthCore

/// The old-tags listing reads a bounded number of tags per page, and its
/// pages still add up to the whole list.
@Suite struct OldTagsTests {
    private static let config: [UInt8] = Array("{}".utf8)
    private static func digest(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }
    private static let manifest = Array(
        """
        {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
        "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\(digest(config))","size":2},"layers":[]}
        """.utf8)

    /// Images a and b of registry "ot", with `tags` tags each.
    private func populate(_ registry: Registry, tags: Int) async throws {
        _ = try await registry.createRegistry("ot")
        for image in ["ot/a", "ot/b"] {
            try await registry.pushBlob(Self.config, to: image)
            for n in 0..<tags {
                _ = try await registry.putManifest(
                    name: image, reference: String(format: "t%02d", n), bytes: Self.manifest,
                    contentType: "application/vnd.oci.image.manifest.v1+json")
            }
        }
    }

    /// Every page from the start, as a client walks them.
    private func walk(_ registry: Registry, before: Date, excludeLatest: Bool = false, limit: Int, budget: Int) throws -> [Page<OldTag>] {
        var pages: [Page<OldTag>] = []
        var cursor: String?
        repeat {
            let page = try registry.oldTags(
                registry: "ot", before: before, excludeLatest: excludeLatest, cursor: cursor, limit: limit, readBudget: budget)
            pages.append(page)
            cursor = page.next
        } while cursor != nil && pages.count < 100
        return pages
    }

    @Test func aPageStopsAtItsReadBudgetAndThePagesAddUp() async throws {
        try await withScratchRegistry { registry, _ in
            try await populate(registry, tags: 12)
            let future = Date().addingTimeInterval(3600)
            let whole = try registry.oldTags(registry: "ot", before: future, excludeLatest: false, cursor: nil, limit: 1000)
            #expect(whole.items.count == 24 && whole.next == nil)

            let pages = try walk(registry, before: future, limit: 1000, budget: 5)
            #expect(pages.map(\.items.count) == [5, 5, 5, 5, 4])
            #expect(pages.flatMap(\.items) == whole.items)

            // With exclude_latest the latest of each image is left out, page by page too.
            let withoutLatest = try registry.oldTags(registry: "ot", before: future, excludeLatest: true, cursor: nil, limit: 1000)
            #expect(withoutLatest.items.count == 22)
            #expect(try walk(registry, before: future, excludeLatest: true, limit: 1000, budget: 7).flatMap(\.items) == withoutLatest.items)

            // The limit still cuts pages before the budget does.
            #expect(try walk(registry, before: future, limit: 3, budget: 5).map(\.items.count) == [3, 3, 3, 3, 3, 3, 3, 3])
        }
    }

    @Test func whenNothingIsOldPagesAreEmptyButMoveOn() async throws {
        try await withScratchRegistry { registry, _ in
            try await populate(registry, tags: 10)
            let past = Date(timeIntervalSince1970: 0)
            let pages = try walk(registry, before: past, limit: 100, budget: 6)
            #expect(pages.allSatisfy { $0.items.isEmpty })
            #expect(pages.count == 4, "20 tags read 6 a page, then the end")
            #expect(pages.compactMap(\.next) == ["a:t05", "b:t01", "b:t07"])
        }
    }
}
