/// A parsed `/v2` request path. Repository names contain slashes, so the
/// path is split at the last recognised keyword, as Distribution does.
enum DistributionRoute: Equatable {
    case base
    case catalog
    case tags(name: String)
    case manifest(name: String, reference: String)
    case blob(name: String, digest: String)
    case uploads(name: String)
    case upload(name: String, id: String)
    case referrers(name: String, digest: String)

    /// The methods the route answers, for a 405's `Allow`.
    var allowedMethods: String {
        switch self {
        case .base, .catalog, .tags: "GET, HEAD"
        case .manifest: "GET, HEAD, PUT, DELETE"
        case .blob: "GET, HEAD, DELETE"
        case .uploads: "POST"
        case .upload: "GET, HEAD, PATCH, PUT, DELETE"
        case .referrers: "GET, HEAD"
        }
    }

    init?(path: String) {
        guard path == "/v2" || path.hasPrefix("/v2/") else { return nil }
        let rest = path.dropFirst(4)
        if rest.isEmpty { self = .base; return }
        if rest == "_catalog" { self = .catalog; return }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        func name(_ upTo: Int) -> String? {
            upTo > 0 ? parts[..<upTo].joined(separator: "/") : nil
        }
        let n = parts.count
        if n >= 3, parts[n - 2] == "tags", parts[n - 1] == "list", let name = name(n - 2) {
            self = .tags(name: name)
        } else if n >= 4, parts[n - 3] == "blobs", parts[n - 2] == "uploads", let name = name(n - 3) {
            self = parts[n - 1].isEmpty ? .uploads(name: name) : .upload(name: name, id: parts[n - 1])
        } else if n >= 3, parts[n - 2] == "blobs", parts[n - 1] == "uploads", let name = name(n - 2) {
            self = .uploads(name: name)
        } else if n >= 3, parts[n - 2] == "manifests", !parts[n - 1].isEmpty, let name = name(n - 2) {
            self = .manifest(name: name, reference: parts[n - 1])
        } else if n >= 3, parts[n - 2] == "blobs", !parts[n - 1].isEmpty, let name = name(n - 2) {
            self = .blob(name: name, digest: parts[n - 1])
        } else if n >= 3, parts[n - 2] == "referrers", !parts[n - 1].isEmpty, let name = name(n - 2) {
            self = .referrers(name: name, digest: parts[n - 1])
        } else {
            return nil
        }
    }
}

/// An HTTP byte range resolved against a resource's size.
enum ByteRange {
    /// What a GET's `Range` header asks of a resource.
    enum Selection: Equatable {
        /// The whole resource (200): a unit other than bytes, or several ranges,
        /// which RFC 9110 lets a server ignore. Clients that ask for several
        /// (containers/image's partial pulls) take the whole body and split it.
        case whole
        /// One range (206).
        case part(Range<Int64>)
        /// A malformed or unsatisfiable byte range (416).
        case unsatisfiable
    }

    /// Resolves a `Range` header (`bytes=a-b`, `bytes=a-` or `bytes=-n`) against a resource of `size` bytes.
    static func select(_ header: String, size: Int64) -> Selection {
        guard header.hasPrefix("bytes=") else { return .whole }
        guard !header.contains(",") else { return .whole }
        return parse(header, size: size).map(Selection.part) ?? .unsatisfiable
    }

    /// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n`; `nil` when unsatisfiable or malformed.
    static func parse(_ header: String, size: Int64) -> Range<Int64>? {
        guard header.hasPrefix("bytes="), !header.contains(",") else { return nil }
        let spec = header.dropFirst(6)
        guard let dash = spec.firstIndex(of: "-") else { return nil }
        let first = spec[..<dash].trimmingHTTPWhitespace()
        let last = spec[spec.index(after: dash)...].trimmingHTTPWhitespace()
        if first.isEmpty {
            guard let suffix = Int64(last), suffix > 0, size > 0 else { return nil }
            return max(0, size - suffix)..<size
        }
        guard let start = Int64(first), start >= 0, start < size else { return nil }
        if last.isEmpty { return start..<size }
        guard let end = Int64(last), end >= start else { return nil }
        // `end` may be as large as Int64 allows: compare before adding one.
        return start..<(end >= size - 1 ? size : end + 1)
    }

    /// Parses an upload chunk's `Content-Range`: `a-b`, tolerating a `bytes ` or `bytes=` prefix and a `/total` suffix.
    static func parseChunk(_ header: String) -> (start: Int64, end: Int64)? {
        var text = header.trimmingHTTPWhitespace()
        for prefix in ["bytes=", "bytes "] where text.hasPrefix(prefix) { text = text.dropFirst(prefix.count) }
        if let slash = text.firstIndex(of: "/") { text = text[..<slash] }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let start = Int64(parts[0]), let end = Int64(parts[1]), start >= 0, end >= start - 1 else {
            return nil
        }
        return (start, end)
    }
}

import Foundation
