/// A set of changes applied atomically by ``RocksDB/write(_:_:)``.
public struct WriteBatch: Sendable {
    public enum Operation: Sendable {
        case put(ColumnFamily, [UInt8], [UInt8])
        case delete(ColumnFamily, [UInt8])
        /// Deletes keys in `[start, end)`.
        case deleteRange(ColumnFamily, [UInt8], [UInt8])
    }

    public private(set) var operations: [Operation] = []

    public init() {}

    public var isEmpty: Bool { operations.isEmpty }

    public mutating func put(_ family: ColumnFamily, _ key: [UInt8], _ value: [UInt8]) {
        operations.append(.put(family, key, value))
    }

    public mutating func delete(_ family: ColumnFamily, _ key: [UInt8]) {
        operations.append(.delete(family, key))
    }

    public mutating func deleteRange(_ family: ColumnFamily, from start: [UInt8], to end: [UInt8]) {
        operations.append(.deleteRange(family, start, end))
    }

    public mutating func append(contentsOf other: WriteBatch) {
        operations.append(contentsOf: other.operations)
    }
}
