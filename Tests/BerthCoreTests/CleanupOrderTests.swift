@testable import BerthCore
import Foundation
import Testing

@Suite struct CleanupOrderTests {
    private let policy = CleanupPolicy(
        id: "cp-1", imagePattern: "**", tagPattern: "**", rule: .keepLastPushed, value: 1, enabled: true, created: Date())

    private func decision(_ digest: String, lists children: [String] = [], keptBy index: String? = nil) -> Registry.CleanupDecision {
        let record = ManifestRecord(
            digest: digest, mediaType: "application/vnd.oci.image.index.v1+json", size: 1, artifactType: nil, subject: nil,
            annotations: nil, blobs: [], children: children, created: Date())
        return Registry.CleanupDecision(record: record, tags: [], policy: policy, reason: "test", listedBy: index)
    }

    private func order(_ decisions: [Registry.CleanupDecision]) -> [String] {
        Registry.parentsFirst(decisions).map(\.record.digest)
    }

    @Test func withoutIndexesTheOrderIsKept() {
        #expect(order(["a", "b", "c"].map { decision($0) }) == ["a", "b", "c"])
    }

    @Test func anArtifactWaitsForTheLastIndexListingItAndFollowsIt() {
        // Oldest first: the platform manifests a and b, then other, then the
        // indexes i1 (a, b) and i2 (b), then late.
        let decisions = [
            decision("a"), decision("b"), decision("other"), decision("i1", lists: ["a", "b"]), decision("i2", lists: ["b"]),
            decision("late"),
        ]
        #expect(order(decisions) == ["other", "i1", "a", "i2", "b", "late"])
    }

    @Test func nestedIndexesGoOutsideIn() {
        let decisions = [decision("leaf"), decision("inner", lists: ["leaf"]), decision("outer", lists: ["inner"])]
        #expect(order(decisions) == ["outer", "inner", "leaf"])
    }

    @Test func aChildOfAnIndexThatStaysIsNotHeldBack() {
        // "kept" (listed by an index the run keeps) produces a kept detail and holds nothing back.
        let decisions = [decision("a"), decision("kept", lists: ["a"], keptBy: "stays"), decision("z")]
        #expect(order(decisions) == ["a", "kept", "z"])
    }

    @Test func everyDecisionIsPlacedOnce() {
        var decisions: [Registry.CleanupDecision] = (0..<200).map { decision("m\($0)") }
        for index in 0..<50 {
            decisions.append(decision("i\(index)", lists: (0..<4).map { "m\((index * 4 + $0) % 200)" }))
        }
        let placed = order(decisions)
        #expect(placed.count == decisions.count && Set(placed).count == decisions.count)
        let position = Dictionary(uniqueKeysWithValues: placed.enumerated().map { ($1, $0) })
        for index in 0..<50 {
            for child in (0..<4).map({ "m\((index * 4 + $0) % 200)" }) {
                #expect(position["i\(index)"]! < position[child]!)
            }
        }
    }

    @Test func cosignTagsNameTheirArtifact() {
        let hex = String(repeating: "ab", count: 32)
        #expect(Registry.attachmentSubject(tag: "sha256-\(hex).sig") == "sha256:\(hex)")
        #expect(Registry.attachmentSubject(tag: "sha256-\(hex).att") == "sha256:\(hex)")
        #expect(Registry.attachmentSubject(tag: "sha256-\(hex).sbom") == "sha256:\(hex)")
        for tag in [
            "sha256-\(hex)", "sha256-\(hex).", "sha256-\(hex).Sig", "sha256-\(hex).sig1", "sha256-\(hex.dropLast()).sig",
            "sha256-\(hex.uppercased()).sig", "sha512-\(hex).sig", "v1.0", "latest",
        ] {
            #expect(Registry.attachmentSubject(tag: tag) == nil, "\(tag)")
        }
    }
}
