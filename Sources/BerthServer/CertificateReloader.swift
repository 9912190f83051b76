import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import ServiceLifecycle
import UnixSignals

/// The TLS context each new connection takes; replaced when the certificate changes.
final class TLSContextBox: Sendable {
    private let box: NIOLockedValueBox<NIOSSLContext>

    init(_ context: NIOSSLContext) { box = NIOLockedValueBox(context) }

    var current: NIOSSLContext { box.withLockedValue { $0 } }

    func replace(with context: NIOSSLContext) { box.withLockedValue { $0 = context } }
}

/// A certificate and key as loaded, with what their files looked like just
/// before: a change from then on, however soon, is the reloader's to load.
struct ServedTLS {
    var configuration: TLSConfiguration
    var stamp: [CertificateReloader.FileStamp]

    static func load(_ identity: TLSIdentity) throws -> ServedTLS {
        let stamp = CertificateReloader.stamp(identity)
        return ServedTLS(configuration: try BerthServer.tlsConfiguration(identity), stamp: stamp)
    }
}

/// Serves a new certificate without a restart: every `interval` seconds, and
/// at once on SIGHUP, it looks at the certificate and key files (`identity`
/// first renews a generated certificate in its last 30 days) and, when either
/// changed, loads them; new connections get the new pair, open ones keep
/// theirs. A pair that does not load (a key replaced before its certificate,
/// say) is logged and the served one kept, until the files change again.
struct CertificateReloader: Service {
    /// The served pair's files; nil when no listener serves TLS.
    let identity: @Sendable () throws -> TLSIdentity?
    let contexts: TLSContextBox
    let metrics: ServerMetrics
    let logger: Logger
    /// The files as they were when the served pair was loaded (``ServedTLS``),
    /// not when this service starts: a pair replaced in between is loaded at
    /// the first check.
    let served: [FileStamp]?
    var interval: Double = 60

    func run() async throws {
        let checks = AsyncStream<Void>.makeStream()
        await cancelWhenGracefulShutdown {
            var seen = served
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) { checks.continuation.yield() }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(interval))
                        checks.continuation.yield()
                    }
                }
                for await _ in checks.stream {
                    if Task.isCancelled { break }
                    seen = check(since: seen)
                }
                group.cancelAll()
            }
        }
    }

    /// Loads the pair when its files differ from `seen`; what was seen now.
    private func check(since seen: [FileStamp]?) -> [FileStamp]? {
        let current: TLSIdentity
        do {
            guard let identity = try identity() else { return seen }
            current = identity
        } catch {
            logger.warning("TLS certificate not checked: the served one is kept", metadata: ["error": "\(error)"])
            return seen
        }
        let stamp = Self.stamp(current)
        guard stamp != seen else { return seen }
        do {
            let configuration = try BerthServer.tlsConfiguration(current)
            contexts.replace(with: try TLSChannel.context(configuration))
            var metadata: Logger.Metadata = ["certificate": "\(current.certificatePath)"]
            if case .certificate(let served)? = configuration.certificateChain.first {
                metrics.certificate(expiresAt: served.notValidAfter)
                metadata["expires"] = "\(Date(timeIntervalSince1970: TimeInterval(served.notValidAfter)))"
            }
            logger.notice("TLS certificate reloaded: new connections get it", metadata: metadata)
        } catch {
            logger.warning("TLS certificate not reloaded: the served one is kept", metadata: ["error": "\(error)"])
        }
        return stamp
    }

    /// What tells a file's change: inode, size and modification time.
    struct FileStamp: Equatable {
        var inode: UInt64
        var size: Int64
        var modified: timespec

        static func == (a: Self, b: Self) -> Bool {
            a.inode == b.inode && a.size == b.size && a.modified.tv_sec == b.modified.tv_sec
                && a.modified.tv_nsec == b.modified.tv_nsec
        }
    }

    static func stamp(_ identity: TLSIdentity) -> [FileStamp] {
        [identity.certificatePath, identity.keyPath].map { path in
            var info = stat()
            guard stat(path, &info) == 0 else { return FileStamp(inode: 0, size: -1, modified: timespec()) }
            return FileStamp(inode: UInt64(info.st_ino), size: Int64(info.st_size), modified: info.st_mtim)
        }
    }
}
