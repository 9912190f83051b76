/// Validation of the names in DESIGN §1. Each failure says which rule was broken.
public enum Names {
    /// A registry name: `^[a-z0-9][a-z0-9._-]*$`, 1–255 characters. What a
    /// lookup checks; a new name must also be an OCI path component
    /// (``validateNewRegistry(_:)``).
    public static func validateRegistry(_ name: String) throws(RegistryError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { throw RegistryError(.nameInvalid, "registry name is empty") }
        guard bytes.count <= 255 else {
            throw RegistryError(.nameInvalid, "registry name is longer than 255 characters")
        }
        guard isLowerAlnum(bytes[0]) else {
            throw RegistryError(.nameInvalid, "registry name '\(name)' must start with a lowercase letter or digit")
        }
        for byte in bytes where !(isLowerAlnum(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")) {
            throw RegistryError(
                .nameInvalid,
                "registry name '\(name)' may contain only lowercase letters, digits, '.', '_' and '-' (found '\(Character(Unicode.Scalar(byte)))')")
        }
    }

    /// The name of a registry to create: a registry
    /// name that is also an OCI path component (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`),
    /// since it is the first component of every image name in it, which Docker
    /// and OCI clients parse. Registries made before this rule keep working.
    public static func validateNewRegistry(_ name: String) throws(RegistryError) {
        try validateRegistry(name)
        guard isPathComponent(Array(name.utf8)) else {
            throw RegistryError(
                .nameInvalid,
                "registry name '\(name)' must end with a lowercase letter or digit and separate them only by '.', '_', '__' or '-' (an OCI path component: clients refuse others)")
        }
    }

    /// A repository name in the `/v2` API: `<registry>/<image>`, where the image
    /// follows the OCI path-component grammar and the whole is at most 255 characters.
    public static func splitRepository(_ name: String) throws(RegistryError) -> (registry: String, image: String) {
        guard name.utf8.count <= 255 else {
            throw RegistryError(.nameInvalid, "repository name is longer than 255 characters")
        }
        guard let slash = name.firstIndex(of: "/") else {
            throw RegistryError(.nameInvalid, "repository name '\(name)' must be <registry>/<image>")
        }
        let registry = String(name[..<slash])
        let image = String(name[name.index(after: slash)...])
        try validateRegistry(registry)
        try validateImage(image)
        return (registry, image)
    }

    /// An image name: components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
    public static func validateImage(_ image: String) throws(RegistryError) {
        guard !image.isEmpty else { throw RegistryError(.nameInvalid, "image name is empty") }
        for component in image.split(separator: "/", omittingEmptySubsequences: false) {
            guard isPathComponent(Array(component.utf8)) else {
                throw RegistryError(
                    .nameInvalid,
                    "image name '\(image)': component '\(component)' must be lowercase letters and digits, separated by '.', '_', '__' or '-'")
            }
        }
    }

    /// A tag: `^[a-z0-9_][a-z0-9._-]{0,127}$` (DESIGN §1). `allowingCapitals`:
    /// the distribution-spec's grammar, which a lookup takes (Berth stores no
    /// such tag, so it is a miss, not a bad request).
    public static func validateTag(_ tag: String, allowingCapitals: Bool = false) throws(RegistryError) {
        let bytes = Array((allowingCapitals ? tag.lowercased() : tag).utf8)
        guard !bytes.isEmpty, bytes.count <= 128 else {
            throw RegistryError(.tagInvalid, "tag '\(tag)' must be 1 to 128 characters")
        }
        guard isLowerAlnum(bytes[0]) || bytes[0] == UInt8(ascii: "_") else {
            throw RegistryError(.tagInvalid, "tag '\(tag)' must start with a lowercase letter, digit or '_'")
        }
        for byte in bytes where !(isLowerAlnum(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")) {
            throw RegistryError(.tagInvalid, "tag '\(tag)' may contain only lowercase letters, digits, '.', '_' and '-'")
        }
    }

    static func isLowerAlnum(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }

    static func isPathComponent(_ bytes: [UInt8]) -> Bool {
        guard let first = bytes.first, let last = bytes.last, isLowerAlnum(first), isLowerAlnum(last) else { return false }
        var i = 0
        while i < bytes.count {
            if isLowerAlnum(bytes[i]) { i += 1; continue }
            // A separator run: '.', '_', '__', or one or more '-'.
            var j = i
            while j < bytes.count, !isLowerAlnum(bytes[j]) { j += 1 }
            let run = bytes[i..<j]
            let ok = run.elementsEqual([UInt8(ascii: ".")]) || run.elementsEqual([UInt8(ascii: "_")])
                || run.elementsEqual([UInt8(ascii: "_"), UInt8(ascii: "_")]) || run.allSatisfy { $0 == UInt8(ascii: "-") }
            if !ok { return false }
            i = j
        }
        return true
    }
}

/// A content digest, `algorithm:hex`. Only sha256 content is stored.
public struct ContentDigest: Hashable, Sendable, CustomStringConvertible {
    public let algorithm: String
    public let hex: String

    /// Parses a digest Berth can store: sha256. `forLookup` also takes a
    /// well-formed sha512 one, which a read then finds absent (404), as the
    /// distribution-spec expects of a valid reference.
    public init(parsing text: String, forLookup: Bool = false) throws(RegistryError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw RegistryError(.digestInvalid, "'\(text)' is not a digest (expected sha256:<64 hex digits>)")
        }
        algorithm = String(text[..<colon])
        hex = String(text[text.index(after: colon)...])
        let expected: Int
        switch algorithm {
        case "sha256": expected = 64
        case "sha512": expected = 128
        default: throw RegistryError(.digestInvalid, "digest algorithm '\(algorithm)' is not supported")
        }
        guard hex.utf8.count == expected,
            hex.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) })
        else {
            throw RegistryError(.digestInvalid, "'\(text)' is not a valid \(algorithm) digest (\(expected) lowercase hex digits)")
        }
        if algorithm != "sha256", !forLookup {
            throw RegistryError(.digestInvalid, "only sha256 digests are supported, got '\(algorithm)'")
        }
    }

    public var description: String { "\(algorithm):\(hex)" }

    public static func isDigest(_ reference: String) -> Bool { reference.contains(":") }
}
