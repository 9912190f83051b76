@testable import BerthServer
import Foundation
import Logging
import Testing

@Suite struct JSONLogHandlerTests {
    struct Failure: Error, CustomStringConvertible {
        var description: String { "disk \"full\"" }
    }

    private func line(_ metadata: Logger.Metadata, error: (any Error)? = nil, time: Date = Date()) -> [UInt8] {
        var handler = JSONLogHandler(label: "berth", level: .info)
        handler[metadataKey: "request_id"] = "r-1"
        let event = LogEvent(
            level: .warning, message: "a \"quoted\"\nmessage", error: error, metadata: metadata, source: nil, file: #fileID,
            function: #function, line: #line)
        return handler.line(event, time: time)
    }

    @Test func aLineIsOneJSONObjectThatReadsBackAsWritten() throws {
        let awkward = "quote \" backslash \\ slash / tab \t newline \n return \r nul \u{0} bell \u{7} unit \u{1f} é ✓ 🚢"
        let bytes = line(
            [
                "text": .string(awkward), "status": .stringConvertible(404), "duration_ms": .stringConvertible(0.25),
                "tiny": .stringConvertible(1e-5), "not_a_number": .stringConvertible(Double.nan),
                "list": .array(["a", .stringConvertible(2)]), "nested": .dictionary(["k": "v", "n": .stringConvertible(-7)]),
            ], error: Failure(), time: Date(timeIntervalSince1970: 1_795_600_000.25))
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().allSatisfy { $0 >= 0x20 }, "one line: every control character is escaped")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(object["text"] as? String == awkward)
        #expect(object["message"] as? String == "a \"quoted\"\nmessage")
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "berth")
        #expect(object["request_id"] as? String == "r-1")
        #expect(object["error"] as? String == "disk \"full\"")
        #expect(object["time"] as? String == "2026-11-25T09:46:40.250Z")
        #expect((object["status"] as? NSNumber)?.intValue == 404)
        #expect((object["duration_ms"] as? NSNumber)?.doubleValue == 0.25)
        #expect((object["tiny"] as? NSNumber)?.doubleValue == 1e-5)
        #expect(object["not_a_number"] as? String == "nan")
        #expect((object["list"] as? [Any])?.count == 2)
        #expect((object["nested"] as? [String: Any])?["k"] as? String == "v")
    }

    @Test func aLineWithBerthsRequestIDDropsHummingbirdsCounter() throws {
        let withOurs = try #require(try JSONSerialization.jsonObject(with: Data(line(["hb.request.id": "5f0e-7"]))) as? [String: Any])
        #expect(withOurs["request_id"] as? String == "r-1")
        #expect(withOurs["hb.request.id"] == nil, "one request id per line")

        var handler = JSONLogHandler(label: "berth", level: .info)
        handler[metadataKey: "hb.request.id"] = "5f0e-7"
        let event = LogEvent(
            level: .info, message: "m", error: nil, metadata: nil, source: nil, file: #fileID, function: #function, line: #line)
        let alone = try #require(try JSONSerialization.jsonObject(with: Data(handler.line(event, time: Date()))) as? [String: Any])
        #expect(alone["hb.request.id"] as? String == "5f0e-7", "kept where it is the only id")
    }

    @Test func keysAreInOrder() throws {
        let text = String(decoding: line(["b": "2", "a": "1", "zz": "3"]), as: UTF8.self)
        let keys = ["a", "b", "level", "logger", "message", "request_id", "time", "zz"].map { "\"\($0)\":" }
        let positions = try keys.map { key in try #require(text.range(of: key)).lowerBound }
        #expect(positions == positions.sorted(), "\(text)")
    }
}
