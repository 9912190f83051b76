import Logging
import ServiceLifecycle

/// A background job run every `interval` seconds until graceful shutdown;
/// each run is counted in the job metrics and a failure is logged, not fatal.
///
/// The jobs: `maintenance` (expire idle uploads, sweep unreferenced extents)
/// and `pull-statistics` (write pending pull counts).
struct PeriodicJob: Service {
    let name: String
    let interval: Double
    let metrics: ServerMetrics
    let logger: Logger
    let body: @Sendable () async throws -> Void

    init(
        name: String, interval: Double, metrics: ServerMetrics, logger: Logger, body: @escaping @Sendable () async throws -> Void
    ) {
        self.name = name
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
        self.body = body
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                if Task.isCancelled { break }
                metrics.jobStarted(name)
                do {
                    try await body()
                    metrics.jobFinished(name, outcome: "success")
                } catch {
                    logger.error("background job failed", metadata: ["job": "\(name)", "error": "\(error)"])
                    metrics.jobFinished(name, outcome: "failure")
                }
            }
        }
    }
}
