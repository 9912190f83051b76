@testable import BerthServer
import Foundation
import Testing

@Suite struct TagListBodyTests {
    /// The tag list's writer, which escapes through JSONText when a string needs it.
    @Test func aTagListReadsBackAsWritten() throws {
        let tags = ["v1.0", "quote\"", "back\\slash", "bell\u{7}", "é✓"]
        var body = TagListBody.make(name: "reg/app", tags: tags)
        let bytes = body.readBytes(length: body.readableBytes)!
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(object["name"] as? String == "reg/app")
        #expect(object["tags"] as? [String] == tags)
    }
}
