@testable import BerthCore
import BerthStorage
import Foundation
import Testing

@Suite struct EventLogTests {
    private func ids(_ log: EventLog) throws -> [Int64] {
        try log.events(after: 0, limit: 1000) { _ in true }.items.map(\.id)
    }

    @Test func trimKeepsTheNewestSoIdsNeverRestart() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-ev-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let old = Date().addingTimeInterval(-90 * 86_400)
        do {
            let store = try Store(directory: directory, threads: 2)
            let log = try EventLog(store: store)
            try await log.append((0..<5).map { EventRecord(type: "tag.create", registry: "r", time: old.addingTimeInterval(Double($0))) })
            #expect(try ids(log) == [1, 2, 3, 4, 5])
            // Everything is older than the cutoff: all but the newest go.
            #expect(try await log.trim(olderThan: Date()) == 4)
            #expect(try ids(log) == [5])
            #expect(try await log.trim(olderThan: Date()) == 0)
            try await store.shutdown()
        }
        let store = try Store(directory: directory, threads: 2)
        let log = try EventLog(store: store)
        try await log.append([EventRecord(type: "tag.delete", registry: "r")])
        #expect(try ids(log) == [5, 6])
        // Only events older than the cutoff go.
        #expect(try await log.trim(olderThan: old.addingTimeInterval(86_400)) == 1)
        #expect(try ids(log) == [6])
        try await store.shutdown()
    }

    /// Pull events past the queue's bound are dropped and counted, once, by
    /// the flush that follows; the queued ones are written in order.
    @Test func pullsPastTheQueueBoundAreCountedOnce() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-ev-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try Store(directory: directory, threads: 2)
        let log = try EventLog(store: store, queueLimit: 3)
        for tag in ["a", "b", "c", "d", "e"] {
            log.enqueue(EventRecord("artifact.pull", repository: "r/app", tag: tag, actor: nil))
        }
        let first = try await log.flushQueued()
        #expect(first.written == 3 && first.dropped == 2)
        #expect(try log.events(after: 0, limit: 10) { _ in true }.items.map(\.tag) == ["a", "b", "c"])
        let second = try await log.flushQueued()
        #expect(second.written == 0 && second.dropped == 0)
        #expect(log.droppedTotal == 2)
        try await store.shutdown()
    }

    @Test func trimKeepsAtMostTheNewestCount() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-ev-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try Store(directory: directory, threads: 2)
        let log = try EventLog(store: store)
        let old = Date().addingTimeInterval(-90 * 86_400)
        // Three old events, then seven recent ones.
        try await log.append((0..<3).map { EventRecord(type: "tag.create", registry: "r", time: old.addingTimeInterval(Double($0))) })
        try await log.append((0..<7).map { _ in EventRecord(type: "tag.create", registry: "r") })
        let cutoff = old.addingTimeInterval(86_400)
        // The count decides: the newest five stay, recent ones included.
        #expect(try await log.trim(olderThan: cutoff, keepingAtMost: 5) == 5)
        #expect(try ids(log) == [6, 7, 8, 9, 10])
        #expect(try await log.trim(olderThan: cutoff, keepingAtMost: 5) == 0)
        // Under the bound, age decides again; neither bound removes the newest.
        try await log.append([EventRecord(type: "tag.delete", registry: "r", time: old)])
        #expect(try await log.trim(olderThan: Date().addingTimeInterval(60), keepingAtMost: 100) == 5)
        #expect(try ids(log) == [11])
        #expect(try await log.trim(olderThan: Date().addingTimeInterval(60), keepingAtMost: 0) == 0)
        #expect(try ids(log) == [11])
        try await store.shutdown()
    }

    @Test func boundedScansStillReachEveryMatchingEvent() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-ev-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try Store(directory: directory, threads: 2)
        let log = try EventLog(store: store)
        // 40 events; every fourth of registry "b".
        try await log.append((0..<40).map { EventRecord(type: "tag.create", registry: $0 % 4 == 3 ? "b" : "a") })
        var after: Int64 = 0
        var found: [Int64] = []
        var pages = 0
        while true {
            let page = try log.events(after: after, limit: 3, scanLimit: 5) { $0.registry == "b" }
            pages += 1
            #expect(page.items.count <= 3)
            found += page.items.map(\.id)
            guard let next = page.next else { break }
            #expect(Int64(next)! > after)
            after = Int64(next)!
        }
        #expect(found == Array(stride(from: 4, through: 40, by: 4)))
        #expect(pages >= 8)  // at most 5 events read per page
        try await store.shutdown()
    }
}
