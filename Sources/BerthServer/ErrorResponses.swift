import BerthCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Renders errors: the OCI error body on `/v2`, RFC 9457 problem+json on `/api/v1`.
enum ErrorResponses {
    static func oci(_ error: RegistryError, head: Bool = false) -> Response {
        var entry: [String: String] = ["code": error.code.rawValue, "message": error.message]
        if let detail = error.detail { entry["detail"] = detail }
        let body = JSONText.bytes(["errors": [entry]])
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.contentLength] = String(body.count)
        headers[.dockerAPIVersion] = "registry/2.0"  // /v2 answers: also those refused before the controller
        if error.code == .rangeInvalid, let detail = error.detail, detail.hasPrefix("current size ") {
            // Tell the client where to resume.
            let size = Int64(detail.dropFirst("current size ".count)) ?? 0
            headers[.range] = "0-\(max(0, size - 1))"
        } else if error.code == .rangeInvalid, let detail = error.detail, detail.hasPrefix("bytes */") {
            headers[.contentRange] = detail
        }
        return Response(
            status: .init(code: error.status), headers: headers,
            body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func problem(status: Int, code: String, detail: String) -> Response {
        let object: [String: Any] = [
            "type": "https://berth.dev/problems/\(code.lowercased().replacingOccurrences(of: "_", with: "-"))",
            "title": titles[status] ?? "Error",
            "status": status, "code": code, "detail": detail,
        ]
        let body = JSONText.bytes(object)
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func problem(_ error: RegistryError) -> Response {
        let status: Int
        switch error.code {
        case .nameInvalid, .tagInvalid, .digestInvalid, .manifestInvalid, .sizeInvalid: status = error.statusOverride ?? 400
        default: status = error.status
        }
        // The admin API names every missing thing the same way.
        let code = status == 404 ? "NOT_FOUND" : error.code.rawValue
        return problem(status: status, code: code, detail: error.message)
    }
}

/// Problem titles: the standard reason phrases of the statuses the API uses.
private let titles: [Int: String] = [
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 416: "Range Not Satisfiable", 429: "Too Many Requests",
    500: "Internal Server Error",
]
