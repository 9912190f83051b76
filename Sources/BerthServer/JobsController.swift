import BerthCore
import Foundation
import HTTPTypes
import Hummingbird

/// Runs and schedules of the background jobs: garbage collection
/// (`/api/v1/system/gc/...`, the appliance's) and cleanup
/// (`/api/v1/registries/{registry}/cleanup/...`). See docs/lifecycle.md.
struct JobsController {
    let jobs: JobRunner
    let support: AdminSupport

    struct RunRequest: Decodable {
        var dry_run: Bool?
    }

    /// `{"cron": "..."}` or `{"cron": null}`; the key itself is required.
    struct ScheduleBody: Decodable {
        var cron: String?

        enum CodingKeys: String, CodingKey { case cron }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            guard container.contains(.cron) else {
                throw DecodingError.keyNotFound(
                    CodingKeys.cron, .init(codingPath: [], debugDescription: "'cron' is required (null removes the schedule)"))
            }
            cron = try container.decodeNil(forKey: .cron) ? nil : try container.decode(String.self, forKey: .cron)
        }
    }

    func register(on router: Router<BerthRequestContext>) {
        let gc = router.group("api/v1/system/gc")
        gc.post("runs") { request, context in
            try await support.run(request, context) { principal in
                try support.requireGlobalAdmin(principal, "run garbage collection")
                let run = try await jobs.startGC(trigger: .api, actor: principal.user)
                await support.audit(context, "gc.start", String(run.id))
                return support.json(describe(run), status: .accepted, location: "/api/v1/system/gc/runs/\(run.id)")
            }
        }
        gc.get("runs") { request, context in
            try await globalRead(request, context) {
                try list(request, kind: .gc, registry: nil)
            }
        }
        gc.get("runs/:id") { request, context in
            try await globalRead(request, context) {
                support.json(describe(try run(context, kind: .gc, registry: nil)))
            }
        }
        gc.get("runs/:id/details") { request, context in
            try await globalRead(request, context) {
                try details(request, try run(context, kind: .gc, registry: nil))
            }
        }
        gc.get("schedule") { request, context in
            try await globalRead(request, context) { describe(try jobs.gcSchedule()) }
        }
        gc.put("schedule") { request, context in
            try await support.run(request, context) { principal in
                try support.requireGlobalAdmin(principal, "change the garbage collection schedule")
                let body = try await support.decode(ScheduleBody.self, request)
                let schedule = try await jobs.registry.setGCSchedule(cron: body.cron)
                await support.audit(context, "gc.schedule", schedule?.source ?? "none")
                return describe(schedule)
            }
        }

        let cleanup = router.group("api/v1/registries/:registry/cleanup")
        let gate = RegistryGate(support: support)
        cleanup.post("runs") { request, context in
            try await gate.change(request, context) { name in
                let body = try await support.decode(RunRequest.self, request, optional: true)
                let run = try await jobs.startCleanup(
                    registry: name, dryRun: body.dry_run ?? false, trigger: .api, actor: context.principal.user)
                await support.audit(context, body.dry_run == true ? "cleanup.test" : "cleanup.start", String(run.id), registry: name)
                return support.json(
                    describe(run), status: .accepted, location: "/api/v1/registries/\(name)/cleanup/runs/\(run.id)")
            }
        }
        cleanup.get("runs") { request, context in
            try await gate.read(request, context) { name in try list(request, kind: .cleanup, registry: name) }
        }
        cleanup.get("runs/:id") { request, context in
            try await gate.read(request, context) { name in
                support.json(describe(try run(context, kind: .cleanup, registry: name)))
            }
        }
        cleanup.get("runs/:id/details") { request, context in
            try await gate.read(request, context) { name in
                try details(request, try run(context, kind: .cleanup, registry: name))
            }
        }
        cleanup.get("schedule") { request, context in
            try await gate.read(request, context) { name in describe(try jobs.registry.cleanupSchedule(registry: name)) }
        }
        cleanup.put("schedule") { request, context in
            try await gate.change(request, context) { name in
                _ = try jobs.registry.requireRegistry(name)
                let body = try await support.decode(ScheduleBody.self, request)
                let schedule = try await jobs.registry.setCleanupSchedule(registry: name, cron: body.cron)
                await support.audit(context, "cleanup.schedule", schedule?.source ?? "none", registry: name)
                return describe(schedule)
            }
        }
    }

    /// Global admins and global viewers.
    private func globalRead(
        _ request: Request, _ context: BerthRequestContext, _ body: () async throws -> Response
    ) async throws -> Response {
        try await support.run(request, context) { principal in
            guard principal.rights.isGlobalReader else { throw support.forbidden(principal, "read garbage collection") }
            return try await body()
        }
    }

    /// When the registry `name` was created (`distantPast` for GC's global
    /// runs): runs started before it belong to a deleted registry of that name.
    private func since(registry name: String?) throws -> Date {
        try name.map { try jobs.registry.requireRegistry($0).created } ?? .distantPast
    }

    private func run(_ context: BerthRequestContext, kind: JobKind, registry name: String?) throws -> JobRun {
        let text = try context.parameter("id")
        let since = try since(registry: name)
        guard let id = Int64(text), let run = try jobs.log.run(id), run.kind == kind, run.registry == name,
            run.belongs(toRegistryCreated: since)
        else {
            throw RegistryError(.nameUnknown, "run '\(text)' does not exist")
        }
        return run
    }

    private func list(_ request: Request, kind: JobKind, registry name: String?) throws -> Response {
        var cursor: Int64?
        if let text = request.query("cursor") {
            guard let parsed = Int64(text), parsed >= 0 else { throw InvalidRequest(message: "'cursor' must be a run id, got '\(text)'") }
            cursor = parsed
        }
        let page = try jobs.log.runs(
            kind: kind, registry: name, since: try since(registry: name), before: cursor, limit: try AdminSupport.limit(request))
        return support.json(["items": page.items.map(describe), "next_cursor": page.next.map { $0 as Any } ?? NSNull()])
    }

    private func details(_ request: Request, _ run: JobRun) throws -> Response {
        var from = 0
        if let text = request.query("cursor") {
            guard let parsed = Int(text), (0...Int(UInt32.max)).contains(parsed) else {
                throw InvalidRequest(message: "'cursor' must be a detail index, got '\(text)'")
            }
            from = parsed
        }
        let page = try jobs.log.details(run.id, from: from, limit: try AdminSupport.limit(request))
        return support.json([
            "items": page.items.map { detail -> [String: Any] in
                [
                    "image": detail.image ?? NSNull(), "digest": detail.digest, "tags": detail.tags,
                    "action": detail.action.rawValue, "policy": detail.policy ?? NSNull(), "reason": detail.reason ?? NSNull(),
                ]
            },
            "next_cursor": page.next.map { $0 as Any } ?? NSNull(),
        ])
    }

    private func describe(_ run: JobRun) -> [String: Any] {
        [
            "id": String(run.id), "kind": run.kind.rawValue, "registry": run.registry ?? NSNull(),
            "trigger": run.trigger.rawValue, "dry_run": run.dryRun, "status": run.status.rawValue,
            "started_at": AdminSupport.timestamp(run.started), "finished_at": AdminSupport.timestamp(run.finished),
            "error": run.error ?? NSNull(), "summary": run.summary,
        ]
    }

    private func describe(_ schedule: CronExpression?) -> Response {
        support.json([
            "cron": schedule?.source ?? NSNull(),
            "next_run_at": AdminSupport.timestamp(schedule?.next(after: Date())),
        ])
    }
}
