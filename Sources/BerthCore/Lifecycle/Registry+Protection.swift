import BerthStorage
import Foundation

/// An enabled protection policy that applies to one image, its tag pattern
/// compiled once for the tags it is checked against.
struct ImageProtection {
    let policy: ProtectionPolicy
    let tags: Pattern

    func covers(tag: String) -> Bool { tags.matches(tag) }
}

/// Which protection policies guard what, and the checks every delete and
/// tag move goes through (admin API, data plane, cleanup, old-tag cleanup).
extension Registry {
    /// The enabled protection policies of `name`'s registry that apply to its
    /// image, and those of `earlier` (the policies as a cleanup run read them
    /// at its start) that apply: a policy changed since protects what either
    /// of its versions covers.
    func protections(
        repository name: String, alsoApplying earlier: [ProtectionPolicy] = []
    ) throws -> (image: String, policies: [ImageProtection]) {
        let (registryName, image) = try Names.splitRepository(name)
        let stored = try storedPolicies(ProtectionPolicy.self, registry: registryName)
        let policies = (stored + earlier).compactMap { policy -> ImageProtection? in
            guard policy.enabled, (try? Pattern(policy.imagePattern))?.matches(image) == true,
                let tags = try? Pattern(policy.tagPattern)
            else { return nil }
            return ImageProtection(policy: policy, tags: tags)
        }
        return (image, policies)
    }

    /// The policy protecting `tag` of repository `name`, if any.
    public func protection(repository name: String, tag: String) throws -> ProtectionPolicy? {
        try protections(repository: name).policies.first { $0.covers(tag: tag) }?.policy
    }

    /// The policy protecting artifact `digest` of repository `name` and the
    /// tag through which it does: a protected tag on the artifact, or on an
    /// index listing it (directly or through nested indexes). `earlier`
    /// policies protect too (see ``protections(repository:alsoApplying:)``).
    public func protection(
        repository name: String, digest: String, alsoApplying earlier: [ProtectionPolicy] = []
    ) throws -> (ProtectionPolicy, tag: String)? {
        let policies = try protections(repository: name, alsoApplying: earlier).policies
        guard !policies.isEmpty else { return nil }
        // Up from the artifact through every index listing it, nested ones
        // too (a walk with a list of its own, as an uploader may nest indexes
        // deep), to their tags; of the protected ones, the first in tag order.
        var found: (ProtectionPolicy, String)?
        var seen = Set<String>()
        var pending = [digest]
        while let next = pending.popLast() {
            guard seen.insert(next).inserted else { continue }
            for tag in try tags(of: next, in: name) where found.map({ tag < $0.1 }) ?? true {
                if let protection = policies.first(where: { $0.covers(tag: tag) }) { found = (protection.policy, tag) }
            }
            pending += try indexes(listing: next, in: name)
        }
        return found
    }

    /// Refuses when `tag` of `name` is protected.
    func requireUnprotected(repository name: String, tag: String) throws {
        if let policy = try protection(repository: name, tag: tag) {
            let image = (try? Names.splitRepository(name).image) ?? name
            throw LifecycleError.protected("tag '\(tag)' of image '\(image)' is protected by \(policy.label)")
        }
    }

    /// Refuses when artifact `digest` of `name` is protected.
    func requireUnprotected(repository name: String, digest: String) throws {
        if let (policy, tag) = try protection(repository: name, digest: digest) {
            let image = (try? Names.splitRepository(name).image) ?? name
            throw LifecycleError.protected(
                "artifact \(digest) of image '\(image)' is protected by \(policy.label) through tag '\(tag)'")
        }
    }

    /// Refuses when any tag of image `name` is protected.
    func requireNothingProtected(repository name: String) throws {
        let (image, policies) = try protections(repository: name)
        guard !policies.isEmpty else { return }
        try db.scan(.catalog, prefix: Key("T", name).childPrefix) { key, _ in
            let tag = Key.lastComponent(key)
            if let protection = policies.first(where: { $0.covers(tag: tag) }) {
                throw LifecycleError.protected("tag '\(tag)' of image '\(image)' is protected by \(protection.policy.label)")
            }
            return true
        }
    }

    /// Refuses when any tag of any image of the registry is protected.
    func requireNothingProtected(registry registryName: String) throws {
        guard try storedPolicies(ProtectionPolicy.self, registry: registryName).contains(where: \.enabled) else { return }
        var names: [String] = []
        try db.scan(.catalog, prefix: Key("I", registryName + "/").bytes) { key, _ in
            names.append(Key.lastComponent(key))
            return true
        }
        for name in names { try requireNothingProtected(repository: name) }
    }
}
