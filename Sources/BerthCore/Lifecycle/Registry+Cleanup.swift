import BerthStorage
import Foundation

/// What a cleanup run did or, in a test run, would do.
public struct CleanupOutcome: Sendable {
    public var artifactsDeleted: Int64 = 0
    public var tagsDeleted: Int64 = 0
    public var artifactsProtected: Int64 = 0
    public var errors: Int64 = 0

    var summary: [String: Int64] {
        [
            "artifacts_deleted": artifactsDeleted, "tags_deleted": tagsDeleted,
            "artifacts_protected": artifactsProtected, "errors": errors,
        ]
    }
}

extension Registry {
    /// Applies the registry's enabled cleanup policies, read once at the
    /// start: an artifact is deleted when any policy deletes it and no
    /// protection policy keeps it, as read at the start or as it is now. A
    /// test run (`dryRun`) records the same decisions and deletes nothing.
    /// `delete_untagged` leaves artifacts pushed less than `untaggedGrace`
    /// seconds ago. See docs/lifecycle.md for the rules.
    public func runCleanup(
        registry registryName: String, dryRun: Bool, untaggedGrace: Double, actor: String?, details: JobDetails
    ) async throws -> CleanupOutcome {
        // The registry this run cleans: one deleted and created again under its
        // name meanwhile is another, which the run must not touch.
        let created = try requireRegistry(registryName).created
        let policies = try cleanupPolicies(registry: registryName).filter(\.enabled)
        // Protection read at the start holds for the whole run, as documented; one added
        // or widened meanwhile protects too: a run never deletes more than either allows.
        let protectionsAtStart = try protectionPolicies(registry: registryName).filter(\.enabled)
        var outcome = CleanupOutcome()
        guard !policies.isEmpty else { return outcome }
        var images: [String] = []
        try db.scan(.catalog, prefix: Key("I", registryName + "/").bytes) { key, _ in
            images.append(Key.lastComponent(key))
            return true
        }
        for name in images {
            try Task.checkCancellation()
            guard try registry(registryName)?.created == created else {
                throw RegistryError(.nameUnknown, "registry '\(registryName)' was deleted during the run")
            }
            let image = String(name.dropFirst(registryName.count + 1))
            let applicable = policies.filter { (try? Pattern($0.imagePattern))?.matches(image) ?? false }
            guard !applicable.isEmpty else { continue }
            let decisions = try decide(name: name, image: image, policies: applicable, untaggedGrace: untaggedGrace)
            // What this run deleted of this image (or, in a test run, would): an
            // attachment goes only after its artifact. Per image: another image
            // may hold the same digest and keep it.
            var gone: Set<String> = []
            for decision in decisions {
                try Task.checkCancellation()
                var detail = JobDetail(
                    image: image, digest: decision.record.digest, tags: decision.tags, action: .deleted,
                    policy: decision.policy.id, reason: decision.reason)
                if let index = decision.listedBy {
                    detail.action = .kept
                    detail.reason = "kept: listed by index \(index), which stays; \(decision.reason)"
                } else if let subject = decision.attachedTo, !gone.contains(subject) {
                    detail.action = .kept
                    detail.reason = "kept: attached to \(subject), which stays"
                } else if let (protection, tag) = try protection(
                    repository: name, digest: decision.record.digest, alsoApplying: protectionsAtStart)
                {
                    detail.action = .protected
                    detail.policy = protection.id
                    detail.reason = "kept: protected by \(protection.label) through tag '\(tag)'; \(decision.reason)"
                    outcome.artifactsProtected += 1
                } else if dryRun {
                    detail.action = .wouldDelete
                    outcome.artifactsDeleted += 1
                    outcome.tagsDeleted += Int64(decision.tags.count)
                    gone.insert(decision.record.digest)
                } else {
                    do {
                        // Deleted only if nothing the decision rests on changed meanwhile,
                        // and no index lists it (indexes the run deletes go before what they list).
                        let precondition = DeletePrecondition(
                            tags: Set(decision.tags), registryCreated: created, pushed: decision.record.created)
                        try await deleteManifest(
                            name: name, reference: decision.record.digest, actor: actor, ifUnchanged: precondition)
                        outcome.artifactsDeleted += 1
                        outcome.tagsDeleted += Int64(decision.tags.count)
                        gone.insert(decision.record.digest)
                    } catch let error as LifecycleError where error.code == "PROTECTED" {
                        detail.action = .protected
                        detail.reason = "kept: \(error.message)"
                        outcome.artifactsProtected += 1
                    } catch let error as LifecycleError where error.code == "CHANGED" {
                        detail.action = .kept
                        detail.reason = "kept: \(error.message); the next run decides again"
                    } catch is CancellationError {
                        throw CancellationError()  // the server stops: the delete was not done, nor is it a failure
                    } catch {
                        detail.action = .failed
                        detail.reason = "\(error)"
                        outcome.errors += 1
                    }
                }
                details.summarySoFar = outcome.summary
                try await details.add(detail)
            }
        }
        return outcome
    }

    struct CleanupDecision {
        var record: ManifestRecord
        var tags: [String]
        var policy: CleanupPolicy
        var reason: String
        /// An index the run keeps that lists this artifact, which keeps it too.
        var listedBy: String?
        /// The artifact this one is attached to by a cosign-style tag: deleted
        /// only once that one is.
        var attachedTo: String?
    }

    /// The artifact a tag in cosign's scheme attaches its own to:
    /// `sha256-<hex>.sig` (signatures), `.att` (attestations), `.sbom`, and
    /// any other lowercase suffix name `sha256:<hex>`. These artifacts carry
    /// no `subject`, so only their tag says what they belong to.
    static func attachmentSubject(tag: String) -> String? {
        let utf8 = Array(tag.utf8)
        let prefix = Array("sha256-".utf8)
        guard utf8.count > prefix.count + 65, utf8.starts(with: prefix) else { return nil }
        let hex = utf8[prefix.count..<prefix.count + 64]
        let dot = prefix.count + 64
        guard hex.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }),
            utf8[dot] == UInt8(ascii: "."), utf8[(dot + 1)...].allSatisfy({ (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) })
        else { return nil }
        return "sha256:" + String(decoding: hex, as: UTF8.self)
    }

    /// The artifacts of one image the policies delete, each index before what
    /// it lists and otherwise oldest push first; the first policy deleting one
    /// names it. An artifact listed by an index that stays stays too (its
    /// decision names the index): a policy that keeps the newest N tagged
    /// artifacts must not take a platform manifest of a multi-arch image it keeps.
    /// An artifact whose every tag is in cosign's scheme and names another of
    /// the image (``attachmentSubject(tag:)``) is that one's attachment: the
    /// keep rules neither count nor delete it, and it is decided for deletion,
    /// after everything else, only with the artifact it is attached to.
    func decide(name: String, image: String, policies: [CleanupPolicy], untaggedGrace: Double) throws -> [CleanupDecision] {
        var manifests: [ManifestRecord] = []
        try db.scan(.catalog, prefix: Key("M", name).childPrefix) { _, value in
            var record = try RecordCodec.decode(ManifestRecord.self, value)
            // The rules need neither: an image's records are held at once, and
            // annotations may run to megabytes a manifest.
            record.annotations = nil
            record.blobs = []
            manifests.append(record)
            return true
        }
        let tags = try tagsByDigest(name)
        let present = Set(manifests.map(\.digest))
        let listed = Set(manifests.flatMap(\.children))
        var attachedTo: [String: String] = [:]
        for record in manifests {
            guard let names = tags[record.digest], !names.isEmpty else { continue }
            let subjects = names.map(Self.attachmentSubject)
            guard subjects.allSatisfy({ $0 != nil }),
                let subject = subjects.compactMap({ $0 }).sorted().first(where: { $0 != record.digest && present.contains($0) })
            else { continue }
            attachedTo[record.digest] = subject
        }
        let now = Date()
        var decisions: [String: CleanupDecision] = [:]
        func delete(_ record: ManifestRecord, _ policy: CleanupPolicy, _ reason: String) {
            guard decisions[record.digest] == nil else { return }
            decisions[record.digest] = CleanupDecision(
                record: record, tags: (tags[record.digest] ?? []).sorted(), policy: policy, reason: reason)
        }
        for policy in policies {
            let rule = policy.rule
            let value = policy.value ?? 0
            if rule == .deleteUntagged {
                let pushedBefore = now.addingTimeInterval(-untaggedGrace)
                for record in manifests where (tags[record.digest] ?? []).isEmpty && !listed.contains(record.digest) {
                    if let subject = record.subject, present.contains(subject) { continue }
                    // Possibly a platform manifest whose index is still being pushed.
                    guard record.created < pushedBefore else { continue }
                    delete(record, policy, "delete_untagged: no tag, in no index, not a referrer of a present artifact")
                }
                continue
            }
            guard let tagPattern = try? Pattern(policy.tagPattern) else { continue }
            let candidates = manifests.filter { record in
                guard attachedTo[record.digest] == nil, let names = tags[record.digest], !names.isEmpty else { return false }
                return names.allSatisfy(tagPattern.matches)
            }
            switch rule {
            case .keepLastPushed:
                let newestFirst = candidates.sorted { ($0.created, $1.digest) > ($1.created, $0.digest) }
                for record in newestFirst.dropFirst(value) {
                    delete(record, policy, "keep_last_pushed \(value): not among the \(value) most recently pushed")
                }
            case .keepPushedWithinDays:
                let cutoff = now.addingTimeInterval(-Double(value) * 86_400)
                for record in candidates where record.created < cutoff {
                    delete(record, policy, "keep_pushed_within_days \(value): pushed before \(cutoff)")
                }
            case .keepPulledWithinDays:
                let cutoff = now.addingTimeInterval(-Double(value) * 86_400)
                for record in candidates {
                    let lastPull = try pullRecord(name: name, digest: record.digest).last ?? record.created
                    if lastPull < cutoff {
                        delete(record, policy, "keep_pulled_within_days \(value): last pulled before \(cutoff)")
                    }
                }
            case .deleteUntagged:
                break
            }
        }
        // What stays keeps what it lists, down nested indexes.
        var kept = manifests.filter { decisions[$0.digest] == nil }
        while let index = kept.popLast() {
            for child in index.children where decisions[child]?.listedBy == nil {
                guard let decision = decisions[child] else { continue }
                decisions[child]?.listedBy = index.digest
                kept.append(decision.record)
            }
        }
        let main = Self.parentsFirst(
            decisions.values.sorted { ($0.record.created, $0.record.digest) < ($1.record.created, $1.record.digest) })
        // Attachments follow what they are attached to, down chains (a signature's signature).
        var attachments: [CleanupDecision] = []
        let attached = manifests.filter { attachedTo[$0.digest] != nil }.sorted { ($0.created, $0.digest) < ($1.created, $1.digest) }
        var added = true
        while added {
            added = false
            for record in attached {
                // Attached to an artifact the run deletes (an attachment's decision counts too).
                guard let subject = attachedTo[record.digest], decisions[record.digest] == nil,
                    let deleted = decisions[subject], deleted.listedBy == nil
                else { continue }
                let names = (tags[record.digest] ?? []).sorted()
                let decision = CleanupDecision(
                    record: record, tags: names, policy: deleted.policy,
                    reason: "attached to \(subject) by tag '\(names.first ?? "")', which this run deletes", attachedTo: subject)
                decisions[record.digest] = decision
                attachments.append(decision)
                added = true
            }
        }
        return main + attachments
    }

    /// `decisions` (oldest first) reordered so that each index to delete comes
    /// before the artifacts it lists that are deleted too; the order is
    /// otherwise kept: an artifact waits for the last index listing it, and
    /// follows it at once. Linear in the decisions and their listings (an image
    /// of 200,000 artifacts to delete is one pass). Index listings form no
    /// cycles (an index names its children by digest, so none can list itself,
    /// directly or not).
    static func parentsFirst(_ decisions: [CleanupDecision]) -> [CleanupDecision] {
        let deleted = Set(decisions.filter { $0.listedBy == nil }.map(\.record.digest))
        var parents: [String: Int] = [:]  // for each artifact, the deleted indexes listing it not yet placed
        for decision in decisions where decision.listedBy == nil {
            for child in Set(decision.record.children) where deleted.contains(child) { parents[child, default: 0] += 1 }
        }
        guard !parents.isEmpty else { return decisions }
        var ordered: [CleanupDecision] = []
        ordered.reserveCapacity(decisions.count)
        var waiting: [String: Int] = [:]  // artifacts held back for an index, by their place in `decisions`
        func place(_ position: Int) {
            let decision = decisions[position]
            ordered.append(decision)
            guard decision.listedBy == nil else { return }
            var released: [Int] = []
            for child in Set(decision.record.children) where deleted.contains(child) {
                parents[child, default: 0] -= 1
                if parents[child] == 0, let held = waiting.removeValue(forKey: child) { released.append(held) }
            }
            for held in released.sorted() { place(held) }
        }
        for (position, decision) in decisions.enumerated() {
            if parents[decision.record.digest, default: 0] > 0 {
                waiting[decision.record.digest] = position
            } else {
                place(position)
            }
        }
        // Unreachable without a cycle; the deletes' own check refuses a listed child.
        return ordered + waiting.values.sorted().map { decisions[$0] }
    }
}
