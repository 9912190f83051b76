import Testing

@testable import BerthServer

/// `StartupPages` advises exactly the executable's own mappings, code apart.
@Suite struct StartupPagesTests {
    @Test func onlyTheExecutablesMappingsAreChosen() {
        let maps = """
            55d0a0000000-55d0a0800000 r--p 00000000 fd:01 1234                       /opt/berth/bin/berth
            55d0a0800000-55d0a2c00000 r-xp 00800000 fd:01 1234                       /opt/berth/bin/berth
            55d0a2c00000-55d0a2d00000 rw-p 02c00000 fd:01 1234                       /opt/berth/bin/berth
            55d0a2d00000-55d0a2e00000 rw-p 00000000 00:00 0                          [heap]
            7f1c00000000-7f1c00200000 r-xp 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
            7f1c00200000-7f1c00300000 r-xp 00000000 fd:01 77                         /opt/berth/bin/berth (deleted)
            7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
            """
        #expect(
            StartupPages.mappings(maps: maps, of: "/opt/berth/bin/berth") == [
                .init(range: 0x55d0_a000_0000..<0x55d0_a080_0000, executable: false, writable: false),
                .init(range: 0x55d0_a080_0000..<0x55d0_a2c0_0000, executable: true, writable: false),
                .init(range: 0x55d0_a2c0_0000..<0x55d0_a2d0_0000, executable: false, writable: true),
            ])
    }

    @Test func aPathWithSpacesIsMatchedWhole() {
        let maps = "1000-2000 r-xp 00000000 fd:01 5 /srv/my apps/berth\n3000-4000 r-xp 00000000 fd:01 5 /srv/my\n"
        #expect(StartupPages.mappings(maps: maps, of: "/srv/my apps/berth").map(\.range) == [0x1000..<0x2000])
        #expect(StartupPages.mappings(maps: maps, of: "/srv/my").map(\.range) == [0x3000..<0x4000])
    }
}
