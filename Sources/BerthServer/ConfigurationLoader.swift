import BerthCore
import Foundation
import Yams

/// A configuration error naming the key, and the line when it came from the file.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
}

/// Builds the effective ``ServerConfiguration`` from, in rising precedence:
/// embedded defaults, the YAML file, `BERTH_*` environment variables, flags.
///
/// Every key has the three forms: `max_blob_size` in the file,
/// `BERTH_MAX_BLOB_SIZE` in the environment, `--max-blob-size` as a flag.
public struct ConfigurationLoader {
    /// The keys, in the order `berth config check` prints them.
    public static let keys = [
        "data_dir", "http", "https", "private_http", "private_https", "public_host", "private_host", "host_names", "tls_cert", "tls_key", "http2_stream_window", "max_blob_size", "min_free_space", "direct_writes", "upload_timeout", "read_timeout", "token_ttl",
        "auth_failure_limit", "max_connections", "max_connections_per_ip", "response_memory", "metrics_access", "trusted_proxies", "backup_dir", "shutdown_timeout", "log_level", "gc_grace", "gc_after_delete", "gc_schedule", "untagged_grace",
        "event_retention_days", "event_retention_count", "audit_retention_days",
    ]

    public private(set) var configuration = ServerConfiguration()
    public private(set) var logLevel = "info"

    public init() {}

    /// Applies a YAML file: a mapping of the keys above. Unknown keys and bad values are errors.
    public mutating func apply(file path: String) throws {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(description: "\(path): cannot read the configuration file")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError(description: "\(path): not valid YAML: \(error)")
        }
        guard let root else { return }
        guard let mapping = root.mapping else {
            throw ConfigurationError(description: "\(path): the top level must be a mapping of keys to values")
        }
        for (keyNode, valueNode) in mapping {
            let key = keyNode.string ?? "\(keyNode)"
            let line = (keyNode.mark?.line).map { ":\($0)" } ?? ""
            let value: String
            if key == "host_names" || key == "trusted_proxies", let sequence = valueNode.sequence {
                value = sequence.compactMap(\.string).joined(separator: ",")
            } else if let scalar = valueNode.scalar {
                value = scalar.string
            } else {
                throw ConfigurationError(description: "\(path)\(line): '\(key)' must be a single value")
            }
            do {
                try set(key, value)
            } catch let error as ConfigurationError {
                throw ConfigurationError(description: "\(path)\(line): \(error.description)")
            }
        }
    }

    /// A warning for each `BERTH_` variable of `environment` that names no
    /// setting (a typo, or a setting of another version), which
    /// `apply(environment:)` ignores.
    public static func unknownVariableWarnings(in environment: [String: String]) -> [String] {
        let known = Set(keys.map { "BERTH_" + $0.uppercased() })
        return environment.keys.filter { $0.hasPrefix("BERTH_") && !known.contains($0) }.sorted()
            .map { "environment variable \($0) names no setting: ignored" }
    }

    /// Applies `BERTH_<KEY>` variables.
    public mutating func apply(environment: [String: String]) throws {
        for key in Self.keys {
            if let value = environment["BERTH_" + key.uppercased()] {
                do {
                    try set(key, value)
                } catch let error as ConfigurationError {
                    throw ConfigurationError(description: "BERTH_\(key.uppercased()): \(error.description)")
                }
            }
        }
    }

    /// Sets one key from its text form.
    public mutating func set(_ key: String, _ value: String) throws {
        func number<T: LosslessStringConvertible & Comparable>(_ type: T.Type, minimum: T, maximum: T? = nil) throws -> T {
            guard let parsed = T(value.trimmingCharacters(in: .whitespaces)), parsed >= minimum, parsed <= maximum ?? parsed else {
                let range = maximum.map { "from \(minimum) to \($0)" } ?? "≥ \(minimum)"
                throw ConfigurationError(description: "'\(key)' must be a number \(range), got '\(value)'")
            }
            return parsed
        }
        // Every duration has a bound: one a timer takes as a Duration or integer nanoseconds traps beyond its range.
        let day = 86_400.0
        func listener() throws -> ServerConfiguration.Listener? {
            if value == "off" { return nil }
            guard let listener = ServerConfiguration.Listener(value) else {
                throw ConfigurationError(description: "'\(key)' must be ADDR:PORT or 'off', got '\(value)'")
            }
            return listener
        }
        /// A list's entries (the file's sequence, or a comma-separated variable or flag); blank ones skipped.
        func listItems() -> [String] {
            value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        switch key {
        case "data_dir":
            guard !value.isEmpty else { throw ConfigurationError(description: "'data_dir' must not be empty") }
            configuration.dataDir = value
        case "http": configuration.http = try listener()
        case "https": configuration.https = try listener()
        case "private_http": configuration.privateHTTP = try listener()
        case "private_https": configuration.privateHTTPS = try listener()
        case "public_host": configuration.publicHost = value.isEmpty ? nil : value
        case "private_host": configuration.privateHost = value.isEmpty ? nil : value
        case "host_names":
            // Blank entries (a trailing comma) are skipped, as they always were.
            let names = listItems()
            if let bad = names.first(where: { !ServerConfiguration.isCertificateName($0) }) {
                throw ConfigurationError(
                    description: "'host_names' entries must be host names or IP addresses, without a port, got '\(bad)'")
            }
            configuration.hostNames = names
        // Empty is unset, as for the host settings: `BERTH_TLS_CERT=` goes back to the generated pair.
        case "tls_cert": configuration.tlsCertificatePath = value.isEmpty ? nil : value
        case "tls_key": configuration.tlsKeyPath = value.isEmpty ? nil : value
        case "http2_stream_window":
            let window = try number(Int.self, minimum: 65_535)
            guard window <= HTTP2Tuning.maxWindow else {
                throw ConfigurationError(description: "'http2_stream_window' must be at most \(HTTP2Tuning.maxWindow), got '\(value)'")
            }
            configuration.http2StreamWindow = window
        case "max_blob_size": configuration.maxBlobSize = try number(Int64.self, minimum: 1)
        case "min_free_space":
            // Below 64 MiB (auto's floor) a full disk could leave the store too little to open again.
            configuration.minFreeSpace = value == "auto" ? nil : try number(Int64.self, minimum: 64 << 20)
        case "direct_writes":
            switch value {
            case "true": configuration.directWrites = true
            case "false": configuration.directWrites = false
            default: throw ConfigurationError(description: "'direct_writes' must be true or false, got '\(value)'")
            }
        case "upload_timeout": configuration.uploadTimeout = try number(Double.self, minimum: 1, maximum: 30 * day)
        case "read_timeout": configuration.readTimeout = try number(Double.self, minimum: 1, maximum: day)
        case "token_ttl":
            let ttl = try number(Double.self, minimum: 1)
            guard ttl <= 43200 else { throw ConfigurationError(description: "'token_ttl' must be at most 43200 (12 h), got '\(value)'") }
            configuration.tokenLifetime = ttl
        case "auth_failure_limit": configuration.authFailureLimit = try number(Int.self, minimum: 1)
        case "max_connections": configuration.maxConnections = try number(Int.self, minimum: 16, maximum: 1_000_000)
        case "max_connections_per_ip": configuration.maxConnectionsPerAddress = try number(Int.self, minimum: 1, maximum: 1_000_000)
        case "response_memory":
            // 16 MiB leaves each address 4 MiB, a largest manifest.
            configuration.responseMemory = value == "auto" ? nil : try number(Int.self, minimum: 16 << 20)
        case "trusted_proxies":
            var ranges: [AddressRange] = []
            for entry in listItems() {
                guard let range = AddressRange(entry) else {
                    throw ConfigurationError(
                        description: "'trusted_proxies' entries must be IP addresses or ranges (10.0.0.0/8, fd00::/8), got '\(entry)'")
                }
                ranges.append(range)
            }
            configuration.trustedProxies = ranges
        case "metrics_access":
            guard let access = MetricsAccess(rawValue: value) else {
                throw ConfigurationError(description: "'metrics_access' must be authenticated or anonymous, got '\(value)'")
            }
            configuration.metricsAccess = access
        case "shutdown_timeout": configuration.shutdownTimeout = try number(Double.self, minimum: 0, maximum: day)
        case "backup_dir":
            guard !value.isEmpty else { throw ConfigurationError(description: "'backup_dir' must not be empty") }
            configuration.backupDir = value
        case "gc_grace": configuration.gcGrace = try number(Double.self, minimum: 0, maximum: 365 * day)
        case "gc_after_delete": configuration.gcAfterDelete = try number(Double.self, minimum: 0, maximum: 365 * day)
        case "untagged_grace": configuration.untaggedGrace = try number(Double.self, minimum: 0, maximum: 365 * day)
        case "gc_schedule":
            if value == "off" || value.isEmpty {
                configuration.gcSchedule = nil
            } else {
                do {
                    configuration.gcSchedule = try CronExpression(value).source
                } catch {
                    throw ConfigurationError(description: "'gc_schedule' is not a valid cron expression: \(error)")
                }
            }
        case "event_retention_days": configuration.eventRetentionDays = try number(Int.self, minimum: 1, maximum: 36_500)
        case "event_retention_count": configuration.eventRetentionCount = try number(Int.self, minimum: 1)
        case "audit_retention_days": configuration.auditRetentionDays = try number(Int.self, minimum: 1, maximum: 36_500)
        case "log_level":
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(value) else {
                throw ConfigurationError(description: "'log_level' must be one of \(levels.joined(separator: ", ")), got '\(value)'")
            }
            logLevel = value
        default:
            throw ConfigurationError(description: "unknown key '\(key)' (known: \(Self.keys.joined(separator: ", ")))")
        }
    }

    /// Every key with its effective value, in ``keys`` order, for `berth config check`.
    /// Nothing here is a secret (keys hold paths, not key material); a future secret is printed as `<redacted>`.
    public func effective() -> [(key: String, value: String)] {
        func listener(_ l: ServerConfiguration.Listener?) -> String { l.map { "\($0.host):\($0.port)" } ?? "off" }
        let c = configuration
        let values: [String: String] = [
            "data_dir": c.dataDir, "http": listener(c.http), "https": listener(c.https),
            "private_http": listener(c.privateHTTP), "private_https": listener(c.privateHTTPS),
            "public_host": c.endpoint(.public) ?? "(none)", "private_host": c.endpoint(.private) ?? "(none)",
            "host_names": "[" + c.hostNames.joined(separator: ", ") + "]",
            "tls_cert": c.tlsCertificatePath ?? "(generated)", "tls_key": c.tlsKeyPath ?? "(generated)",
            "http2_stream_window": String(c.http2StreamWindow), "max_blob_size": String(c.maxBlobSize),
            "min_free_space": c.minFreeSpace.map(String.init) ?? "auto",
            "direct_writes": String(c.directWrites), "upload_timeout": String(c.uploadTimeout),
            "read_timeout": String(c.readTimeout),
            "token_ttl": String(c.tokenLifetime), "auth_failure_limit": String(c.authFailureLimit),
            "max_connections": String(c.maxConnections), "max_connections_per_ip": String(c.maxConnectionsPerAddress),
            "response_memory": c.responseMemory.map(String.init) ?? "auto",
            "metrics_access": c.metricsAccess.rawValue,
            "trusted_proxies": "[" + c.trustedProxies.map(\.description).joined(separator: ", ") + "]",
            "backup_dir": c.backupDirectory, "shutdown_timeout": String(c.shutdownTimeout), "log_level": logLevel,
            "gc_grace": String(c.gcGrace), "gc_after_delete": String(c.gcAfterDelete), "gc_schedule": c.gcSchedule ?? "off",
            "untagged_grace": String(c.untaggedGrace),
            "event_retention_days": String(c.eventRetentionDays),
            "event_retention_count": String(c.eventRetentionCount),
            "audit_retention_days": String(c.auditRetentionDays),
        ]
        return Self.keys.map { ($0, values[$0] ?? "") }
    }

    /// Checks what single keys cannot: the certificate and key come together,
    /// and some listener is on.
    public func validated() throws -> ServerConfiguration {
        if (configuration.tlsCertificatePath == nil) != (configuration.tlsKeyPath == nil) {
            throw ConfigurationError(description: "'tls_cert' and 'tls_key' must be set together")
        }
        if configuration.listeners.isEmpty {
            throw ConfigurationError(
                description: "every listener is off ('http', 'https', 'private_http', 'private_https'): nothing would be served")
        }
        var configuration = configuration
        configuration.maintenanceInterval = min(30, max(1, configuration.uploadTimeout / 2))
        return configuration
    }
}
