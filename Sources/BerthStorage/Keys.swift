/// Builds ordered binary keys: a one-letter record kind, then components
/// separated by a NUL byte, which no name or digest contains. Keys of one kind
/// and parent sort together, so a parent's children are one prefix scan.
public struct Key: Sendable {
    public private(set) var bytes: [UInt8]

    public init(_ kind: Character, _ components: String...) {
        self.init(kind, components)
    }

    public init(_ kind: Character, _ components: [String]) {
        bytes = Array(String(kind).utf8)
        for component in components {
            bytes.append(0)
            bytes.append(contentsOf: component.utf8)
        }
    }

    /// The key as a prefix for scanning its children: ends with the separator.
    public var childPrefix: [UInt8] { bytes + [0] }

    /// The last component of a key read back from a scan.
    public static func lastComponent(_ key: UnsafeRawBufferPointer) -> String {
        let start = (key.lastIndex(of: 0) ?? -1) + 1
        return String(decoding: key[start...], as: UTF8.self)
    }

    /// All components after the kind of a key read back from a scan.
    public static func components(_ key: UnsafeRawBufferPointer) -> [String] {
        key.split(separator: 0, omittingEmptySubsequences: false).dropFirst().map {
            String(decoding: $0, as: UTF8.self)
        }
    }
}

extension FixedWidthInteger {
    /// Big-endian bytes, so numeric keys sort in numeric order.
    public var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }

    public init(bigEndianBytes bytes: some Collection<UInt8>) {
        var value: Self = 0
        for byte in bytes { value = value << 8 | Self(byte) }
        self = value
    }
}
