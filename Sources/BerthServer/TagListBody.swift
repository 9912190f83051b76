import BerthCore
import NIOCore

/// The body of `GET /v2/<name>/tags/list`, `{"name":…,"tags":[…]}`, written
/// straight into one buffer: with 10,000 tags, JSONSerialization spent most
/// of the request bridging strings (docs/performance.md).
enum TagListBody {
    static func make(name: String, tags: [String]) -> ByteBuffer {
        let capacity = 24 + name.utf8.count + tags.reduce(0) { $0 + $1.utf8.count + 3 }
        var buffer = ByteBufferAllocator().buffer(capacity: capacity)
        buffer.writeStaticString(#"{"name":"#)
        writeString(name, into: &buffer)
        buffer.writeStaticString(#","tags":["#)
        for (index, tag) in tags.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            writeString(tag, into: &buffer)
        }
        buffer.writeStaticString("]}")
        return buffer
    }

    /// A JSON string. Names and tags never need escaping (their grammar
    /// allows no quote, backslash or control character); escaped anyway, by JSONText.
    static func writeString(_ string: String, into buffer: inout ByteBuffer) {
        if string.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            buffer.writeInteger(UInt8(ascii: "\""))
            buffer.writeString(string)
            buffer.writeInteger(UInt8(ascii: "\""))
        } else {
            var bytes: [UInt8] = []
            JSONText.write(string: string, into: &bytes)
            buffer.writeBytes(bytes)
        }
    }
}
