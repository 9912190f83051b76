@testable import BerthServer
import BerthStorage
import Foundation
import Logging
import NIOSSL
import Testing

@Suite struct CertificateReloaderTests {
    /// A served pair, its reloader (checking every 50 ms) and a store for the metrics.
    private struct Rig {
        let directory: String
        let identity: TLSIdentity
        let served: ServedTLS
        let contexts: TLSContextBox
        let store: Store

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-reload-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            identity = try TLSIdentity.ensure(dataDir: directory + "/a", hostNames: [])
            served = try ServedTLS.load(identity)
            contexts = TLSContextBox(try TLSChannel.context(served.configuration))
            store = try Store(directory: directory + "/db", threads: 1)
        }

        /// Puts another pair in place of the served one's files, as an operator's `mv` would.
        func replacePair() throws {
            let other = try TLSIdentity.ensure(dataDir: directory + "/b", hostNames: [])
            #expect(rename(other.certificatePath, identity.certificatePath) == 0)
            #expect(rename(other.keyPath, identity.keyPath) == 0)
        }

        /// Runs the reloader for up to `seconds`, or until it has loaded a new pair; whether it did.
        func reloads(within seconds: Double) async throws -> Bool {
            let original = contexts.current
            let reloader = CertificateReloader(
                identity: { [identity] in identity }, contexts: contexts,
                metrics: ServerMetrics(store: store, responses: ResponseBudget(total: 1 << 20)),
                logger: Logger(label: "test"), served: served.stamp, interval: 0.05)
            let running = Task { try await reloader.run() }
            defer { running.cancel() }
            let deadline = ContinuousClock.now + .seconds(seconds)
            while ContinuousClock.now < deadline {
                if contexts.current !== original { return true }
                try await Task.sleep(for: .milliseconds(20))
            }
            return false
        }

        func close() async throws {
            try await store.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @Test func aPairReplacedBeforeTheReloaderStartsIsLoadedAtItsFirstCheck() async throws {
        let rig = try Rig()
        // Between the start's load and the service's start: before, the
        // reloader took these files for the served ones and never loaded them.
        try rig.replacePair()
        let reloaded = try await rig.reloads(within: 5)
        try await rig.close()
        #expect(reloaded)
    }

    @Test func unchangedFilesAreNotLoadedAgain() async throws {
        let rig = try Rig()
        let reloaded = try await rig.reloads(within: 0.5)
        try await rig.close()
        #expect(!reloaded)
    }
}
