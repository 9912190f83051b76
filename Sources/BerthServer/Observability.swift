import BerthCore
import BerthStorage
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import Prometheus
import Synchronization

/// The appliance's Prometheus metrics. Request metrics are recorded as
/// requests finish; storage gauges are read when `/metrics` is scraped.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let store: Store
    let responses: ResponseBudget
    static let buckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5), .seconds(30), .seconds(120),
    ]

    /// Pull events the event log dropped so far, and how many of them the counter holds.
    private let droppedEvents: @Sendable () -> Int
    private let droppedEventsCounted = Mutex<Int>(0)

    init(store: Store, responses: ResponseBudget, droppedEvents: @escaping @Sendable () -> Int = { 0 }) {
        self.store = store
        self.responses = responses
        self.droppedEvents = droppedEvents
    }

    private func descriptor(_ name: String, unit: String = "", _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "berth", metricName: name, unitName: unit, helpText: help)
    }

    /// The series one kind of request counts in: found once, then kept.
    private struct RequestSeries {
        let requests: Counter
        let duration: DurationHistogram
        let received: Counter
        let sent: Counter
    }

    private struct RequestKey: Hashable {
        let routeClass: String
        let method: String
        let status: Int
    }

    /// Looking a series up in the Prometheus registry for every request
    /// (labels sorted, keys built, its lock taken) was 1.5 % of the server's
    /// CPU under an HTTP/2 manifest GET load; this map holds the handles. It
    /// is bounded: route classes are few, methods outside
    /// ``recordedMethods`` count as "other", and statuses are three digits.
    private let requestSeries = Mutex<[RequestKey: RequestSeries]>([:])
    static let recordedMethods: Set<String> = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]

    func request(routeClass: String, method: String, status: Int, duration: Duration, bytesIn: Int64?, bytesOut: Int64?) {
        let key = RequestKey(routeClass: routeClass, method: Self.recordedMethods.contains(method) ? method : "other", status: status)
        let series = requestSeries.withLock { cache in
            if let series = cache[key] { return series }
            let series = makeSeries(key)
            cache[key] = series
            return series
        }
        series.requests.increment()
        series.duration.record(duration)
        // A refused request's Content-Length is only a claim (Int64.max twice wrapped the counter).
        if let bytesIn, bytesIn > 0, status < 400 { series.received.increment(by: bytesIn) }
        if let bytesOut, bytesOut > 0 { series.sent.increment(by: bytesOut) }
    }

    private func makeSeries(_ key: RequestKey) -> RequestSeries {
        let route = [("route", key.routeClass)]
        return RequestSeries(
            requests: registry.makeCounter(
                descriptor: descriptor("http_requests", unit: "total", "HTTP requests by route class, method and status."),
                labels: route + [("method", key.method), ("status", String(key.status))]),
            duration: registry.makeDurationHistogram(
                descriptor: descriptor("http_request_duration", unit: "seconds", "Time to the response head, by route class."),
                labels: route, buckets: Self.buckets),
            received: registry.makeCounter(
                descriptor: descriptor("http_received", unit: "bytes", "Request body bytes (declared lengths)."), labels: route),
            sent: registry.makeCounter(
                descriptor: descriptor("http_sent", unit: "bytes", "Response body bytes (declared lengths)."), labels: route))
    }

    /// Background jobs (see ``PeriodicJob``): how many run now, and how each
    /// run ended. The scheduler of policies and GC reports here too when it lands.
    func jobStarted(_ job: String) {
        registry.makeGauge(descriptor: descriptor("jobs_running", "Background jobs running now."), labels: [("job", job)])
            .increment(by: 1)
    }

    func jobFinished(_ job: String, outcome: String) {
        registry.makeGauge(descriptor: descriptor("jobs_running", "Background jobs running now."), labels: [("job", job)])
            .decrement(by: 1)
        registry.makeCounter(
            descriptor: descriptor("job_runs", unit: "total", "Finished background job runs by outcome."),
            labels: [("job", job), ("outcome", outcome)]
        ).increment()
    }

    /// Records when the served TLS certificate (the chain's first) expires, so
    /// that an operator can alert before it does: the generated one is renewed
    /// 30 days ahead (``CertificateReloader``), an operator's is theirs to replace.
    func certificate(expiresAt time: time_t) {
        registry.makeGauge(
            descriptor: descriptor("tls_certificate_expiry_timestamp", unit: "seconds", "When the served TLS certificate expires (Unix time).")
        ).set(Double(time))
    }

    /// The exposition text, with the storage gauges read now.
    func scrape() -> [UInt8] {
        let usage = store.objects.usage()
        registry.makeGauge(descriptor: descriptor("uploads_open", "Upload sessions in progress.")).set(Double(usage.openUploads))
        registry.makeGauge(descriptor: descriptor("uploads", unit: "bytes", "Bytes held by uploads in progress.")).set(Double(usage.uploadBytes))
        registry.makeGauge(descriptor: descriptor("storage_logical", unit: "bytes", "Sum of every bucket's logical bytes.")).set(Double(usage.logicalBytes))
        registry.makeGauge(descriptor: descriptor("storage_physical", unit: "bytes", "Bytes stored once in extents.")).set(Double(usage.physicalBytes))
        let (leased, waiting) = responses.usage
        registry.makeGauge(descriptor: descriptor("response_memory_leased", unit: "bytes", "Bytes leased to response bodies clients have not read yet."))
            .set(Double(leased))
        registry.makeGauge(descriptor: descriptor("response_memory_waiting", "Requests waiting for response memory.")).set(Double(waiting))
        // Read when scraped, so a drop shows while the log's writes still fail.
        let dropped = droppedEvents()
        let newlyDropped = droppedEventsCounted.withLock { counted in
            defer { counted = max(counted, dropped) }
            return max(0, dropped - counted)
        }
        registry.makeCounter(descriptor: descriptor("events_dropped", unit: "total", "Pull events dropped: the event log's queue was full."))
            .increment(by: Int64(newlyDropped))
        let properties: [(String, String, String)] = [
            ("rocksdb.estimate-pending-compaction-bytes", "rocksdb_pending_compaction_bytes", "Bytes RocksDB estimates compaction must rewrite."),
            ("rocksdb.num-running-compactions", "rocksdb_running_compactions", "Compactions running now."),
            ("rocksdb.actual-delayed-write-rate", "rocksdb_delayed_write_rate", "Write rate RocksDB imposes while stalling (0: no stall)."),
            ("rocksdb.is-write-stopped", "rocksdb_write_stopped", "1 while RocksDB stops writes."),
            ("rocksdb.cur-size-all-mem-tables", "rocksdb_memtable_bytes", "Bytes in RocksDB's memtables, flushing ones included."),
            ("rocksdb.estimate-table-readers-mem", "rocksdb_table_readers_bytes", "Bytes of index and filter blocks RocksDB holds outside the block cache."),
        ]
        for (property, name, help) in properties {
            var total: UInt64 = 0
            for family in ColumnFamily.allCases { total += store.db.property(property, family) ?? 0 }
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "berth", metricName: name, unitName: "", helpText: help))
                .set(Double(total))
        }
        // One cache serves every column family: read it once.
        let cached = store.db.property("rocksdb.block-cache-usage", ColumnFamily.allCases[0]) ?? 0
        registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "berth", metricName: "rocksdb_block_cache_bytes", unitName: "", helpText: "Bytes in RocksDB's block cache."))
            .set(Double(cached))
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

/// First in the chain: gives each request an id (the client's `X-Request-Id`
/// or a new one), logs one JSON line when the response head is ready, and records metrics.
struct ObservabilityMiddleware: RouterMiddleware {
    typealias Context = BerthRequestContext
    let metrics: ServerMetrics
    /// Told when each request ends, to give memory back after a burst.
    let trimmer: MemoryTrimmer
    /// Whether the server is stopping: what cuts a request off then is the stop.
    let stopSignal: StopSignal
    let requestIDs = RequestIDs()
    static let requestID = HTTPField.Name("X-Request-Id")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let id = request.headers[Self.requestID].flatMap { $0.count <= 128 ? $0 : nil } ?? requestIDs.next()
        var context = context
        context.logger[metadataKey: "request_id"] = .string(id)
        let path = request.uri.path
        let route = DistributionRoute(path: path)
        context.parsedRoute = (path, route)
        let routeClass = Self.routeClass(path, route: route)
        var status = 500
        var response: Response?
        defer {
            let duration = ContinuousClock.now - start
            trimmer.requestEnded()
            metrics.request(
                routeClass: routeClass, method: request.method.rawValue, status: status, duration: duration,
                bytesIn: request.contentLength, bytesOut: response?.headers[.contentLength].flatMap { Int64($0) })
            if routeClass != "health" && routeClass != "metrics" {
                context.logger.info(
                    "request",
                    metadata: [
                        "remote": .string(context.source), "route": .string(routeClass), "method": .string(request.method.rawValue),
                        "status": .stringConvertible(status),
                        "duration_ms": .stringConvertible(Self.milliseconds(duration)),
                        "user": .string(context.trace.actor),
                    ])
            }
        }
        do {
            var result = try await next(request, context)
            result.headers[Self.requestID] = id
            status = Int(result.status.code)
            response = result
            return result
        } catch let error as HTTPResponseError {
            status = Int(error.status.code)
            throw error
        } catch {
            status = ClientAbort.status(for: error, stopping: stopSignal.isStopping) ?? status
            throw error
        }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return (ms * 1000).rounded() / 1000
    }

    /// A coarse, bounded label for a path (never a repository name or digest).
    static func routeClass(_ path: String, route: DistributionRoute?) -> String {
        if let route {
            switch route {
            case .base: return "v2.base"
            case .catalog: return "v2.catalog"
            case .tags: return "v2.tags"
            case .manifest: return "v2.manifests"
            case .blob: return "v2.blobs"
            case .uploads, .upload: return "v2.uploads"
            case .referrers: return "v2.referrers"
            }
        }
        if path.hasPrefix("/api/v1/") {
            let resource = path.dropFirst("/api/v1/".count).split(separator: "/").first.map(String.init) ?? ""
            return ["registries", "users", "me", "system", "audit-logs"].contains(resource) ? "api.\(resource)" : "api.other"
        }
        switch path {
        case "/auth/token": return "auth.token"
        case "/healthz", "/readyz": return "health"
        case "/metrics": return "metrics"
        default: return "other"
        }
    }
}

/// Request ids: a random prefix drawn once, then a counter.
///
/// Foundation's `UUID()` opens and reads `/dev/urandom` on every call: 4 % of
/// the server's CPU under an HTTP/2 manifest GET load. An id has to be unique,
/// not unpredictable.
final class RequestIDs: Sendable {
    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init() {
        var random = SystemRandomNumberGenerator()
        let value = random.next() as UInt64
        let hex = String(value, radix: 16)
        self.prefix = String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// A new id, such as `5f0c1e2d3a4b6c7d-1a`.
    func next() -> String {
        let (count, _) = counter.add(1, ordering: .relaxed)
        return prefix + "-" + String(count, radix: 16)
    }
}
