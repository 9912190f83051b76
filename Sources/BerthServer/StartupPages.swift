import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Gives back the pages of Berth's own binary that only start-up ran.
///
/// Opening the store (RocksDB's recovery), making or checking the
/// certificate, reading the configuration and building the routers run code
/// that a serving process never runs again, yet every page of it stays mapped
/// and counts in the process's RSS for as long as it lives: 11–13 MiB of the
/// 31 MiB resident at the end of a start (measured). Once the listeners are
/// up, `release` unmaps the binary's pages from the process; what the server
/// runs next faults back in, from the page cache, once. It is the user-space
/// cousin of the kernel freeing its `__init` sections after boot.
///
/// Code is dropped with `MADV_DONTNEED`: its pages are never written, so
/// they come back from the file as they were. Every other mapping of the
/// binary (read-only data, and the writable segment whose pages are the
/// file's until written) gets `MADV_PAGEOUT`, which never changes what a page
/// holds: a page the process wrote, such as relocated data, has no file copy
/// to go back to and stays. (`MADV_PAGEOUT` alone would skip the pages
/// another process of the same binary maps, and evicts them from the page
/// cache.) A kernel older than 5.4 refuses `MADV_PAGEOUT`; then that part
/// stays.
enum StartupPages {
    /// Unmaps the executable's code and asks the kernel to reclaim its other
    /// file pages. Returns the bytes of address space advised (not what the
    /// kernel freed).
    @discardableResult
    static func release() -> Int {
        #if os(Linux)
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8), let path = executablePath()
        else { return 0 }
        var advised = 0
        for mapping in mappings(maps: maps, of: path) {
            guard let start = UnsafeMutableRawPointer(bitPattern: mapping.range.lowerBound) else { continue }
            let advice = mapping.executable && !mapping.writable ? MADV_DONTNEED : pageOutAdvice
            if madvise(start, mapping.range.count, advice) == 0 { advised += mapping.range.count }
        }
        return advised
        #else
        return 0
        #endif
    }

    /// `MADV_PAGEOUT` from <linux/mman.h> (Linux 5.4), which Glibc's module may not export.
    static let pageOutAdvice: Int32 = 21

    /// A mapping of a file: its addresses and whether it may be executed or written.
    struct Mapping: Equatable {
        var range: Range<UInt>
        var executable: Bool
        var writable: Bool
    }

    /// The mappings `maps` (the text of `/proc/self/maps`) shows of the file at `path`.
    static func mappings(maps: String, of path: String) -> [Mapping] {
        maps.split(separator: "\n").compactMap { line in
            // address perms offset dev inode, then the path after padding
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, fields[5].drop(while: { $0 == " " }) == path else { return nil }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16), low < high
            else { return nil }
            let permissions = Array(fields[1].utf8)
            guard permissions.count == 4 else { return nil }
            return Mapping(range: low..<high, executable: permissions[2] == UInt8(ascii: "x"), writable: permissions[1] == UInt8(ascii: "w"))
        }
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
