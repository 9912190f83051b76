import BerthCore
import Foundation
import Logging
import ServiceLifecycle

/// Starts scheduled jobs: wakes at each minute boundary (UTC) and starts
/// every job whose cron expression matches that minute — garbage collection
/// and each registry's cleanup. A run still going when its next one is due
/// makes that one be skipped. Minutes the server was down are not caught up,
/// and none is ticked twice: a wall clock stepped back (NTP, an operator's
/// `date -s`) waits for the minutes it repeats.
struct Scheduler: Service {
    let jobs: JobRunner
    let metrics: ServerMetrics
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var last: Date?
            while !Task.isCancelled {
                let now = Date()
                if let ticked = last, ticked.timeIntervalSince(now) > Self.maximumStepBack {
                    logger.warning(
                        "the wall clock went back: schedules follow it, and may start minutes they started before",
                        metadata: ["last_minute": "\(ticked)", "now": "\(now)"])
                }
                let next = Self.nextMinute(after: now, last: last)
                // A little past the boundary, so the clock is surely in the new minute.
                try? await Task.sleep(for: .seconds(max(0, next.timeIntervalSince(Date())) + 0.2))
                if Task.isCancelled { break }
                // Woken early by a clock stepped back: wait for the minute again.
                guard Date() >= next else { continue }
                await tick(next)
                last = next
            }
        }
    }

    /// The minute boundary to tick next: the first after `now`, and after the
    /// one ticked last, unless the clock went back further than
    /// ``maximumStepBack`` (a clock that was wrong ahead, set right): then the
    /// schedules follow the clock rather than wait out the difference.
    static func nextMinute(after now: Date, last: Date?) -> Date {
        let minute = (now.timeIntervalSince1970 / 60).rounded(.down) * 60
        let next = Date(timeIntervalSince1970: minute + 60)
        guard let last, next <= last, last.timeIntervalSince(now) <= maximumStepBack else { return next }
        return last.addingTimeInterval(60)
    }

    /// Seconds the wall clock may go back over which the minutes it repeats are not ticked again.
    static let maximumStepBack: TimeInterval = 300

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
