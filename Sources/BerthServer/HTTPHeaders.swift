import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let dockerContentDigest = Self("Docker-Content-Digest")!
    static let dockerAPIVersion = Self("Docker-Distribution-API-Version")!
    static let dockerUploadUUID = Self("Docker-Upload-UUID")!
    static let ociSubject = Self("OCI-Subject")!
    static let ociFiltersApplied = Self("OCI-Filters-Applied")!
    static let ociChunkMinLength = Self("OCI-Chunk-Min-Length")!
    static let range = Self("Range")!
    static let link = Self("Link")!
    static let xForwardedProto = Self("X-Forwarded-Proto")!
    static let xForwardedFor = Self("X-Forwarded-For")!
}

extension Request {
    /// The declared body length, when the request has a `Content-Length`.
    var contentLength: Int64? {
        headers[.contentLength].flatMap { Int64($0) }.flatMap { $0 >= 0 ? $0 : nil }
    }

    /// The whole body when it holds at most `limit` bytes; nil when it declares
    /// more (refused unread) or sends more without declaring its length.
    mutating func collectBody(atMost limit: Int) async throws -> ByteBuffer? {
        if let length = contentLength, length > limit { return nil }
        do {
            return try await collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            return nil
        }
    }

    func query(_ name: String) -> String? {
        uri.queryParameters[Substring(name)].map(String.init)
    }
}
