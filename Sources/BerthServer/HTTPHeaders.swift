import HTTPTypes
import Hummingbird

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
}

extension Request {
    /// The declared body length, when the request has a `Content-Length`.
    var contentLength: Int64? {
        headers[.contentLength].flatMap { Int64($0) }.flatMap { $0 >= 0 ? $0 : nil }
    }

    func query(_ name: String) -> String? {
        uri.queryParameters[Substring(name)].map(String.init)
    }
}
