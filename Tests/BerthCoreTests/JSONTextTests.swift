@testable import BerthCore
import Foundation
import Testing

@Suite struct JSONTextTests {
    /// What JSONSerialization reads back from `bytes`, written again by it with sorted keys: a canonical form.
    private func canonical(_ bytes: [UInt8]) throws -> String {
        let object = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed])
        return String(decoding: data, as: UTF8.self)
    }

    @Test func readsBackAsJSONSerializationsOutputDoes() throws {
        let read = try JSONSerialization.jsonObject(
            with: Data(#"{"flag":true,"off":false,"n":12345678901234,"x":1.5,"nothing":null,"big":18446744073709551615}"#.utf8))
        let tree: [String: Any] = [
            "text": "quote \" backslash \\ slash / tab \t newline \n nul \u{0} unit \u{1f} é ✓ 🚢",
            "int": 42, "negative": Int64(-7), "unsigned": UInt64.max, "small": Int32(3), "double": 0.25, "whole": 2.0,
            "bool": true, "false": false, "null": NSNull(), "empty": [String: Any](), "none": [Any](),
            "strings": ["a", "b"], "typed": ["k": "v"], "nested": [["deep": [1, 2, 3]]],
            "read": read,  // NSNumbers, NSNull and Strings from a parsed document
        ]
        let bytes = JSONText.bytes(tree)
        let expected = try JSONSerialization.data(withJSONObject: tree, options: [.sortedKeys])
        #expect(try canonical(bytes) == (try canonical(Array(expected))))
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains(#""flag":true"#) && text.contains(#""off":false"#), "booleans read from a document stay booleans: \(text)")
        #expect(text.contains(#""n":12345678901234"#))
        #expect(text.contains("slash / tab"), "slashes are not escaped")
        #expect(!text.contains("\n"), "control characters are escaped")
    }

    @Test func keysAreInCodePointOrderAndNonFiniteNumbersAreNull() throws {
        let text = String(decoding: JSONText.bytes(["b": 1, "a": NSNull(), "c": Double.nan, "B": "x"]), as: UTF8.self)
        #expect(text == #"{"B":"x","a":null,"b":1,"c":null}"#)
    }
}
