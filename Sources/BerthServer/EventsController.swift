import BerthCore
import Foundation
import Hummingbird

/// `GET /api/v1/events`: the event log, oldest first, after a cursor.
/// Global admins and viewers read every event; others the events of the
/// registries they may view (not the appliance's own, such as `gc.run`).
struct EventsController {
    let registry: Registry
    let support: AdminSupport

    func register(on router: Router<BerthRequestContext>) {
        router.get("api/v1/events") { request, context in
            try await support.run(request, context) { principal in
                var after: Int64 = 0
                if let text = request.query("after") {
                    guard let parsed = Int64(text), parsed >= 0 else {
                        throw InvalidRequest(message: "'after' must be an event id (a non-negative integer), got '\(text)'")
                    }
                    after = parsed
                }
                let limit = try AdminSupport.limit(request)
                let registryFilter = request.query("registry")
                let typeFilter = request.query("type")
                if let typeFilter, !EventRecord.types.contains(typeFilter) {
                    throw InvalidRequest(message: "'type' must be one of \(EventRecord.types.sorted().joined(separator: ", ")), got '\(typeFilter)'")
                }
                let rights = principal.rights
                // Up to 10,000 events read and decoded: on the blocking pool, not a cooperative thread.
                let page = try await registry.store.pool.run { [registry, after] in
                    // A role on a registry covers the registry created under that
                    // name last, not a deleted one of the same name before it.
                    var created: [String: Date] = [:]
                    func current(_ name: String) -> Date? {
                        if let known = created[name] { return known }
                        created[name] = try? registry.registry(name)?.created
                        return created[name]
                    }
                    return try registry.events.events(after: after, limit: limit) { event in
                        if let registryFilter, event.registry != registryFilter { return false }
                        if let typeFilter, event.type != typeFilter { return false }
                        if rights.isGlobalReader { return true }
                        guard let name = event.registry, rights.canView(name), let since = current(name) else { return false }
                        return event.time >= since
                    }
                }
                return support.json(["items": page.items.map(describe), "next_cursor": page.next.map { $0 as Any } ?? NSNull()])
            }
        }
    }

    private func describe(_ event: EventRecord) -> [String: Any] {
        let detail = event.detail.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } ?? [String: Any]()
        return [
            "id": String(event.id), "time": AdminSupport.timestamp(event.time), "type": event.type,
            "registry": event.registry ?? NSNull(), "image": event.image ?? NSNull(), "digest": event.digest ?? NSNull(),
            "tag": event.tag ?? NSNull(), "actor": event.actor ?? NSNull(), "detail": detail,
        ]
    }
}
