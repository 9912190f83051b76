#if canImport(Glibc)
import Glibc
#endif

/// glibc's malloc serves every block of 128 KiB or more with a fresh mmap and
/// returns it on free, so each 1 MiB chunk a pull reads (and each one a push
/// collects) cost page faults and zeroed pages: an eighth of a pull's CPU,
/// measured. Served from the heap instead, and reused (`ChunkBuffers`), they
/// cost neither. The heap gives free memory at its top back once it exceeds
/// `trimThreshold`, in each of at most `arenas` arenas (glibc's default is 8
/// per core). That is the only way memory leaves an arena other than the
/// main one (`malloc_trim` frees the pages of free blocks inside every arena,
/// but a secondary arena's top only here), so the threshold is low: with
/// 16 MiB, up to 16 MiB stayed resident after every transfer. `trim` gives
/// the rest back when asked (`MemoryTrimmer`).
enum MemoryAllocator {
    static func tune(mmapThreshold: Int32 = 4 << 20, trimThreshold: Int32 = 2 << 20, arenas: Int32 = 2) {
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let mallopt = glibcFunction("mallopt", as: Mallopt.self) else { return }
        // The parameter numbers are glibc's ABI.
        let trimThresholdParameter: Int32 = -1, mmapThresholdParameter: Int32 = -3, arenaMaxParameter: Int32 = -8
        _ = mallopt(mmapThresholdParameter, mmapThreshold)
        _ = mallopt(trimThresholdParameter, trimThreshold)
        _ = mallopt(arenaMaxParameter, arenas)
    }

    /// Returns the heap's free pages to the kernel (malloc_trim(3)), in every arena.
    static func trim() {
        typealias MallocTrim = @convention(c) (Int) -> Int32
        _ = glibcFunction("malloc_trim", as: MallocTrim.self)?(0)
    }

    /// A function from <malloc.h>, which the Glibc module leaves out; nil off glibc.
    private static func glibcFunction<Function>(_ name: String, as type: Function.Type) -> Function? {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }  // RTLD_DEFAULT
        return unsafeBitCast(symbol, to: type)
        #else
        return nil
        #endif
    }
}
