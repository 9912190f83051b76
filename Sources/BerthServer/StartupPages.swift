import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Gives back the pages of Berth's own binary that only start-up ran.
///
/// Opening the store (RocksDB's recovery), making or checking the
/// certificate, reading the configuration and building the routers run code
/// that a serving process never runs again, yet every page of it stays mapped
/// and counts in the process's RSS for as long as it lives: 8–10 MiB of the
/// 26 MiB of `berth` resident at the end of a start (measured). Once the
/// listeners are up, `release` asks the kernel to reclaim the binary's
/// mapped pages (`MADV_PAGEOUT`); what the server runs next faults back in,
/// from disk, once. It is the user-space cousin of the kernel freeing its
/// `__init` sections after boot.
///
/// `MADV_PAGEOUT` (unlike `MADV_DONTNEED`) never changes what a page holds:
/// a page the process wrote, such as relocated data, has no file copy to go
/// back to and stays. A kernel older than 5.4 refuses the advice; then
/// nothing changes.
enum StartupPages {
    /// Asks the kernel to reclaim every page mapped from the executable's file.
    /// Returns the bytes of address space advised (not what the kernel freed).
    @discardableResult
    static func release() -> Int {
        #if os(Linux)
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8), let path = executablePath()
        else { return 0 }
        var advised = 0
        for range in mappedRanges(maps: maps, of: path) {
            guard let start = UnsafeMutableRawPointer(bitPattern: range.lowerBound) else { continue }
            if madvise(start, range.count, pageOutAdvice) == 0 { advised += range.count }
        }
        return advised
        #else
        return 0
        #endif
    }

    /// `MADV_PAGEOUT` from <linux/mman.h> (Linux 5.4), which Glibc's module may not export.
    static let pageOutAdvice: Int32 = 21

    /// The address ranges `maps` (the text of `/proc/self/maps`) shows mapped from the file at `path`.
    static func mappedRanges(maps: String, of path: String) -> [Range<UInt>] {
        maps.split(separator: "\n").compactMap { line in
            // address perms offset dev inode, then the path after padding
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, fields[5].drop(while: { $0 == " " }) == path else { return nil }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16), low < high
            else { return nil }
            return low..<high
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
