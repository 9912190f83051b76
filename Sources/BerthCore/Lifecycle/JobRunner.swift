import BerthStorage
import Foundation
import Logging
import NIOConcurrencyHelpers

/// Settings of the background jobs.
public struct JobSettings: Sendable {
    /// Seconds a blob is left alone after it was last uploaded, mounted or read.
    public var gcGrace: Double
    /// Seconds after a delete before GC runs; 0 turns it off.
    public var gcAfterDelete: Double
    /// Seconds after its push before `delete_untagged` may delete an artifact:
    /// a multi-arch push uploads its platform manifests, untagged, before the
    /// index that lists them.
    public var untaggedGrace: Double
    /// GC schedule when none was set through the API.
    public var defaultGCSchedule: CronExpression?

    public init(
        gcGrace: Double = 3600, gcAfterDelete: Double = 60, untaggedGrace: Double = 7200,
        defaultGCSchedule: CronExpression? = nil
    ) {
        self.gcGrace = gcGrace
        self.gcAfterDelete = gcAfterDelete
        self.untaggedGrace = untaggedGrace
        self.defaultGCSchedule = defaultGCSchedule
    }
}

/// Starts GC and cleanup runs in the background, one at a time per job,
/// records them in the ``JobLog`` and the event log, and stops them on shutdown.
public final class JobRunner: Sendable {
    public let registry: Registry
    public let log: JobLog
    public let settings: JobSettings
    let logger: Logger
    private let state = NIOLockedValueBox(State())

    struct State {
        /// Run id by job key (`gc`, `cleanup:<registry>`).
        var running: [String: Int64] = [:]
        var tasks: [Int64: Task<Void, Never>] = [:]
        /// The GC run waiting to follow recent deletes.
        var pendingGC: Task<Void, Never>?
        var stopped = false
    }

    /// - Parameter log: the job history; its ``JobLog/dropHistory(registry:)``
    ///   belongs in `registry`'s `releaseRegistry`.
    public init(registry: Registry, log: JobLog, settings: JobSettings, logger: Logger) {
        self.registry = registry
        self.log = log
        self.settings = settings
        self.logger = logger
    }

    /// The GC schedule in force: the one set through the API, else the configured default.
    public func gcSchedule() throws -> CronExpression? {
        if let stored = try registry.storedGCSchedule() { return stored.cron.flatMap { try? CronExpression($0) } }
        return settings.defaultGCSchedule
    }

    /// - Parameter actor: the user starting the run; nil when the server does.
    public func startGC(trigger: JobTrigger, actor: String? = nil) async throws -> JobRun {
        let grace = settings.gcGrace
        return try await start(key: "gc", kind: .gc, registry: nil, trigger: trigger, dryRun: false, actor: actor) { [registry] details in
            try await registry.collectGarbage(grace: grace, details: details).summary
        }
    }

    /// - Parameter actor: the user starting the run (its deletes' events name
    ///   them); nil when the server does.
    public func startCleanup(registry name: String, dryRun: Bool, trigger: JobTrigger, actor: String? = nil) async throws -> JobRun {
        _ = try registry.requireRegistry(name)
        let untaggedGrace = settings.untaggedGrace
        return try await start(
            key: "cleanup:" + name, kind: .cleanup, registry: name, trigger: trigger, dryRun: dryRun, actor: actor
        ) {
            [registry, weak self] details in
            // Blobs a run freed are collected after it, however it ended.
            defer { if !dryRun, (details.summarySoFar["artifacts_deleted"] ?? 0) > 0 { self?.noteDelete() } }
            return try await registry.runCleanup(
                registry: name, dryRun: dryRun, untaggedGrace: untaggedGrace, actor: actor, details: details
            ).summary
        }
    }

    /// Schedules a GC run `gcAfterDelete` seconds from now, unless one is already due.
    public func noteDelete() {
        let delay = settings.gcAfterDelete
        guard delay > 0 else { return }
        state.withLockedValue { state in
            guard state.pendingGC == nil, !state.stopped else { return }
            state.pendingGC = Task { [weak self] in
                try? await Task.sleep(for: .seconds(delay))
                guard let self, !Task.isCancelled else { return }
                self.state.withLockedValue { $0.pendingGC = nil }
                await self.runAfterDelete()
            }
        }
    }

    private func runAfterDelete() async {
        do {
            _ = try await startGC(trigger: .delete)
        } catch let error as LifecycleError where error.code == "JOB_RUNNING" {
            noteDelete()  // again, after the running one
        } catch {
            logger.error("could not start GC after deletes", metadata: ["error": "\(error)"])
        }
    }

    private func start(
        key: String, kind: JobKind, registry name: String?, trigger: JobTrigger, dryRun: Bool, actor: String?,
        body: @escaping @Sendable (JobDetails) async throws -> [String: Int64]
    ) async throws -> JobRun {
        let claimed = state.withLockedValue { state -> Int64? in
            if state.stopped { return -2 }
            if let id = state.running[key] { return id }
            state.running[key] = 0
            return nil
        }
        if claimed == -2 { throw LifecycleError.jobRunning("the server is shutting down") }
        if let running = claimed {
            let what = name.map { "a cleanup of registry '\($0)'" } ?? "garbage collection"
            throw LifecycleError.jobRunning(
                running > 0 ? "\(what) is already running (run \(running))" : "\(what) is just starting")
        }
        let run: JobRun
        do {
            if let name {
                // Within the registry's life: a delete meanwhile drops its history
                // before or after this run's record, never leaving it to a registry
                // created again under the name.
                let created = try registry.requireRegistry(name).created
                run = try await registry.whileExists(name, created: created) {
                    try await log.begin(
                        kind: kind, registry: name, registryCreated: created, trigger: trigger, dryRun: dryRun, actor: actor)
                }
            } else {
                run = try await log.begin(kind: kind, registry: nil, trigger: trigger, dryRun: dryRun, actor: actor)
            }
        } catch {
            state.withLockedValue { _ = $0.running.removeValue(forKey: key) }
            throw error
        }
        // The task is made and filed in one step, so that its removal at its end comes
        // after its filing, and a stop meanwhile finds it (and cancels it here).
        state.withLockedValue { state in
            state.running[key] = run.id
            let task = makeTask(run, key: key, body: body)
            state.tasks[run.id] = task
            if state.stopped { task.cancel() }
        }
        logger.info(
            "job started",
            metadata: ["job": "\(kind.rawValue)", "run": "\(run.id)", "registry": "\(name ?? "-")", "trigger": "\(trigger.rawValue)"])
        return run
    }

    private func makeTask(
        _ run: JobRun, key: String, body: @escaping @Sendable (JobDetails) async throws -> [String: Int64]
    ) -> Task<Void, Never> {
        Task { [self] in
            var finished = run
            let details = JobDetails(log: log, runID: run.id)
            do {
                finished.summary = try await body(details)
                finished.status = .succeeded
            } catch is CancellationError {
                finished.status = .interrupted
                finished.error = "the server stopped before the run finished"
                finished.summary = details.summarySoFar
            } catch {
                finished.status = .failed
                finished.error = "\(error)"
                finished.summary = details.summarySoFar
            }
            finished.finished = Date()
            // A stop cancels this task, and the blocking pool refuses work from a
            // cancelled task: the run's last details and its end are written
            // from a task of their own, which the stop waits for.
            let ended = finished
            await Task { [self] in
                var ended = ended
                do {
                    ended.details = try await details.flush()
                } catch {
                    logger.error("could not record the details of a job run", metadata: ["run": "\(run.id)", "error": "\(error)"])
                }
                await record(ended)
            }.value
            state.withLockedValue {
                $0.running.removeValue(forKey: key)
                $0.tasks.removeValue(forKey: run.id)
            }
        }
    }

    private func record(_ run: JobRun) async {
        do {
            try await log.finish(run, events: registry.events)
        } catch {
            logger.error("could not record a job run", metadata: ["run": "\(run.id)", "error": "\(error)"])
        }
        logger.info(
            "job finished",
            metadata: [
                "job": "\(run.kind.rawValue)", "run": "\(run.id)", "status": "\(run.status.rawValue)",
                "summary": "\(run.summary)",
            ])
    }

    /// Cancels every run and pending GC, and waits for them to record how they
    /// ended, including a run claimed before the stop whose task did not exist yet.
    public func shutdown() async {
        let pending = state.withLockedValue { state -> Task<Void, Never>? in
            state.stopped = true
            defer { state.pendingGC = nil }
            return state.pendingGC
        }
        pending?.cancel()
        await pending?.value
        while true {
            let (tasks, starting) = state.withLockedValue { (Array($0.tasks.values), !$0.running.isEmpty) }
            guard !tasks.isEmpty || starting else { return }
            for task in tasks { task.cancel() }
            for task in tasks { await task.value }
            if tasks.isEmpty { try? await Task.sleep(for: .milliseconds(10)) }  // its record is being written
        }
    }
}
