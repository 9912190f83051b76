@testable import BerthServer
import Testing

@Suite struct DistributionRouteTests {
    @Test func parsesEveryEndpoint() {
        let d = "sha256:" + String(repeating: "a", count: 64)
        #expect(DistributionRoute(path: "/v2/") == .base)
        #expect(DistributionRoute(path: "/v2") == .base)
        #expect(DistributionRoute(path: "/v2/_catalog") == .catalog)
        #expect(DistributionRoute(path: "/v2/r/a/b/tags/list") == .tags(name: "r/a/b"))
        #expect(DistributionRoute(path: "/v2/r/a/manifests/v1") == .manifest(name: "r/a", reference: "v1"))
        #expect(DistributionRoute(path: "/v2/r/a/blobs/\(d)") == .blob(name: "r/a", digest: d))
        #expect(DistributionRoute(path: "/v2/r/a/blobs/uploads/") == .uploads(name: "r/a"))
        #expect(DistributionRoute(path: "/v2/r/a/blobs/uploads") == .uploads(name: "r/a"))
        #expect(DistributionRoute(path: "/v2/r/a/blobs/uploads/abc") == .upload(name: "r/a", id: "abc"))
        #expect(DistributionRoute(path: "/v2/r/a/referrers/\(d)") == .referrers(name: "r/a", digest: d))
        // An image may itself be called "manifests" or "blobs".
        #expect(DistributionRoute(path: "/v2/r/manifests/manifests/v1") == .manifest(name: "r/manifests", reference: "v1"))
        #expect(DistributionRoute(path: "/api/v1/registries") == nil)
        #expect(DistributionRoute(path: "/v2/nothing") == nil)
    }

    @Test func byteRanges() {
        #expect(ByteRange.parse("bytes=0-9", size: 100) == 0..<10)
        #expect(ByteRange.parse("bytes=90-", size: 100) == 90..<100)
        #expect(ByteRange.parse("bytes=-10", size: 100) == 90..<100)
        #expect(ByteRange.parse("bytes=95-200", size: 100) == 95..<100)
        #expect(ByteRange.parse("bytes=100-", size: 100) == nil)
        #expect(ByteRange.parse("bytes=5-2", size: 100) == nil)
        #expect(ByteRange.parse("items=0-1", size: 100) == nil)
        #expect(ByteRange.parse("bytes=0-1,3-4", size: 100) == nil)
        // The largest end a client can write must not overflow.
        #expect(ByteRange.parse("bytes=0-9223372036854775807", size: 10) == 0..<10)
        #expect(ByteRange.parse("bytes=-9223372036854775807", size: 10) == 0..<10)
        #expect(ByteRange.parse("bytes=9223372036854775807-", size: 10) == nil)
        #expect(ByteRange.select("bytes=0-9", size: 100) == .part(0..<10))
        #expect(ByteRange.select("bytes=100-", size: 100) == .unsatisfiable)
        #expect(ByteRange.select("bytes=abc", size: 100) == .unsatisfiable)
        #expect(ByteRange.select("items=0-1", size: 100) == .whole)
        #expect(ByteRange.select("bytes=0-1,3-4", size: 100) == .whole)
        #expect(ByteRange.parseChunk("0-9223372036854775807")! == (0, Int64.max))
        #expect(ByteRange.parseChunk("0-99")! == (0, 99))
        #expect(ByteRange.parseChunk("bytes=100-199")! == (100, 199))
        #expect(ByteRange.parseChunk("bytes 5-9/10")! == (5, 9))
        #expect(ByteRange.parseChunk("a-b") == nil)
    }
}
