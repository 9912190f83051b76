/// A name filter shared by every policy: `*` any run but `/`, `**` any run,
/// `?` one character but `/`, `{a,b}` alternatives (nestable), `\x` a literal
/// `x`. Matches whole names. See docs/lifecycle.md.
public struct Pattern: Sendable, Equatable, CustomStringConvertible {
    public let source: String
    let node: Node

    indirect enum Node: Sendable, Equatable {
        case sequence([Node])
        case literal(Character)
        case anyRun(crossesSlash: Bool)
        case one
        case alternatives([Node])
    }

    public static let maxLength = 256

    public init(_ source: String) throws(PatternError) {
        // Bytes too: one character may be many scalars, each compared on every step.
        guard !source.isEmpty, source.count <= Self.maxLength, source.utf8.count <= 4 * Self.maxLength else {
            throw PatternError(position: 0, message: "a pattern is 1 to \(Self.maxLength) characters (\(4 * Self.maxLength) bytes)")
        }
        var parser = Parser(characters: Array(source))
        let node = try parser.sequence(inBraces: false)
        self.source = source
        self.node = node
    }

    public var description: String { source }

    public func matches(_ name: String) -> Bool {
        let characters = Array(name)
        // Each node maps a set of start positions to the set of end positions
        // it can reach, in one pass over the name: a match costs
        // O(pattern × name) at worst, with no backtracking blow-up.
        return Self.advance(node, from: [0], in: characters).contains(characters.count)
    }

    private static func advance(_ node: Node, from starts: Set<Int>, in name: [Character]) -> Set<Int> {
        if starts.isEmpty { return starts }
        switch node {
        case .sequence(let nodes):
            return nodes.reduce(starts) { advance($1, from: $0, in: name) }
        case .literal(let character):
            return Set(starts.compactMap { $0 < name.count && name[$0] == character ? $0 + 1 : nil })
        case .one:
            return Set(starts.compactMap { $0 < name.count && name[$0] != "/" ? $0 + 1 : nil })
        case .anyRun(let crossesSlash):
            // One sweep: a position is reached if a run starts there or the run
            // reaching the one before it may take that character.
            var ends = Set<Int>()
            var running = false
            for position in starts.min()!...name.count {
                running = starts.contains(position) || (running && (crossesSlash || name[position - 1] != "/"))
                if running { ends.insert(position) }
            }
            return ends
        case .alternatives(let options):
            return options.reduce(into: Set<Int>()) { $0.formUnion(advance($1, from: starts, in: name)) }
        }
    }

    private struct Parser {
        let characters: [Character]
        var position = 0

        mutating func sequence(inBraces: Bool) throws(PatternError) -> Node {
            var nodes: [Node] = []
            while position < characters.count {
                let character = characters[position]
                switch character {
                case "*":
                    if position + 1 < characters.count, characters[position + 1] == "*" {
                        position += 2
                        nodes.append(.anyRun(crossesSlash: true))
                    } else {
                        position += 1
                        nodes.append(.anyRun(crossesSlash: false))
                    }
                case "?":
                    position += 1
                    nodes.append(.one)
                case "\\":
                    guard position + 1 < characters.count else {
                        throw PatternError(position: position, message: "a trailing '\\' escapes nothing")
                    }
                    nodes.append(.literal(characters[position + 1]))
                    position += 2
                case "{":
                    let open = position
                    position += 1
                    var options: [Node] = []
                    while true {
                        options.append(try sequence(inBraces: true))
                        guard position < characters.count else {
                            throw PatternError(position: open, message: "'{' is never closed")
                        }
                        let separator = characters[position]
                        position += 1
                        if separator == "}" { break }
                    }
                    nodes.append(.alternatives(options))
                case "}", ",":
                    if inBraces { return .sequence(nodes) }
                    throw PatternError(position: position, message: "'\(character)' outside braces")
                default:
                    position += 1
                    nodes.append(.literal(character))
                }
            }
            return .sequence(nodes)
        }
    }
}

/// A pattern that cannot be parsed; `position` counts characters from 0.
public struct PatternError: Error, Sendable, Equatable, CustomStringConvertible {
    public var position: Int
    public var message: String

    public var description: String { "\(message) (at character \(position + 1))" }
}
