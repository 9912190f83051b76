import Crypto
import Foundation

/// An OCI content descriptor.
public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: String
    public var size: Int64
    public var artifactType: String?
    public var annotations: [String: String]?
    public var platform: Platform?
    public var urls: [String]?

    public init(mediaType: String, digest: String, size: Int64, artifactType: String? = nil, annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.artifactType = artifactType
        self.annotations = annotations
    }
}

public struct Platform: Codable, Sendable, Equatable {
    public var architecture: String
    public var os: String
    public var variant: String?
}

/// The fields of an image manifest or index that the registry reads.
struct ManifestDocument: Decodable {
    var schemaVersion: Int?
    var mediaType: String?
    var artifactType: String?
    var config: Descriptor?
    var layers: [Descriptor]?
    var manifests: [Descriptor]?
    var subject: Descriptor?
    var annotations: [String: String]?
}

/// A manifest that passed validation, with what the catalog needs to know of it.
public struct ParsedManifest: Sendable {
    public static let maxBytes = 4 << 20

    public var digest: String
    public var mediaType: String
    public var size: Int
    public var artifactType: String?
    public var subject: Descriptor?
    public var annotations: [String: String]?
    /// Descriptors of the blobs the manifest needs: config and layers (foreign
    /// layers excepted), or an index's entries that are not manifests; the
    /// registry checks their sizes against the stored blobs.
    public var blobDescriptors: [Descriptor]
    /// Their digests.
    public var blobs: [String] { blobDescriptors.map(\.digest) }
    /// Manifests the index needs: its entries of a manifest or index media type.
    public var children: [Descriptor]
    /// Foreign layers (with `urls`): not needed here, but linked like any layer
    /// where the registry holds them (``Registry/putManifest(name:reference:bytes:contentType:actor:)``).
    public var foreignLayers: [Descriptor]

    /// Validates `bytes` as a manifest sent with `contentType`.
    public init(bytes: [UInt8], contentType: String?) throws(RegistryError) {
        guard bytes.count <= Self.maxBytes else {
            throw RegistryError(.manifestInvalid, "manifest is larger than the limit of 4 MiB", detail: "\(bytes.count) bytes")
        }
        let document: ManifestDocument
        do {
            document = try JSONDecoder().decode(ManifestDocument.self, from: Data(bytes))
        } catch {
            throw RegistryError(.manifestInvalid, "manifest is not valid JSON of a manifest: \(Self.describe(error))")
        }
        // The media type without parameters; an empty one (a header of "" or ";") counts as none.
        let declared = contentType.flatMap { header -> String? in
            let type = header.prefix(while: { $0 != ";" }).trimmingHTTPWhitespace()
            return type.isEmpty ? nil : String(type)
        }
        var type = document.mediaType ?? declared
        if type == nil || type == "application/json" || type == "application/octet-stream" {
            type = document.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest
        }
        guard let type else { throw RegistryError(.manifestInvalid, "manifest has no media type") }
        if let inBody = document.mediaType, let declared, declared != inBody,
            declared != "application/json", declared != "application/octet-stream"
        {
            throw RegistryError(
                .manifestInvalid, "Content-Type '\(declared)' does not match the manifest's mediaType '\(inBody)'")
        }
        if type == MediaType.dockerSchema1 || type == MediaType.dockerSchema1Signed {
            throw RegistryError(.manifestInvalid, "Docker schema 1 manifests are not supported; push schema 2 or OCI")
        }
        guard document.schemaVersion == 2 else {
            throw RegistryError(.manifestInvalid, "manifest schemaVersion must be 2")
        }
        var blobs: [Descriptor] = []
        var children: [Descriptor] = []
        var foreign: [Descriptor] = []
        if MediaType.isImage(type) {
            guard let config = document.config else {
                throw RegistryError(.manifestInvalid, "image manifest has no config descriptor")
            }
            guard let layers = document.layers else {
                throw RegistryError(.manifestInvalid, "image manifest has no layers array")
            }
            try Self.check(config)
            blobs.append(config)
            for layer in layers {
                try Self.check(layer)
                // A foreign layer (with urls) lives elsewhere and is not required here; any other
                // descriptor's urls are only hints, and its blob must be here (and is linked).
                let isForeign = MediaType.isForeignLayer(layer.mediaType) && !(layer.urls?.isEmpty ?? true)
                if isForeign { foreign.append(layer) } else { blobs.append(layer) }
            }
        } else if MediaType.isIndex(type) {
            guard let manifests = document.manifests else {
                throw RegistryError(.manifestInvalid, "index has no manifests array")
            }
            for descriptor in manifests {
                try Self.check(descriptor)
                // An entry that is not a manifest is a blob, checked and linked like a layer:
                // BuildKit's registry cache lists its layers and cache config this way.
                if MediaType.isImage(descriptor.mediaType) || MediaType.isIndex(descriptor.mediaType) {
                    children.append(descriptor)
                } else {
                    blobs.append(descriptor)
                }
            }
        } else {
            throw RegistryError(.manifestInvalid, "manifest media type '\(type)' is not supported")
        }
        if let subject = document.subject { try Self.check(subject) }
        self.digest = "sha256:" + SHA256.hash(data: bytes).hexString
        self.mediaType = type
        self.size = bytes.count
        // An empty artifactType counts as none (distribution-spec, "Listing Referrers").
        let declaredArtifactType = document.artifactType.flatMap { $0.isEmpty ? nil : $0 }
        self.artifactType = declaredArtifactType ?? (MediaType.isImage(type) ? document.config?.mediaType : nil)
        self.subject = document.subject
        self.annotations = document.annotations
        // Once each: a manifest may list a descriptor many times over (within
        // 4 MiB, tens of thousands), and every check reads what it names.
        self.blobDescriptors = Self.distinct(blobs)
        self.children = Self.distinct(children)
        self.foreignLayers = Self.distinct(foreign)
    }

    /// `descriptors` without repeats of a digest and size, in order (two sizes
    /// of one digest both stay, for the size check to refuse).
    private static func distinct(_ descriptors: [Descriptor]) -> [Descriptor] {
        var seen = Set<String>()
        return descriptors.filter { seen.insert("\($0.digest) \($0.size)").inserted }
    }

    private static func check(_ descriptor: Descriptor) throws(RegistryError) {
        do {
            _ = try ContentDigest(parsing: descriptor.digest)
        } catch {
            throw RegistryError(.manifestInvalid, "descriptor digest '\(descriptor.digest)' is invalid: \(error.message)")
        }
        guard descriptor.size >= 0 else {
            throw RegistryError(.manifestInvalid, "descriptor \(descriptor.digest) has a negative size")
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
            DecodingError.keyNotFound(_, let context), DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }
}
