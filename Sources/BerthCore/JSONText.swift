import Foundation

/// Writes the JSON (RFC 8259) of the bodies, log lines, event details and
/// the bootstrap credential file Berth builds as `[String: Any]` trees:
/// object keys in order, slashes unescaped.
///
/// Foundation's JSONSerialization, which wrote them before, compares keys
/// through an ICU collator and casts every value dynamically: 73 % of an
/// image listing's time, 10–100 µs for an error body or a log line, and the
/// collator's data stays resident once loaded (0.8 MiB of RSS).
///
/// Strings, Swift's integers, finite doubles, booleans, `NSNull`, arrays and
/// string-keyed dictionaries are written here; anything else, such as the
/// `NSNumber`s of a document JSONSerialization read, is left to
/// JSONSerialization as a fragment (null if it cannot write it).
package enum JSONText {
    package static func bytes(_ value: Any) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256)
        write(value, into: &bytes)
        return bytes
    }

    package static func write(_ value: Any, into bytes: inout [UInt8]) {
        switch value {
        case let text as String:
            write(string: text, into: &bytes)
        case let object as [String: Any]:
            bytes.append(UInt8(ascii: "{"))
            for (index, key) in object.keys.sorted().enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                write(string: key, into: &bytes)
                bytes.append(UInt8(ascii: ":"))
                write(object[key]!, into: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        case let array as [Any]:
            bytes.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                write(element, into: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case is NSNull:
            bytes += Array("null".utf8)
        default:
            write(scalar: value, into: &bytes)
        }
    }

    /// A number or boolean: Swift's own types by their exact type (an
    /// `NSNumber` would also cast to `Int` and to `Bool`).
    private static func write(scalar value: Any, into bytes: inout [UInt8]) {
        switch value {
        case let flag as Bool where type(of: value) == Bool.self: bytes += Array((flag ? "true" : "false").utf8)
        case let number as Int where type(of: value) == Int.self: bytes += Array(String(number).utf8)
        case let number as Int64 where type(of: value) == Int64.self: bytes += Array(String(number).utf8)
        case let number as UInt64 where type(of: value) == UInt64.self: bytes += Array(String(number).utf8)
        case let number as Int32 where type(of: value) == Int32.self: bytes += Array(String(number).utf8)
        case let number as UInt32 where type(of: value) == UInt32.self: bytes += Array(String(number).utf8)
        case let number as Double where type(of: value) == Double.self:
            bytes += Array((number.isFinite ? String(number) : "null").utf8)
        default:
            if let fragment = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .withoutEscapingSlashes]) {
                bytes += Array(fragment)
            } else {
                assertionFailure("no JSON for a \(type(of: value))")
                bytes += Array("null".utf8)
            }
        }
    }

    /// A JSON string: quote, backslash and control characters escaped, the rest as UTF-8.
    package static func write(string text: String, into bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), byte]
            case UInt8(ascii: "\n"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "u"), 0x30, 0x30, hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0xF)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
