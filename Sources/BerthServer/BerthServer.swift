import BerthCore
import BerthStorage
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The running appliance: the store, the registry over it, and the listeners.
public enum BerthServer {
    /// First boot, without serving: the store, the TLS certificate (unless the
    /// operator gives one) and the bootstrap admin. Keeps whatever exists.
    /// An operator's certificate that does not load fails it before anything is created.
    public static func initialize(_ configuration: ServerConfiguration, logger: Logger) async throws {
        _ = try operatorTLS(configuration)
        let store = try openStore(configuration)
        _ = try generatedTLS(configuration, logger: logger)
        try await bootstrap(try Identity(store: store), dataDir: configuration.dataDir, logger: logger)
        try await store.shutdown()
    }

    /// Opens the store under the data directory, creating the directory (mode 0700) if needed.
    static func openStore(_ configuration: ServerConfiguration) throws -> Store {
        if !FileManager.default.fileExists(atPath: configuration.dataDir) {
            try FileManager.default.createDirectory(
                atPath: configuration.dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        return try Store(
            directory: URL(fileURLWithPath: configuration.dataDir).appendingPathComponent("db").path,
            maxObjectSize: configuration.maxBlobSize, directWrites: configuration.directWrites,
            reservedSpace: configuration.minFreeSpace)
    }

    /// Opens the store, binds the listeners and serves until SIGTERM or SIGINT,
    /// then drains in-flight requests and closes the store.
    public static func run(_ configuration: ServerConfiguration, logger: Logger) async throws {
        // SIGHUP reloads the certificate (CertificateReloader), and the unit's
        // ExecReload sends it. Without a TLS listener nothing would trap it, and
        // its default action ends the process, which systemd takes for a clean
        // exit and does not restart; nor may one sent during the start kill it.
        signal(SIGHUP, SIG_IGN)
        MemoryAllocator.tune()
        let fileLimit = ConnectionLimits.raiseFileLimit()
        let limits = ConnectionLimits(
            configuredTotal: configuration.maxConnections, perAddress: configuration.maxConnectionsPerAddress, fileLimit: fileLimit)
        if limits.total < configuration.maxConnections {
            logger.warning(
                "fewer connections than max_connections: the open-file limit is low (raise LimitNOFILE or ulimit -n)",
                metadata: ["open_file_limit": "\(fileLimit)", "connections": "\(limits.total)"])
        }
        if let warning = shortGCGraceWarning(configuration) { logger.warning("\(warning)") }
        // An operator's certificate is loaded before anything is created, so a
        // bad path or key fails the start with the data directory untouched. The
        // generated one lives in the data directory: it waits for the store's lock.
        let operatorCertificate = try operatorTLS(configuration)
        // Each phase of the start gives back the code pages it ran before the
        // next one faults in its own, so the start's peak RSS is its largest
        // phase's, not their sum (StartupPages; the benchmark's idle peak went
        // from 31.5 to 28.0 MiB).
        StartupPages.release()  // the runtime's initializers, the command line, configuration, an operator's certificate
        let store = try openStore(configuration)
        StartupPages.release()  // RocksDB's recovery
        let tls = try operatorCertificate ?? generatedTLS(configuration, logger: logger)
        StartupPages.release()  // making or checking the generated certificate
        let identity = try Identity(store: store)
        let jobLog = try JobLog(store: store)
        let registry = try Registry(
            store: store, logger: logger, releaseRegistry: Registry.release(identity: identity, jobLog: jobLog))
        let jobs = JobRunner(
            registry: registry, log: jobLog,
            settings: JobSettings(
                gcGrace: configuration.gcGrace, gcAfterDelete: configuration.gcAfterDelete,
                untaggedGrace: configuration.untaggedGrace,
                defaultGCSchedule: configuration.gcSchedule.flatMap { try? CronExpression($0) }),
            logger: logger)
        let interrupted = try await jobs.log.markInterrupted(events: registry.events)
        if interrupted > 0 { logger.notice("job runs interrupted by the last stop", metadata: ["runs": "\(interrupted)"]) }
        let access = AccessControl(
            registry: registry, identity: identity,
            tokens: try await TokenIssuer(store: store, lifetime: configuration.tokenLifetime),
            throttle: AuthThrottle(limit: configuration.authFailureLimit), audit: AuditLog(store: store, logger: logger))
        try await bootstrap(identity, dataDir: configuration.dataDir, logger: logger)
        let responseBudget = ResponseBudget(
            total: configuration.responseMemory ?? ResponseBudget.defaultTotal(physicalMemory: ProcessInfo.processInfo.physicalMemory))
        let metrics = ServerMetrics(store: store, responses: responseBudget, droppedEvents: { [events = registry.events] in events.droppedTotal })
        if case .certificate(let served)? = tls?.configuration.certificateChain.first {
            metrics.certificate(expiresAt: served.notValidAfter)
        }
        let trimmer = MemoryTrimmer(
            trim: { [buffers = store.objects.buffers] in
                buffers.release()
                MemoryAllocator.trim()
            },
            afterStartup: {
                MemoryAllocator.trim()
                let dropped = StartupPages.release()
                logger.debug("start-up pages given back", metadata: ["resident_bytes_dropped": "\(dropped)"])
            })

        var services: [any Service] = []
        let tlsContexts = try tls.map { TLSContextBox(try TLSChannel.context($0.configuration)) }
        if let tlsContexts {
            services.append(
                CertificateReloader(
                    identity: { try certificateIdentity(configuration, logger: logger) }, contexts: tlsContexts, metrics: metrics,
                    logger: logger, served: tls?.stamp))
        }
        let endpoints = Endpoints(public: configuration.endpoint(.public), private: configuration.endpoint(.private))
        let readTimeout = TimeAmount.nanoseconds(Int64(configuration.readTimeout * 1e9))
        let stopSignal = StopSignal()
        for spec in configuration.listeners {
            let router = makeRouter(
                registry, access, jobs, metrics: metrics, trimmer: trimmer,
                settings: RouterSettings(
                    scheme: spec.scheme, exposure: spec.exposure, endpoints: endpoints, listeners: configuration.listeners,
                    dataDir: configuration.dataDir, backupDirectory: configuration.backupDirectory, readTimeout: readTimeout,
                    responseBudget: responseBudget, metricsAccess: configuration.metricsAccess,
                    trustedProxies: configuration.trustedProxies, stopSignal: stopSignal))
            let server: HTTPServerBuilder
            if spec.tls, let tlsContexts {
                let tuning = HTTP2Tuning(streamWindow: configuration.http2StreamWindow)
                server = HTTPServerBuilder {
                    TLSChannel(contexts: tlsContexts, tuning: tuning, readTimeout: readTimeout, limits: limits, responder: $0)
                }
            } else {
                server = HTTPServerBuilder { BerthHTTP1Channel(responder: $0, readTimeout: readTimeout, limits: limits) }
            }
            let application = Application(
                router: router, server: server,
                configuration: .init(
                    address: .hostname(spec.listener.host, port: spec.listener.port), serverName: "Berth",
                    availableConnectionsDelegate: .maximum(limits.perListener(configuration.listeners.count), logger: logger)),
                onServerRunning: { announce(spec, $0) },
                logger: logger)
            services.append(NamedListener(name: "\(spec.scheme) listener \(spec.listener.host):\(spec.listener.port)", service: application))
        }
        let objects = store.objects
        let audit = access.audit
        services.append(
            PeriodicJob(name: "maintenance", interval: configuration.maintenanceInterval, metrics: metrics, logger: logger) {
                for name in try await registry.finishInterruptedDeletions() {
                    logger.warning("finished deleting registry cut short", metadata: ["registry": "\(name)"])
                }
                registry.forgetBlobUses(olderThan: configuration.gcGrace)
                let expired = try await objects.expireUploads(idleFor: configuration.uploadTimeout)
                let swept = try await objects.sweepExtents(grace: configuration.extentGracePeriod).extents
                let trimmed = try await registry.events.trim(
                    olderThan: Date().addingTimeInterval(-Double(configuration.eventRetentionDays) * 86_400),
                    keepingAtMost: configuration.eventRetentionCount)
                try await audit.trim(olderThan: Date().addingTimeInterval(-Double(configuration.auditRetentionDays) * 86_400))
                if expired + swept + trimmed > 0 {
                    logger.info(
                        "maintenance",
                        metadata: ["uploads_expired": "\(expired)", "extents_swept": "\(swept)", "events_trimmed": "\(trimmed)"])
                }
            })

        services.append(
            PeriodicJob(name: "pull-statistics", interval: 1, metrics: metrics, logger: logger) {
                // Each flush whatever the other does: one failing must not hold the other back.
                var failure: (any Error)?
                do { try await registry.flushPulls() } catch { failure = error }
                let (_, dropped) = try await registry.events.flushQueued()
                if dropped > 0 { logger.warning("pull events dropped: the queue was full", metadata: ["events": "\(dropped)"]) }
                if let failure { throw failure }
            })
        services.append(Scheduler(jobs: jobs, metrics: metrics, logger: logger))
        services.append(trimmer)
        // Job runs stop (recording how far they got) as the stop begins, not once
        // every listener has drained: a long cleanup would go on deleting meanwhile.
        services.append(OnGracefulStop { await jobs.shutdown() })
        // Last, so a graceful stop reaches it first, before the listeners drain.
        services.append(stopSignal)
        var groupConfiguration = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // In-flight requests get this long after SIGTERM; then they are cancelled.
        groupConfiguration.maximumGracefulShutdownDuration = .milliseconds(Int64(configuration.shutdownTimeout * 1000))
        groupConfiguration.maximumCancellationDuration = .seconds(5)
        func stop() async throws {
            await jobs.shutdown()
            // Every step whatever the one before did: the store is always shut down.
            var failure: (any Error)?
            do { try await registry.flushPulls() } catch { failure = error }
            do { try await registry.events.flushQueued() } catch { failure = failure ?? error }
            try await store.shutdown()
            if let failure { throw failure }
        }
        StartupPages.release()  // building the identity, registry and routers
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
        } catch {
            // A listener that cannot bind, or a service that failed: the rest
            // stops as on a signal before the error is reported.
            try? await stop()
            throw error
        }
        try await stop()
        logger.info("stopped")
    }

    /// The operator's certificate and key, loaded and checked, when a listener
    /// serves TLS with them; nil otherwise. Reads only their files.
    static func operatorTLS(_ configuration: ServerConfiguration) throws -> ServedTLS? {
        guard configuration.listeners.contains(where: \.tls), configuration.tlsCertificatePath != nil else { return nil }
        return try certificateIdentity(configuration).map(ServedTLS.load)
    }

    /// The generated certificate (made or replaced as needed) when a listener
    /// serves TLS and the operator gives none; nil otherwise.
    static func generatedTLS(_ configuration: ServerConfiguration, logger: Logger) throws -> ServedTLS? {
        guard configuration.listeners.contains(where: \.tls), configuration.tlsCertificatePath == nil else { return nil }
        return try certificateIdentity(configuration, logger: logger).map(ServedTLS.load)
    }

    /// The files of the served certificate when a listener serves TLS: the
    /// operator's, or the generated one, made or renewed first when it misses
    /// a configured name or expires within 30 days.
    static func certificateIdentity(_ configuration: ServerConfiguration, logger: Logger? = nil) throws -> TLSIdentity? {
        guard configuration.listeners.contains(where: \.tls) else { return nil }
        if let certificate = configuration.tlsCertificatePath {
            guard let key = configuration.tlsKeyPath else {
                throw ConfigurationError(description: "'tls_cert' and 'tls_key' must be set together")
            }
            return TLSIdentity(certificatePath: certificate, keyPath: key)
        }
        return try TLSIdentity.ensure(
            dataDir: configuration.dataDir, hostNames: configuration.certificateNames,
            derivedNames: configuration.derivedCertificateNames, logger: logger)
    }

    /// The TLS 1.2 suites served: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305.
    static let tls12CipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// `identity`'s certificate and key, loaded and checked to belong together.
    static func tlsConfiguration(_ identity: TLSIdentity) throws -> TLSConfiguration {
        // NIOSSL's errors name neither the file nor why (missing, unreadable, not PEM).
        func loading<T>(_ what: String, _ path: String, _ load: () throws -> T) throws -> T {
            do {
                return try load()
            } catch {
                let access = FileManager.default.isReadableFile(atPath: path) ? "" : " (missing or not readable by this user)"
                throw ConfigurationError(description: "cannot load the TLS \(what) '\(path)'\(access): \(error)")
            }
        }
        let chain = try loading("certificate", identity.certificatePath) {
            try NIOSSLCertificate.fromPEMFile(identity.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        }
        let key = try loading("key", identity.keyPath) { try NIOSSLPrivateKey(file: identity.keyPath, format: .pem) }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        // NIOSSL's defaults still take TLS 1.0 and CBC/SHA-1 suites and key
        // exchange without forward secrecy; HTTP/2 needs TLS 1.2 with AEAD
        // (RFC 9113 §9.2). TLS 1.3's suites are all AEAD and not configurable.
        tls.minimumTLSVersion = .tlsv12
        tls.cipherSuites = tls12CipherSuites
        // A context is what checks that the key belongs to the certificate.
        do {
            _ = try NIOSSLContext(configuration: tls)
        } catch {
            throw ConfigurationError(
                description: "the TLS key '\(identity.keyPath)' cannot serve the certificate '\(identity.certificatePath)' (not its key?): \(error)")
        }
        return tls
    }

    /// What `berth config check` finds beyond the file's keys: an operator's
    /// certificate or key that does not load (thrown), and settings at odds
    /// with the appliance's systemd unit (returned as warnings).
    public static func check(_ configuration: ServerConfiguration) throws -> [String] {
        _ = try operatorTLS(configuration)
        var warnings: [String] = []
        // Stopping takes up to shutdown_timeout for requests, 5 s to cancel
        // them, then the store's close: 15 s past shutdown_timeout leaves room.
        if configuration.shutdownTimeout + stopMargin > applianceStopTimeout {
            warnings.append(
                "shutdown_timeout \(Int(configuration.shutdownTimeout)) s: the appliance's systemd unit kills the server "
                    + "\(Int(applianceStopTimeout)) s after asking it to stop (TimeoutStopSec in berth.service), before its "
                    + "requests and the store's close are done; give it shutdown_timeout + \(Int(stopMargin)) s or more")
        }
        if let warning = shortGCGraceWarning(configuration) { warnings.append(warning) }
        return warnings
    }

    /// Allowed (tests and drills collect at once), but a push uploads its layers before its manifest.
    static func shortGCGraceWarning(_ configuration: ServerConfiguration) -> String? {
        guard configuration.gcGrace < ServerConfiguration.shortGCGrace else { return nil }
        return "gc_grace \(Int(configuration.gcGrace)) s is shorter than a push may take: garbage collection can delete "
            + "layers a push uploaded before its manifest arrives (\(Int(ServerConfiguration.shortGCGrace)) s or more is safe)"
    }

    /// `TimeoutStopSec` in `appliance/berth.service`.
    static let applianceStopTimeout: Double = 60
    /// What stopping needs past `shutdown_timeout`: 5 s to cancel requests, then the store's close.
    static let stopMargin: Double = 15

    static func makeRouter(
        _ registry: Registry, _ access: AccessControl, _ jobs: JobRunner, metrics: ServerMetrics, trimmer: MemoryTrimmer,
        settings: RouterSettings
    ) -> Router<BerthRequestContext> {
        let router = Router(context: BerthRequestContext.self)
        let challenge = Challenge(scheme: settings.scheme)
        if !settings.trustedProxies.isEmpty { router.add(middleware: ForwardedForMiddleware(trusted: settings.trustedProxies)) }
        router.add(middleware: ObservabilityMiddleware(metrics: metrics, trimmer: trimmer, stopSignal: settings.stopSignal))
        router.add(middleware: ExpectContinueMiddleware())
        router.add(
            middleware: AuthMiddleware(access: access, challenge: challenge, authenticatesMetrics: settings.metricsAccess == .authenticated))
        router.add(
            middleware: DistributionController(
                registry: registry, access: access, jobs: jobs, challenge: challenge, exposure: settings.exposure,
                trimmer: trimmer, stallTimeout: settings.readTimeout, budget: settings.responseBudget,
                stopSignal: settings.stopSignal))
        let routes = RouteTable()
        router.add(middleware: AdminFallbackMiddleware(routes: routes))
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ in "ready\n" }
        TokenController(access: access).register(on: router)
        let support = AdminSupport(access: access, challenge: challenge)
        // Names no registry, image or user, but tells load, usage and activity:
        // a global reader's, unless the operator opened it for a scraper.
        router.get("metrics") { request, context in
            let scrape = {
                Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                    body: .init(byteBuffer: ByteBuffer(bytes: metrics.scrape())))
            }
            if settings.metricsAccess == .anonymous { return scrape() }
            return try await support.run(request, context) { principal in
                guard principal.rights.isGlobalReader else { throw support.forbidden(principal, "read metrics") }
                return scrape()
            }
        }
        AdminController(registry: registry, support: support, settings: settings).register(on: router)
        IdentityController(access: access, support: support).register(on: router)
        ImagesController(registry: registry, jobs: jobs, support: support).register(on: router)
        PolicyController(registry: registry, support: support).register(on: router)
        JobsController(jobs: jobs, support: support).register(on: router)
        EventsController(registry: registry, support: support).register(on: router)
        routes.load(router.routes)
        return router
    }

    /// At first start: the `admin` user, and its key in a 0600 file. The secret is never logged.
    static func bootstrap(_ identity: Identity, dataDir: String, logger: Logger) async throws {
        let path = URL(fileURLWithPath: dataDir).appendingPathComponent("bootstrap-credentials.json").path
        // The file is whole and synced before the key is stored (and replaces
        // one a start cut short left): the key is never stored without it.
        let created = try await identity.bootstrapIfEmpty { key in
            let body = JSONText.bytes(["access_key": key.record.id, "secret_key": key.secret])
            try FileSync.replace(path, with: Array(body), mode: 0o600)
        }
        guard created != nil else { return }
        logger.notice("created user 'admin'; its access key is in \(path) (mode 0600)")
        FileHandle.standardOutput.write(Data("bootstrap credentials written to \(path)\n".utf8))
    }

    private static func announce(_ spec: ListenerSpec, _ channel: any Channel) {
        let port = channel.localAddress?.port ?? 0
        let host = spec.listener.host.contains(":") ? "[\(spec.listener.host)]" : spec.listener.host
        let note = spec.exposure == .private ? " (private)" : ""
        FileHandle.standardOutput.write(Data("listening on \(spec.scheme)://\(host):\(port)\(note)\n".utf8))
    }
}

/// A listener's service, whose failure (a port in use, an address this
/// machine does not have) names the listener: the socket's error names neither.
struct NamedListener<Listening: Service>: Service {
    let name: String
    let service: Listening

    func run() async throws {
        do {
            try await service.run()
        } catch {
            throw ConfigurationError(description: "\(name): \(error)")
        }
    }
}

/// What a listener's router needs to know about the listener and the appliance.
struct RouterSettings: Sendable {
    var scheme: String
    var exposure: Exposure
    var endpoints: Endpoints
    /// Every listener of the appliance, for system info.
    var listeners: [ListenerSpec]
    var dataDir: String
    var backupDirectory: String
    /// `read_timeout`: also how long a response waits for a client that reads nothing.
    var readTimeout: TimeAmount
    /// Shared by every listener: what bodies waiting for their clients may hold.
    var responseBudget: ResponseBudget
    var metricsAccess: MetricsAccess
    /// `trusted_proxies`: peers whose `X-Forwarded-For` names the client.
    var trustedProxies: [AddressRange] = []
    /// Set once the server begins to stop.
    var stopSignal: StopSignal
}

/// The hosts clients use for the public and private URIs.
struct Endpoints: Sendable {
    var `public`: String?
    var `private`: String?
}
