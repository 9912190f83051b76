import Foundation
import Testing

@testable import BerthServer

/// `StartupPages` drops exactly the executable's read-only mappings that hold
/// no page the process wrote.
@Suite struct StartupPagesTests {
    private static func mapping(_ header: String, anonymous: Int, swap: Int = 0) -> String {
        """
        \(header)
        Size:               8192 kB
        Rss:                4096 kB
        Anonymous:          \(anonymous) kB
        Swap:               \(swap) kB
        VmFlags: rd mr mw me sd
        """
    }

    @Test func onlyTheExecutablesPagesThatAreTheFilesAreDropped() {
        let smaps = [
            Self.mapping("55d0a0000000-55d0a0800000 r--p 00000000 fd:01 1234                       /opt/berth/bin/berth", anonymous: 0),
            Self.mapping("55d0a0800000-55d0a2c00000 r-xp 00800000 fd:01 1234                       /opt/berth/bin/berth", anonymous: 0),
            // RELRO: read-only now, written by the loader first.
            Self.mapping("55d0a2c00000-55d0a2d00000 r--p 02c00000 fd:01 1234                       /opt/berth/bin/berth", anonymous: 1324),
            Self.mapping("55d0a2d00000-55d0a2e00000 rw-p 02d00000 fd:01 1234                       /opt/berth/bin/berth", anonymous: 0),
            Self.mapping("55d0a2e00000-55d0a2f00000 rw-p 00000000 00:00 0                          [heap]", anonymous: 1024),
            Self.mapping("7f1c00000000-7f1c00200000 r-xp 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6", anonymous: 0),
            Self.mapping("7f1c00200000-7f1c00300000 r-xp 00000000 fd:01 77                         /opt/berth/bin/berth (deleted)", anonymous: 0),
        ].joined(separator: "\n")
        let found = StartupPages.mappings(smaps: smaps, of: "/opt/berth/bin/berth")
        #expect(found.map(\.range.lowerBound) == [0x55d0_a000_0000, 0x55d0_a080_0000, 0x55d0_a2c0_0000, 0x55d0_a2d0_0000])
        #expect(found.map(\.droppable) == [true, true, false, false])
        #expect(found.map(\.residentKiB) == [4096, 4096, 4096, 4096])
        // A breakpoint written into code makes its mapping hold a private page.
        let patched = Self.mapping("1000-2000 r-xp 00000000 fd:01 5 /opt/berth/bin/berth", anonymous: 4)
        #expect(StartupPages.mappings(smaps: patched, of: "/opt/berth/bin/berth").map(\.droppable) == [false])
        // Relocated data whose written pages all went to swap holds private copies too.
        let swapped = Self.mapping("1000-2000 r--p 00000000 fd:01 5 /opt/berth/bin/berth", anonymous: 0, swap: 8)
        #expect(StartupPages.mappings(smaps: swapped, of: "/opt/berth/bin/berth").map(\.droppable) == [false])
        // A mapping whose fields are missing is never taken for droppable.
        #expect(StartupPages.mappings(smaps: "1000-2000 r-xp 00000000 fd:01 5 /opt/berth/bin/berth", of: "/opt/berth/bin/berth").map(\.droppable) == [false])
    }

    @Test func aPathWithSpacesIsMatchedWhole() {
        let smaps = Self.mapping("1000-2000 r-xp 00000000 fd:01 5 /srv/my apps/berth", anonymous: 0) + "\n"
            + Self.mapping("3000-4000 r-xp 00000000 fd:01 5 /srv/my", anonymous: 0)
        #expect(StartupPages.mappings(smaps: smaps, of: "/srv/my apps/berth").map(\.range) == [0x1000..<0x2000])
        #expect(StartupPages.mappings(smaps: smaps, of: "/srv/my").map(\.range) == [0x3000..<0x4000])
    }

    /// The test process drops its own code, which then runs on from the file.
    @Test func aProcessDropsItsCodeAndRunsOn() throws {
        let before = try Self.residentKiBOfOwnDroppableMappings()
        #expect(StartupPages.release() > 0)
        let after = try Self.residentKiBOfOwnDroppableMappings()
        #expect(after < before / 2, "resident KiB of the test binary's read-only mappings: \(before) before, \(after) after")
    }

    /// What `/proc/self/smaps` says is resident of this executable's read-only mappings.
    private static func residentKiBOfOwnDroppableMappings() throws -> Int {
        let smaps = try String(contentsOfFile: "/proc/self/smaps", encoding: .utf8)
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var total = 0
        var counting = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if !first.hasSuffix(":") {
                counting = line.hasSuffix(" " + executable) && fields.count > 1 && !fields[1].contains("w")
            } else if counting, first == "Rss:", fields.count >= 2, let kib = Int(fields[1]) {
                total += kib
            }
        }
        return total
    }
}
