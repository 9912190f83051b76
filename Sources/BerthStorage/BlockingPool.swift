import NIOPosix

/// Runs blocking storage calls off the event loops and off Swift's
/// cooperative pool, on a fixed set of threads.
///
/// Threads spend most of their time waiting on the disk, so there are more of
/// them than cores: concurrent synced writes join one RocksDB write group.
public struct BlockingPool: Sendable {
    private let pool: NIOThreadPool

    public init(threads: Int) {
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    public func shutdown() async throws {
        try await pool.shutdownGracefully()
    }
}
