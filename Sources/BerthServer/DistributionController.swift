import BerthCore
import BerthStorage
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The OCI Distribution v1.1 data plane under `/v2`.
struct DistributionController: RouterMiddleware {
    typealias Context = BerthRequestContext
    let registry: Registry
    let access: AccessControl
    let jobs: JobRunner
    let challenge: Challenge
    /// The listener's exposure: on a public one, registries whose public URI is off do not exist.
    let exposure: Exposure
    /// Told when a blob transfer ends, to give its buffers back.
    let trimmer: MemoryTrimmer
    /// How long a body waits for a client that takes none of its bytes, and a
    /// request for room in ``budget`` (`read_timeout`).
    let stallTimeout: TimeAmount
    /// What bodies waiting for their clients may hold.
    let budget: ResponseBudget
    /// Whether the server is stopping: what cuts a request off then is the stop.
    let stopSignal: StopSignal

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let parsed = context.parsedRoute.flatMap { $0.path == request.uri.path ? $0.route : nil }
        guard let route = parsed ?? DistributionRoute(path: request.uri.path) else {
            if request.uri.path.hasPrefix("/v2/") {
                let error = RegistryError(.unsupported, "no such endpoint: \(request.uri.path)").with(status: 404)
                return finish(ErrorResponses.oci(error, head: request.method == .head))
            }
            return try await next(request, context)
        }
        let isHead = request.method == .head
        do {
            if let denied = await authorize(route, request, context) { return finish(denied) }
            return finish(try await dispatch(route, request, context))
        } catch let error as RegistryError where error.code == .conflict {
            // Refused because something depends on the target (a manifest uses the blob, an
            // index lists the manifest). The OCI codes have no conflict: a change the registry
            // will not make is 405 `UNSUPPORTED` there (what the spec and its conformance
            // suite allow), with the reason, and `Allow` without the method (RFC 9110 §15.5.6).
            var refusal = ErrorResponses.oci(RegistryError(.unsupported, error.message, detail: error.detail), head: isHead)
            refusal.headers[.allow] = route.allowedMethods.split(separator: ", ").filter { $0 != request.method.rawValue }
                .joined(separator: ", ")
            return finish(refusal)
        } catch let error as RegistryError {
            return finish(ErrorResponses.oci(error, head: isHead))
        } catch let error as TagImmutableError {
            return finish(ErrorResponses.oci(RegistryError(.denied, error.description, detail: error.tag), head: isHead))
        } catch let error as LifecycleError where error.code == "PROTECTED" {
            return finish(ErrorResponses.oci(RegistryError(.denied, error.message), head: isHead))
        } catch is ResponseBudget.TimedOut {
            var refusal = ErrorResponses.oci(
                RegistryError(.tooManyRequests, "the server's response memory stayed spent while this request waited; retry later"),
                head: isHead)
            refusal.headers[.retryAfter] = String(Self.retryAfterSpentMemory)
            return finish(refusal)
        } catch is ResponseBudget.Abandoned {
            // The client went away while its response waited for memory: nobody reads this.
            let error = RegistryError(.tooManyRequests, "the request was abandoned while its response waited for memory")
            return finish(ErrorResponses.oci(error, head: isHead))
        } catch {
            if let status = ClientAbort.status(for: error, stopping: stopSignal.isStopping) {
                return finish(Self.abandoned(status, error, head: isHead, logger: context.logger))
            }
            context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return finish(ErrorResponses.oci(RegistryError(.unsupported, "internal error"), head: isHead).with(status: 500))
        }
    }

    /// The answer to a request its client gave up on, or the server's stop cut
    /// off (``ClientAbort``): nobody may read it, but it is logged and counted.
    private static func abandoned(_ status: Int, _ error: any Error, head: Bool, logger: Logger) -> Response {
        guard status != 503 else {
            logger.notice("request cut off by the server's stop", metadata: ["error": "\(error)"])
            var refusal = ErrorResponses.oci(RegistryError(.unsupported, "the server is stopping; retry"), head: head)
                .with(status: 503)
            refusal.headers[.retryAfter] = "5"
            return refusal
        }
        logger.info("request abandoned by its client", metadata: ["error": "\(error)"])
        let abandoned = RegistryError(.sizeInvalid, "the request ended before its body was whole")
        return ErrorResponses.oci(abandoned, head: head).with(status: status)
    }

    /// Seconds a request refused for spent response memory is told to wait.
    static let retryAfterSpentMemory = 5

    private func finish(_ response: Response) -> Response {
        var response = response
        response.headers[.dockerAPIVersion] = "registry/2.0"
        return response
    }

    // MARK: Authorization

    private func isPublic(_ registryName: String) -> Bool {
        (try? registry.registry(registryName))??.publicURIEnabled ?? false
    }

    /// What a route needs: the permission and the repository it applies to.
    private func requirement(_ route: DistributionRoute, _ method: HTTPRequest.Method) -> (Permission, String)? {
        switch route {
        case .base, .catalog: return nil
        case .tags(let name), .referrers(let name, _): return (.pull, name)
        case .manifest(let name, _), .blob(let name, _):
            switch method {
            case .put: return (.push, name)
            case .delete: return (.delete, name)
            default: return (.pull, name)
            }
        case .uploads(let name), .upload(let name, _): return (.push, name)
        }
    }

    /// A 401/403 answer when the caller may not use the route, nil when it may.
    private func authorize(_ route: DistributionRoute, _ request: Request, _ context: Context) async -> Response? {
        let principal = context.principal
        guard let (permission, name) = requirement(route, request.method) else {
            // The base endpoint needs any valid credentials, an anonymous token
            // included; the catalog a user's (an anonymous token is granted no catalog).
            if principal.user != nil || (route == .base && principal.tokenAccess != nil) { return nil }
            let scope = route == .catalog ? "registry:catalog:*" : nil
            return challenge.registry(request, RegistryError(.unauthorized, "authentication required"), scope: scope)
        }
        // A malformed name is answered by the handler with NAME_INVALID; it reveals nothing.
        guard let (registryName, _) = try? Names.splitRepository(name) else { return nil }
        let actions: String
        switch permission {
        case .push: actions = "pull,push"
        case .delete: actions = "delete"
        default: actions = "pull"
        }
        switch access.decide(principal, permission, registry: registryName, repository: name) {
        case .allow:
            // Only a caller who may use the registry learns that it is private-only:
            // to anyone else it answers as a registry that does not exist.
            if exposure == .public, let record = try? registry.registry(registryName), !record.publicURIEnabled {
                return ErrorResponses.oci(
                    RegistryError(.denied, "registry \(registryName) is not reachable through its public URI"),
                    head: request.method == .head)
            }
            return nil
        case .challenge(let insufficientScope):
            return challenge.registry(
                request, RegistryError(.unauthorized, "authentication required to \(actions) \(name)"),
                scope: "repository:\(name):\(actions)", insufficientScope: insufficientScope)
        case .deny:
            await access.audit.record(
                actor: principal.actor, source: context.source, action: "auth.failure", target: "\(name):\(actions)",
                registry: registryName, outcome: "denied")
            return ErrorResponses.oci(
                RegistryError(.denied, "\(principal.actor) may not \(actions) in registry '\(registryName)'"),
                head: request.method == .head)
        }
    }

    /// Records a delete the request made, synced before its answer.
    private func audit(_ context: Context, _ action: String, _ target: String, registry: String?) async {
        await access.audit.record(
            actor: context.principal.actor, source: context.source, action: action, target: target, registry: registry,
            durability: .synced)
    }

    private func dispatch(_ route: DistributionRoute, _ request: Request, _ context: Context) async throws -> Response {
        switch (route, request.method) {
        case (.base, .get), (.base, .head):
            return json([:], head: request.method == .head)
        case (.catalog, .get), (.catalog, .head):
            return bodyless(try await catalog(request, context), if: request.method == .head)
        case (.tags(let name), .get), (.tags(let name), .head):
            return bodyless(try await tags(name, request, context), if: request.method == .head)
        case (.manifest(let name, let reference), .get), (.manifest(let name, let reference), .head):
            let response = try await getManifest(name, reference, request, context)
            if request.method == .get, let digest = response.headers[.dockerContentDigest] {
                registry.recordPull(
                    name: name, digest: digest, tag: ContentDigest.isDigest(reference) ? nil : reference,
                    actor: context.principal.user)
            }
            return response
        case (.manifest(let name, let reference), .put):
            return try await putManifest(name, reference, request, actor: context.principal.user)
        case (.manifest(let name, let reference), .delete):
            try await registry.deleteManifest(name: name, reference: reference, actor: context.principal.user)
            let isDigest = ContentDigest.isDigest(reference)
            if isDigest { jobs.noteDelete() }
            let action = isDigest ? "manifest.delete" : "tag.delete"
            await audit(context, action, "\(name):\(reference)", registry: try? Names.splitRepository(name).registry)
            return Response(status: .accepted, headers: [.contentLength: "0"])
        case (.blob(let name, let digest), .get), (.blob(let name, let digest), .head):
            return try await getBlob(name, digest, request, context)
        case (.blob(let name, let digest), .delete):
            try await registry.deleteBlob(name: name, digest: digest)
            await audit(context, "blob.delete", "\(name)@\(digest)", registry: try? Names.splitRepository(name).registry)
            return Response(status: .accepted, headers: [.contentLength: "0"])
        case (.uploads(let name), .post):
            return try await startUpload(name, request, context.principal)
        case (.upload(let name, let id), .get), (.upload(let name, let id), .head):
            return uploadStatus(name, try registry.upload(name: name, id: id), status: .noContent)
        case (.upload(let name, let id), .patch):
            return try await patchUpload(name, id, request)
        case (.upload(let name, let id), .put):
            return try await finishUpload(name, id, request)
        case (.upload(let name, let id), .delete):
            try await registry.cancelUpload(name: name, id: id)
            return Response(status: .noContent)
        case (.referrers(let name, let digest), .get), (.referrers(let name, let digest), .head):
            return bodyless(try await referrers(name, digest, request, context), if: request.method == .head)
        default:
            let error = RegistryError(.unsupported, "\(request.method) is not supported on \(request.uri.path)").with(status: 405)
            var response = ErrorResponses.oci(error, head: request.method == .head)
            response.headers[.allow] = route.allowedMethods  // RFC 9110 §15.5.6
            return response
        }
    }

    // MARK: Listings

    private func limit(_ request: Request) throws -> Int? {
        guard let text = request.query("n") else { return nil }
        guard let n = Int(text), n >= 0 else { throw RegistryError(.unsupported, "n must be a non-negative integer").with(status: 400) }
        return n
    }

    private func link(path: String, last: String, n: Int?) -> String {
        link(path: path, query: [URLQueryItem(name: "last", value: last)] + (n.map { [URLQueryItem(name: "n", value: String($0))] } ?? []))
    }

    /// A `Link` header's value naming the next page (RFC 8288).
    private func link(path: String, query: [URLQueryItem]) -> String {
        var components = URLComponents()
        components.path = path
        components.queryItems = query
        return "<\(components.string ?? path)>; rel=\"next\""
    }

    /// The answer to a HEAD: the GET's headers, `Content-Length` included, without its body.
    private func bodyless(_ response: Response, if isHead: Bool) -> Response {
        isHead ? response.createHeadResponse() : response
    }

    private func catalog(_ request: Request, _ context: Context) async throws -> Response {
        let principal = context.principal
        let n = try limit(request)
        let (last, limit) = (request.query("last"), min(n ?? 1000, 10_000))
        // What the caller may pull: registries it has a role on, and those open to anonymous pull.
        let open = Set(try registry.anonymousPullRegistries())
        let visible: @Sendable (String) -> Bool = { name in
            let registryName = String(name.prefix { $0 != "/" })
            return (principal.rights.canView(registryName) || open.contains(registryName))
                && (exposure == .private || isPublic(registryName))
        }
        // A caller with roles on some registries reads those registries' images only (and the open ones').
        let ((body, next), lease) = try await leasedRead(request, context, size: { $0.0.readableBytes }) {
            let page = try await scan(keys: limit) { [registry] in
                if let scoped = principal.rights.scopedRegistries {
                    return try registry.repositories(inRegistries: scoped + open, after: last, limit: limit, visible: visible)
                }
                return try registry.repositories(after: last, limit: limit, visible: visible)
            }
            return (ByteBuffer(bytes: JSONText.bytes(["repositories": page.items.map(\.name)])), page.next)
        }
        var response = Response(
            status: .ok, headers: [.contentType: "application/json", .contentLength: String(body.readableBytes)],
            body: leasedBody(body, lease, context))
        if let next { response.headers[.link] = link(path: "/v2/_catalog", last: next, n: n) }
        return response
    }

    private func tags(_ name: String, _ request: Request, _ context: Context) async throws -> Response {
        let n = try limit(request)
        let last = request.query("last")
        let ((body, next), lease) = try await leasedRead(request, context, size: { $0.0.readableBytes }) {
            let limit = n ?? 100_000
            let page = try await scan(keys: limit) { [registry] in try registry.tags(name: name, after: last, limit: limit) }
            return (TagListBody.make(name: name, tags: page.items), page.next)
        }
        var response = Response(
            status: .ok, headers: [.contentType: "application/json", .contentLength: String(body.readableBytes)],
            body: leasedBody(body, lease, context))
        if let next { response.headers[.link] = link(path: "/v2/\(name)/tags/list", last: next, n: n) }
        return response
    }

    /// Runs a catalog read of a page of up to `keys` entries: inline when the
    /// page holds at most 1,000 (the hop to the blocking pool would cost more:
    /// 0.2 ms on a page of 100, measured), else on the pool, so that a long
    /// scan (a whole tag list: 5 ms for 10,000) holds no task thread.
    private func scan<T: Sendable>(keys: Int, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        keys <= 1_000 ? try body() : try await registry.store.pool.run(body)
    }

    /// Pages end at 4 MiB of descriptors; `last` (a referrer's digest, from the `Link` header) goes on after one.
    private func referrers(_ name: String, _ digest: String, _ request: Request, _ context: Context) async throws -> Response {
        // Empty is no filter: a pushed manifest's empty artifactType is stored as none.
        let artifactType = request.query("artifactType").flatMap { $0.isEmpty ? nil : $0 }
        let last = request.query("last")
        let ((body, next), lease) = try await leasedRead(request, context, size: { $0.0.readableBytes }) {
            let page = try await registry.store.pool.run { [registry] in
                try registry.referrers(name: name, digest: digest, artifactType: artifactType, after: last)
            }
            return (ByteBuffer(data: try JSONEncoder.registry.encode(ReferrersIndex(manifests: page.items))), page.next)
        }
        var headers: HTTPFields = [.contentType: MediaType.ociIndex, .contentLength: String(body.readableBytes)]
        if artifactType != nil { headers[.ociFiltersApplied] = "artifactType" }
        if let next {
            let query = [URLQueryItem(name: "last", value: next)] + (artifactType.map { [URLQueryItem(name: "artifactType", value: $0)] } ?? [])
            headers[.link] = link(path: "/v2/\(name)/referrers/\(digest)", query: query)
        }
        return Response(status: .ok, headers: headers, body: leasedBody(body, lease, context))
    }

    // MARK: Response memory

    /// What `read` returns, with a lease from ``budget`` for its `size` when
    /// that is more than a slice and the request is a GET. When the budget
    /// is spent, the read is dropped while the request waits for room, then
    /// read again: a waiting request holds no body.
    private func leasedRead<Value>(
        _ request: Request, _ context: Context, size: (Value) -> Int, _ read: () async throws -> Value
    ) async throws -> (Value, ResponseBudget.Lease?) {
        /// The value and its lease, or nil with `wanted` set: the value is dropped as this returns.
        func attempt(_ lease: ResponseBudget.Lease?, wanted: inout Int) async throws -> (Value, ResponseBudget.Lease?)? {
            let value = try await read()
            let bytes = size(value)
            guard request.method == .get, bytes > ResponseBudget.sliceBytes else { return (value, nil) }
            if let lease, lease.covers(bytes) { return (value, lease) }
            if let lease = budget.tryLease(bytes, for: context.holder) { return (value, lease) }
            wanted = bytes
            return nil
        }
        var lease: ResponseBudget.Lease?
        var wanted = 0
        while true {
            if let done = try await attempt(lease, wanted: &wanted) { return done }
            lease = nil
            lease = try await budget.lease(
                wanted, for: context.holder, until: context.channel.closeFuture, waitingAtMost: stallTimeout)
        }
    }

    private func leasedBody(_ body: ByteBuffer, _ lease: ResponseBudget.Lease?, _ context: Context) -> ResponseBody {
        .leased(body, lease, on: context.channel, stallTimeout: stallTimeout)
    }

    // MARK: Manifests

    private func getManifest(_ name: String, _ reference: String, _ request: Request, _ context: Context) async throws -> Response {
        let (manifest, lease) = try await leasedRead(request, context, size: { $0.bytes.count }) {
            try registry.manifest(name: name, reference: reference)
        }
        let headers: HTTPFields = [
            .contentType: manifest.mediaType, .contentLength: String(manifest.bytes.count),
            .dockerContentDigest: manifest.digest, .eTag: "\"\(manifest.digest)\"",
        ]
        let body = request.method == .head ? ResponseBody() : leasedBody(ByteBuffer(bytes: manifest.bytes), lease, context)
        return Response(status: .ok, headers: headers, body: body)
    }

    private func putManifest(_ name: String, _ reference: String, _ request: Request, actor: String?) async throws -> Response {
        if let length = request.contentLength, length > Int64(ParsedManifest.maxBytes) {
            throw RegistryError(.manifestInvalid, "manifest is larger than the limit of 4 MiB", detail: "\(length) bytes")
                .with(status: 413)
        }
        var bytes: [UInt8] = []
        for try await buffer in request.body {
            bytes.append(contentsOf: buffer.readableBytesView)
            if bytes.count > ParsedManifest.maxBytes {
                throw RegistryError(.manifestInvalid, "manifest is larger than the limit of 4 MiB").with(status: 413)
            }
        }
        let manifest = try await registry.putManifest(
            name: name, reference: reference, bytes: bytes, contentType: request.headers[.contentType], actor: actor)
        var headers: HTTPFields = [
            .location: "/v2/\(name)/manifests/\(manifest.digest)", .dockerContentDigest: manifest.digest,
            .contentLength: "0",
        ]
        if let subject = manifest.subject { headers[.ociSubject] = subject.digest }
        return Response(status: .created, headers: headers)
    }

    // MARK: Blobs

    private func getBlob(_ name: String, _ digest: String, _ request: Request, _ context: Context) async throws -> Response {
        let object = try registry.blob(name: name, digest: digest)
        var headers: HTTPFields = [
            .contentType: "application/octet-stream", .dockerContentDigest: object.digest,
            .eTag: "\"\(object.digest)\"", .acceptRanges: "bytes",
        ]
        var range: Range<Int64> = 0..<object.size
        var status = HTTPResponse.Status.ok
        // Range applies to GET only (RFC 9110 §14.2): a HEAD describes the whole blob.
        if request.method == .get, let header = request.headers[.range] {
            switch ByteRange.select(header, size: object.size) {
            case .whole:
                break
            case .part(let parsed):
                range = parsed
                status = .partialContent
                headers[.contentRange] = "bytes \(parsed.lowerBound)-\(parsed.upperBound - 1)/\(object.size)"
            case .unsatisfiable:
                throw RegistryError(.rangeInvalid, "range '\(header)' is not satisfiable for a blob of \(object.size) bytes")
                    .with(header: "bytes */\(object.size)")
            }
        }
        headers[.contentLength] = String(range.count)
        if request.method == .head || range.isEmpty { return Response(status: status, headers: headers) }
        let count = Int(range.count)
        // Made before the wait: a reader keeps its extent from the sweep, and holds no buffer until it is iterated.
        let reader = registry.readBlob(object, range: range)
        let lease =
            count > ResponseBudget.sliceBytes
            ? try await budget.lease(
                reader.bufferedBytes, for: context.holder, until: context.channel.closeFuture, waitingAtMost: stallTimeout)
            : nil
        return Response(
            status: status, headers: headers,
            body: .paced(reader, on: context.channel, stallTimeout: stallTimeout) { [trimmer] in
                lease?.release()
                trimmer.transferEnded(bytes: count)
            })
    }

    // MARK: Uploads

    private func uploadStatus(_ name: String, _ upload: UploadRecord, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [
                .location: "/v2/\(name)/blobs/uploads/\(upload.id)",
                .range: "0-\(max(0, upload.size - 1))",
                .dockerUploadUUID: upload.id,
                .contentLength: "0",
            ])
    }

    private func blobCreated(_ name: String, _ object: ObjectRecord) -> Response {
        Response(
            status: .created,
            headers: [
                .location: "/v2/\(name)/blobs/\(object.digest)", .dockerContentDigest: object.digest,
                .contentLength: "0",
            ])
    }

    private func startUpload(_ name: String, _ request: Request, _ principal: Principal) async throws -> Response {
        if let digest = request.query("mount") {
            let from = request.query("from") ?? name
            // Mounting reads the source, so the caller must be allowed to pull it. From another
            // registry a token must name that pull in its scope, as Distribution requires (clients
            // ask for it when they mount); else one could copy out blobs its token cannot read.
            // Within the target's registry the blob is in the bucket already, readable through
            // any of its repositories, so the caller's rights decide, not the repositories the token names.
            let source = (try? Names.splitRepository(from))?.registry
            var reader = principal
            if source == (try Names.splitRepository(name)).registry { reader.tokenAccess = nil }
            // On a public listener a registry whose public URI is off does not exist, as a source either.
            if let source, exposure == .private || isPublic(source),
                access.decide(reader, .pull, registry: source, repository: from) == .allow,
                let object = try await registry.mount(name: name, digest: digest, from: from)
            {
                return blobCreated(name, object)
            }
        }
        let digest = request.query("digest")
        // A digest that does not parse is refused before anything is stored.
        if let digest { _ = try ContentDigest(parsing: digest) }
        let upload = try await registry.startUpload(name: name)
        if let digest {
            do {
                _ = try await append(name, upload.id, start: 0, request)
                return blobCreated(name, try await registry.completeUpload(name: name, id: upload.id, digest: digest))
            } catch {
                try? await registry.cancelUpload(name: name, id: upload.id)
                throw error
            }
        }
        var response = uploadStatus(name, upload, status: .accepted)
        response.headers[.ociChunkMinLength] = String(registry.minimumChunkLength)
        return response
    }

    /// Appends a request's body to an upload, then tells the trimmer. The body
    /// must be `length` bytes long when given, else its `Content-Length` if any.
    private func append(
        _ name: String, _ id: String, start: Int64?, length: Int64? = nil, _ request: Request
    ) async throws -> UploadRecord {
        defer { trimmer.transferEnded(bytes: request.contentLength.map(Int.init)) }
        return try await registry.appendUpload(
            name: name, id: id, start: start, expectedLength: length ?? request.contentLength, body: request.body)
    }

    private func patchUpload(_ name: String, _ id: String, _ request: Request) async throws -> Response {
        let range = try chunkRange(name, id, request)
        let upload = try await append(name, id, start: range?.start, length: range?.length, request)
        return uploadStatus(name, upload, status: .accepted)
    }

    /// Where a chunk's `Content-Range` says it starts and how long it is (nil
    /// without one): a body of another length, with or without a
    /// `Content-Length`, changes nothing. One that does not parse is 416 with
    /// the upload's current `Range`, before the body is read, so the client
    /// can resume; the upload is unchanged.
    private func chunkRange(_ name: String, _ id: String, _ request: Request) throws -> (start: Int64, length: Int64)? {
        guard let header = request.headers[.contentRange] else { return nil }
        guard let range = ByteRange.parseChunk(header) else {
            let size = try registry.upload(name: name, id: id).size
            throw RegistryError(
                .rangeInvalid, "Content-Range '\(header)' is not of the form <start>-<end>", detail: "current size \(size)")
        }
        // Compared without adding one: `end` may be as large as Int64 allows.
        if let length = request.contentLength, length - 1 != range.end - range.start {
            throw RegistryError(.sizeInvalid, "Content-Range \(header) does not cover the Content-Length of \(length) bytes")
        }
        let (length, overflow) = (range.end - range.start).addingReportingOverflow(1)
        guard !overflow else { throw RegistryError(.sizeInvalid, "Content-Range \(header) is longer than any blob") }
        return (range.start, length)
    }

    private func finishUpload(_ name: String, _ id: String, _ request: Request) async throws -> Response {
        guard let digest = request.query("digest") else {
            throw RegistryError(.digestInvalid, "PUT to an upload needs ?digest=")
        }
        // Before the body: a digest that does not parse leaves the upload as it was.
        _ = try ContentDigest(parsing: digest)
        // Lenient, as Distribution is: a final PUT's Content-Range only places
        // its body when it parses (the digest check catches a misplaced one).
        var start: Int64?
        if let header = request.headers[.contentRange], let range = ByteRange.parseChunk(header) { start = range.start }
        if request.contentLength != 0 {
            _ = try await append(name, id, start: start, request)
        }
        return blobCreated(name, try await registry.completeUpload(name: name, id: id, digest: digest))
    }

    // MARK: Bodies

    private func json(_ object: [String: Any], head: Bool = false) -> Response {
        let body = JSONText.bytes(object)
        return Response(
            status: .ok, headers: [.contentType: "application/json", .contentLength: String(body.count)],
            body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// The referrers API response: an OCI index of descriptors.
struct ReferrersIndex: Encodable {
    var schemaVersion = 2
    var mediaType = MediaType.ociIndex
    var manifests: [Descriptor]
}

extension JSONEncoder {
    static var registry: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

extension RegistryError {
    func with(status: Int) -> RegistryError {
        var copy = self
        copy.statusOverride = status
        return copy
    }

    /// Carries a `Content-Range` value for a 416 answer.
    func with(header: String) -> RegistryError {
        var copy = self
        copy.detail = header
        return copy
    }
}

extension Response {
    func with(status: Int) -> Response {
        var copy = self
        copy.status = .init(code: status)
        return copy
    }
}
