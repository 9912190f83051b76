import BerthCore
import Foundation
import Logging
import ServiceLifecycle

/// Starts scheduled jobs: wakes at each minute boundary (UTC) and starts
/// every job whose cron expression matches that minute — garbage collection
/// and each registry's cleanup. A run still going when its next one is due
/// makes that one be skipped. Minutes the server was down are not caught up.
struct Scheduler: Service {
    let jobs: JobRunner
    let metrics: ServerMetrics
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let now = Date()
                let minute = (now.timeIntervalSince1970 / 60).rounded(.down) * 60
                let next = Date(timeIntervalSince1970: minute + 60)
                // A little past the boundary, so the clock is surely in the new minute.
                try? await Task.sleep(for: .seconds(next.timeIntervalSince(now) + 0.2))
                if Task.isCancelled { break }
                await tick(next)
            }
        }
    }

    /// Starts what is due in the minute beginning at `minute`.
    func tick(_ minute: Date) async {
        metrics.jobStarted("scheduler")
        do {
            if let schedule = try jobs.gcSchedule(), schedule.matches(minute) {
                await start("gc") { try await jobs.startGC(trigger: .schedule) }
            }
            for (registry, schedule) in try jobs.registry.cleanupSchedules() where schedule.matches(minute) {
                await start("cleanup of '\(registry)'") {
                    try await jobs.startCleanup(registry: registry, dryRun: false, trigger: .schedule)
                }
            }
            metrics.jobFinished("scheduler", outcome: "success")
        } catch {
            logger.error("scheduler failed", metadata: ["error": "\(error)"])
            metrics.jobFinished("scheduler", outcome: "failure")
        }
    }

    private func start(_ what: String, _ body: () async throws -> JobRun) async {
        do {
            _ = try await body()
        } catch let error as LifecycleError where error.code == "JOB_RUNNING" {
            logger.notice("scheduled run skipped: the previous one is still running", metadata: ["job": "\(what)"])
        } catch {
            logger.error("scheduled run could not start", metadata: ["job": "\(what)", "error": "\(error)"])
        }
    }
}
