/// An error of the registry, with the OCI Distribution error code it maps to.
public struct RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case blobUnknown = "BLOB_UNKNOWN"
        case blobUploadInvalid = "BLOB_UPLOAD_INVALID"
        case blobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
        case digestInvalid = "DIGEST_INVALID"
        case manifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
        case manifestInvalid = "MANIFEST_INVALID"
        case manifestUnknown = "MANIFEST_UNKNOWN"
        case nameInvalid = "NAME_INVALID"
        case nameUnknown = "NAME_UNKNOWN"
        case sizeInvalid = "SIZE_INVALID"
        case unauthorized = "UNAUTHORIZED"
        case denied = "DENIED"
        case unsupported = "UNSUPPORTED"
        case tooManyRequests = "TOOMANYREQUESTS"
        case rangeInvalid = "RANGE_INVALID"
        case tagInvalid = "TAG_INVALID"
        case conflict = "CONFLICT"
    }

    public var code: Code
    public var message: String
    public var detail: String?
    /// A status other than the code's usual one (413 for an oversized `SIZE_INVALID`).
    public var statusOverride: Int?

    public init(_ code: Code, _ message: String, detail: String? = nil, status: Int? = nil) {
        self.code = code
        self.message = message
        self.detail = detail
        self.statusOverride = status
    }

    /// The HTTP status the OCI Distribution spec gives this code.
    public var status: Int {
        if let statusOverride { return statusOverride }
        switch code {
        case .blobUnknown, .blobUploadUnknown, .manifestUnknown, .nameUnknown: return 404
        case .unauthorized: return 401
        case .denied: return 403
        case .unsupported: return 405
        case .tooManyRequests: return 429
        case .rangeInvalid: return 416
        case .conflict: return 409
        default: return 400
        }
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// A push or tag change that would move a tag of an immutable image.
public struct TagImmutableError: Error, Sendable, CustomStringConvertible {
    public var repository: String
    public var tag: String
    public var current: String

    public var description: String {
        "tag '\(tag)' of '\(repository)' is immutable: it points at \(current)"
    }
}

/// A request whose input breaks a rule that is not a registry protocol error (a field too long, a bad value).
public struct InvalidRequest: Error, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
}
