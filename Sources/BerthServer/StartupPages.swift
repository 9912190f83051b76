import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Gives back the pages of Berth's own binary that only start-up ran.
///
/// Opening the store (RocksDB's recovery), making or checking the
/// certificate, reading the configuration and building the routers run code
/// that a serving process never runs again, yet every page of it stays mapped
/// and counts in the process's RSS for as long as it lives: about 10 MiB of
/// the 31 MiB resident at the end of a start (measured before any release).
/// `release` unmaps the binary's read-only pages (code, read-only data) from
/// the process with `MADV_DONTNEED`; what runs next faults back in, from the
/// page cache, once. The start calls it as each of its phases ends, so that
/// its peak is its largest phase's, and once more two seconds after the
/// services start. It is the user-space cousin of the kernel freeing its
/// `__init` sections after boot.
///
/// `MADV_DONTNEED` would discard a private copy of a page, which a mapping
/// of a file holds only where the page was written: relocated data (RELRO,
/// made read-only after the loader wrote it), or a debugger's breakpoint or a
/// uprobe in code. So only mappings that are not writable and hold no such
/// copy, in memory or in swap (`Anonymous: 0 kB` and `Swap: 0 kB` in
/// `/proc/self/smaps`), are dropped: what comes back from the file is what
/// was there. (`MADV_PAGEOUT`, which never discards, skips pages another
/// process of the same binary maps, and pages of a file the process may not
/// write, as a server running as its own user may not write its binary.)
enum StartupPages {
    /// Unmaps the executable's read-only pages that are the file's own.
    /// Returns the bytes that were resident in the mappings dropped.
    @discardableResult
    static func release() -> Int {
        #if os(Linux)
        guard let smaps = try? String(contentsOfFile: "/proc/self/smaps", encoding: .utf8), let path = executablePath()
        else { return 0 }
        var dropped = 0
        for mapping in mappings(smaps: smaps, of: path) where mapping.droppable {
            guard let start = UnsafeMutableRawPointer(bitPattern: mapping.range.lowerBound) else { continue }
            if madvise(start, mapping.range.count, MADV_DONTNEED) == 0 { dropped += (mapping.residentKiB ?? 0) << 10 }
        }
        return dropped
        #else
        return 0
        #endif
    }

    /// A mapping of a file, as `/proc/self/smaps` shows it.
    struct Mapping: Equatable {
        var range: Range<UInt>
        var writable: Bool
        /// Kilobytes of the mapping in memory.
        var residentKiB: Int?
        /// Kilobytes of private copies in the mapping: pages the process wrote.
        var anonymousKiB: Int?
        /// Kilobytes of the mapping in swap: private copies too.
        var swapKiB: Int?

        /// Whether every page of the mapping is the file's, so that dropping
        /// it loses nothing.
        var droppable: Bool { !writable && anonymousKiB == 0 && swapKiB == 0 }
    }

    /// The mappings `smaps` (the text of `/proc/self/smaps`) shows of the file at `path`.
    static func mappings(smaps: String, of path: String) -> [Mapping] {
        var found: [Mapping] = []
        var current: Mapping?
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.hasSuffix(":") {
                // A field of the mapping above: "Anonymous:   12 kB".
                guard current != nil, fields.count >= 2 else { continue }
                switch first {
                case "Rss:": current?.residentKiB = Int(fields[1])
                case "Anonymous:": current?.anonymousKiB = Int(fields[1])
                case "Swap:": current?.swapKiB = Int(fields[1])
                default: break
                }
                continue
            }
            if let current { found.append(current) }
            current = nil
            // address perms offset dev inode, then the path after padding
            guard fields.count == 6, fields[5].drop(while: { $0 == " " }) == path else { continue }
            let bounds = first.split(separator: "-")
            let permissions = Array(fields[1].utf8)
            guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16), low < high,
                permissions.count == 4
            else { continue }
            current = Mapping(range: low..<high, writable: permissions[1] == UInt8(ascii: "w"))
        }
        if let current { found.append(current) }
        return found
    }

    #if os(Linux)
    private static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    #endif
}
