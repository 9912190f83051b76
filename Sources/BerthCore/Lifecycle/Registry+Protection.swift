import BerthStorage
import Foundation

/// Which protection policies guard what, and the checks every delete and
/// tag move goes through (admin API, data plane, cleanup, old-tag cleanup).
extension Registry {
    /// The enabled protection policies of `name`'s registry that apply to its image.
    func protections(repository name: String) throws -> (image: String, policies: [ProtectionPolicy]) {
        let (registryName, image) = try Names.splitRepository(name)
        let policies = try storedProtections(registryName).filter {
            $0.enabled && ((try? Pattern($0.imagePattern))?.matches(image) ?? false)
        }
        return (image, policies)
    }

    private func storedProtections(_ registryName: String) throws -> [ProtectionPolicy] {
        var policies: [ProtectionPolicy] = []
        try db.scan(.catalog, prefix: Key("Q", registryName).childPrefix) { _, value in
            policies.append(try RecordCodec.decode(ProtectionPolicy.self, value))
            return true
        }
        return policies
    }

    /// The policy protecting `tag` of repository `name`, if any.
    public func protection(repository name: String, tag: String) throws -> ProtectionPolicy? {
        let (image, policies) = try protections(repository: name)
        return policies.first { $0.covers(image: image, tag: tag) }
    }

    /// The policy protecting artifact `digest` of repository `name` and the
    /// tag through which it does: a protected tag on the artifact, or on an
    /// index listing it.
    public func protection(repository name: String, digest: String) throws -> (ProtectionPolicy, tag: String)? {
        let (image, policies) = try protections(repository: name)
        guard !policies.isEmpty else { return nil }
        var found: (ProtectionPolicy, String)?
        var checked: [String: Bool] = [:]
        try db.scan(.catalog, prefix: Key("T", name).childPrefix) { key, value in
            let tag = Key.lastComponent(key)
            guard let policy = policies.first(where: { $0.covers(image: image, tag: tag) }) else { return true }
            let target = TagValue.decode(value).digest
            let covers: Bool
            if let known = checked[target] {
                covers = known
            } else {
                covers = try target == digest || (manifestRecord(name: name, digest: target)?.children.contains(digest) ?? false)
                checked[target] = covers
            }
            if covers {
                found = (policy, tag)
                return false
            }
            return true
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
            if let policy = policies.first(where: { $0.covers(image: image, tag: tag) }) {
                throw LifecycleError.protected("tag '\(tag)' of image '\(image)' is protected by \(policy.label)")
            }
            return true
        }
    }

    /// Refuses when any tag of any image of the registry is protected.
    func requireNothingProtected(registry registryName: String) throws {
        guard try storedProtections(registryName).contains(where: \.enabled) else { return }
        var names: [String] = []
        try db.scan(.catalog, prefix: Key("I", registryName + "/").bytes) { key, _ in
            names.append(Key.lastComponent(key))
            return true
        }
        for name in names { try requireNothingProtected(repository: name) }
    }
}
