/// Small parsers for HTTP header text, without Foundation's `CharacterSet`
/// (whose `trimmingCharacters(in:)` bridges through `NSString`: 2.6 % of the
/// server's CPU under an HTTP/2 manifest GET load, in `Authorization` alone).
extension StringProtocol {
    /// The text without leading and trailing optional whitespace (RFC 9110 OWS: spaces and tabs).
    public func trimmingHTTPWhitespace() -> SubSequence {
        let isWhitespace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isWhitespace($0) }) else { return self[endIndex...] }
        let last = lastIndex(where: { !isWhitespace($0) })!
        return self[first...last]
    }

    /// Whether the text starts with `prefix`, ignoring ASCII case (`prefix` given in lower case).
    public func hasASCIICaseInsensitivePrefix(_ prefix: String) -> Bool {
        var text = utf8.makeIterator()
        for expected in prefix.utf8 {
            guard let byte = text.next() else { return false }
            let lowered = (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) ? byte | 0x20 : byte
            guard lowered == expected else { return false }
        }
        return true
    }
}
