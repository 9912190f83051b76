import BerthStorage
import Foundation
import Testing

@testable import BerthCore

/// The job history keeps each job's newest runs, and a registry's goes with it.
@Suite struct JobLogTests {
    /// Records a finished run with `details` details.
    private func record(
        _ log: JobLog, _ kind: JobKind, _ registry: String?, details: Int = 0
    ) async throws -> JobRun {
        var run = try await log.begin(kind: kind, registry: registry, trigger: .schedule, dryRun: false)
        if details > 0 {
            let detail = JobDetail(image: "app", digest: "sha256:" + String(repeating: "0", count: 64), tags: [], action: .kept)
            try await log.appendDetails(run.id, from: 0, Array(repeating: detail, count: details))
        }
        run.status = .succeeded
        run.finished = Date()
        run.details = details
        try await log.finish(run)
        return run
    }

    private func ids(_ log: JobLog, _ kind: JobKind, _ registry: String?) throws -> [Int64] {
        try log.runs(kind: kind, registry: registry, before: nil, limit: 10_000).items.map(\.id)
    }

    @Test func aBusyJobPushesOutOnlyItsOwnHistory() async throws {
        try await withScratchRegistry { _, store in
            let log = try JobLog(store: store)
            let gc = try await record(log, .gc, nil, details: 3)
            let quiet = try await record(log, .cleanup, "quiet")
            var busy: [Int64] = []
            for _ in 0..<(JobLog.retainedRuns + 5) { busy.append(try await record(log, .cleanup, "busy", details: 1).id) }

            #expect(try ids(log, .gc, nil) == [gc.id])
            #expect(try log.details(gc.id, from: 0, limit: 10).items.count == 3)
            #expect(try ids(log, .cleanup, "quiet") == [quiet.id])
            #expect(try ids(log, .cleanup, "busy") == Array(busy.suffix(JobLog.retainedRuns).reversed()))
            // The dropped runs' records and details are gone, not just unlisted.
            #expect(try log.run(busy[4]) == nil)
            #expect(try log.details(busy[4], from: 0, limit: 10).items.isEmpty)
            #expect(try log.details(busy[5], from: 0, limit: 10).items.count == 1)
        }
    }

    @Test func pagesFollowTheCursorWithinOneJob() async throws {
        try await withScratchRegistry { _, store in
            let log = try JobLog(store: store)
            var mine: [Int64] = []
            for index in 0..<5 {
                mine.append(try await record(log, .cleanup, "mine").id)
                if index.isMultiple(of: 2) { _ = try await record(log, .cleanup, "mine-too") }
            }
            let first = try log.runs(kind: .cleanup, registry: "mine", before: nil, limit: 2)
            #expect(first.items.map(\.id) == [mine[4], mine[3]])
            let cursor = try #require(first.next.flatMap { Int64($0) })
            let second = try log.runs(kind: .cleanup, registry: "mine", before: cursor, limit: 10)
            #expect(second.items.map(\.id) == [mine[2], mine[1], mine[0]])
            #expect(second.next == nil)
        }
    }

    @Test func aDeletedRegistryTakesItsHistoryAndIdsAreNotReused() async throws {
        try await withScratchRegistry { _, store in
            let log = try JobLog(store: store)
            let kept = try await record(log, .cleanup, "kept")
            var gone: [Int64] = []
            for _ in 0..<3 { gone.append(try await record(log, .cleanup, "gone", details: 2).id) }

            try await log.dropHistory(registry: "gone")
            #expect(try ids(log, .cleanup, "gone").isEmpty)
            for id in gone {
                #expect(try log.run(id) == nil)
                #expect(try log.details(id, from: 0, limit: 10).items.isEmpty)
            }
            #expect(try ids(log, .cleanup, "kept") == [kept.id])

            // The newest run went with the registry; a restart still gives a new id.
            let reopened = try JobLog(store: store)
            #expect(try await record(reopened, .gc, nil).id == gone.last! + 1)
        }
    }

    /// A cleanup run that finishes after its registry was deleted leaves
    /// nothing behind: not its record (reachable by id), not its details.
    @Test func aRunFinishingAfterItsRegistryWentLeavesNothing() async throws {
        try await withScratchRegistry { _, store in
            let log = try JobLog(store: store)
            var run = try await log.begin(kind: .cleanup, registry: "gone", trigger: .schedule, dryRun: false)
            let detail = JobDetail(image: "app", digest: "sha256:" + String(repeating: "0", count: 64), tags: [], action: .deleted)
            try await log.appendDetails(run.id, from: 0, [detail, detail])
            try await log.dropHistory(registry: "gone")
            try await log.appendDetails(run.id, from: 2, [detail])
            run.status = .succeeded
            run.finished = Date()
            run.details = 3
            try await log.finish(run)

            #expect(try log.run(run.id) == nil)
            #expect(try log.details(run.id, from: 0, limit: 10).items.isEmpty)
            #expect(try ids(log, .cleanup, "gone").isEmpty)
            #expect(try await log.markInterrupted() == 0)
            // A run of a registry that still exists is kept as before.
            let kept = try await record(log, .cleanup, "here", details: 1)
            #expect(try log.run(kept.id)?.status == .succeeded)
        }
    }

    /// A finished run and its event are one write, and so are an interrupted
    /// run and its: the event feed never misses how a run ended.
    @Test func aRunsEndAndItsEventAreOneWrite() async throws {
        try await withScratchRegistry { registry, store in
            let log = try JobLog(store: store)
            var run = try await log.begin(kind: .gc, registry: nil, trigger: .api, dryRun: false)
            run.status = .succeeded
            run.finished = Date()
            try await log.finish(run, events: registry.events)
            let left = try await log.begin(kind: .cleanup, registry: "r", trigger: .schedule, dryRun: true)
            #expect(try await log.markInterrupted(events: registry.events) == 1)
            let events = try registry.events.events(after: 0, limit: 10) { _ in true }.items
            #expect(events.map(\.type) == ["gc.run", "cleanup.run"])
            #expect(events[0].detail?.contains("\"status\":\"succeeded\"") == true)
            #expect(events[1].registry == "r" && events[1].detail?.contains("\"status\":\"interrupted\"") == true)
            #expect(events[1].detail?.contains("\"run\":\"\(left.id)\"") == true)
        }
    }

    @Test func aRunBelongsToTheRegistryItStartedInWhateverTheClockDid() {
        let created = Date(timeIntervalSince1970: 1_795_600_000)
        var run = JobRun(
            id: 1, kind: .cleanup, registry: "r", trigger: .api, dryRun: false, status: .running,
            started: created.addingTimeInterval(-2), finished: nil, error: nil, summary: [:], registryCreated: created)
        // Started "before" its registry by a clock stepped back: still its run.
        #expect(run.belongs(toRegistryCreated: created))
        // A registry created again under the name, later or (clock back) earlier: not its run.
        #expect(!run.belongs(toRegistryCreated: created.addingTimeInterval(5)))
        #expect(!run.belongs(toRegistryCreated: created.addingTimeInterval(-5)))
        // Runs recorded before the field: their start time decides.
        run.registryCreated = nil
        #expect(!run.belongs(toRegistryCreated: created))
        #expect(run.belongs(toRegistryCreated: created.addingTimeInterval(-5)))
    }

    @Test func runsWrittenBeforeTheIndexAreListed() async throws {
        try await withScratchRegistry { _, store in
            // As an earlier version stored them: run records only.
            var batch = WriteBatch()
            for id in Int64(1)...3 {
                let run = JobRun(
                    id: id, kind: id == 2 ? .gc : .cleanup, registry: id == 2 ? nil : "old", trigger: .api, dryRun: false,
                    status: .succeeded, started: Date(), finished: Date(), error: nil, summary: [:])
                batch.put(.jobs, JobLog.runKey(id), RecordCodec.encode(run))
            }
            try store.db.write(batch, .synced)

            let log = try JobLog(store: store)
            #expect(try ids(log, .cleanup, "old") == [3, 1])
            #expect(try ids(log, .gc, nil) == [2])
            #expect(try await record(log, .cleanup, "old").id == 4)
        }
    }
}
