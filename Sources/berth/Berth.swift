import ArgumentParser
import BerthCore
import BerthServer
import BerthStorage
import Foundation
import Logging

@main
struct Berth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "A container registry appliance.",
        subcommands: [Serve.self, Initialize.self, ConfigCommand.self, RegistryCommand.self, BackupCommand.self, RestoreCommand.self])

    /// Berth writes every time in UTC. Unless `TZ` names a zone, the process
    /// runs in GMT: Foundation then resolves the current time zone (which
    /// Hummingbird's date header asks for) without ICU, whose zone tables
    /// would otherwise stay resident (1 MiB of RSS). Set before any thread starts.
    static func main() async {
        if getenv("TZ") == nil { setenv("TZ", "GMT", 1) }
        await main(nil)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the registry server.",
        discussion: "Settings come from, in rising precedence: embedded defaults, --config FILE, BERTH_* variables, flags.")

    @OptionGroup var settings: Settings

    func run() async throws {
        let (configuration, logLevel) = try settings.load()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        // JSON lines on standard error; no global logging bootstrap.
        let logger = Logger(label: "berth") { JSONLogHandler(label: $0, level: level) }
        for warning in ConfigurationLoader.unknownVariableWarnings(in: ProcessInfo.processInfo.environment) {
            logger.warning("\(warning)")
        }
        do {
            try await BerthServer.run(configuration, logger: logger)
        } catch {
            // The store is flushed and its pool stopped. A listener that had
            // bound still releases the server's objects on its event loop,
            // the store's last reference among them: its RocksDB close would
            // race exit's static destructors (a crash, seen after a failed
            // bind). Leave as a kill would; every acknowledged write is synced.
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            _exit(1)
        }
    }
}

/// Every setting as a flag, and the file; shared by the commands that read configuration.
struct Settings: ParsableArguments {
    @Option(help: "YAML configuration file.") var config: String?
    @Option(help: "Data directory (default ./berth-data).") var dataDir: String?
    @Option(help: "Plain HTTP/1.1 listener, ADDR:PORT or 'off' (default 127.0.0.1:5000).") var http: String?
    @Option(help: "TLS listener, HTTP/2 and HTTP/1.1 by ALPN, ADDR:PORT or 'off' (default 127.0.0.1:5443).")
    var https: String?
    @Option(help: "Private plain HTTP listener (serves registries whose public URI is off), ADDR:PORT.")
    var privateHttp: String?
    @Option(help: "Private TLS listener, ADDR:PORT.") var privateHttps: String?
    @Option(help: "Host[:port] clients use for the public URI.") var publicHost: String?
    @Option(help: "Host[:port] clients use for the private URI.") var privateHost: String?
    @Option(name: .customLong("host-name"), help: "A host name for the generated certificate (repeatable; replaces host_names).")
    var hostNames: [String] = []
    @Option(help: "Operator's TLS certificate (PEM).") var tlsCert: String?
    @Option(help: "Operator's TLS private key (PEM).") var tlsKey: String?
    @Option(help: "HTTP/2 receive window per stream in bytes, the connection's four times it (default 1048576).")
    var http2StreamWindow: String?
    @Option(help: "Largest blob accepted, in bytes (default 64 GiB).") var maxBlobSize: String?
    @Option(help: "true or false: blob bytes bypass the page cache on their way to the disk (default true).")
    var directWrites: String?
    @Option(help: "Seconds an idle upload lives before it expires (default 3600).") var uploadTimeout: String?
    @Option(help: "Seconds a request body may stall, or a connection sit idle, before it is closed (default 120).")
    var readTimeout: String?
    @Option(help: "Seconds a registry token is valid, at most 43200 (default 43200).") var tokenTtl: String?
    @Option(help: "Failed authentications per minute from one source or key before 429 (default 10).")
    var authFailureLimit: String?
    @Option(help: "Connections the listeners accept in all, lowered to what the open-file limit allows (default 10000).")
    var maxConnections: String?
    @Option(help: "Connections, and HTTP/2 streams, one client address may hold open (default 1000).") var maxConnectionsPerIp: String?
    @Option(help: "Bytes response bodies may hold until their clients read them, or 'auto' (an eighth of memory, 64 MiB to 1 GiB).")
    var responseMemory: String?
    @Option(help: "Who may read /metrics: authenticated (a global admin or viewer, the default) or anonymous.")
    var metricsAccess: String?
    @Option(
        name: .customLong("trusted-proxy"),
        help: "A proxy (address or range) whose X-Forwarded-For names the client (repeatable; replaces trusted_proxies).")
    var trustedProxies: [String] = []
    @Option(help: "Where online backups go (default <data-dir>/backups).") var backupDir: String?
    @Option(help: "Seconds in-flight requests may run on after SIGTERM (default 30).") var shutdownTimeout: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?
    @Option(help: "Seconds an unreferenced blob is kept after its last upload, mount or read (default 3600).")
    var gcGrace: String?
    @Option(help: "Seconds after a delete before garbage collection runs, 0 = never (default 60).") var gcAfterDelete: String?
    @Option(help: "Seconds after its push before delete_untagged may delete an artifact (default 7200).")
    var untaggedGrace: String?
    @Option(help: "Garbage collection schedule, 5-field cron in UTC or 'off' (default '15 3 * * *').") var gcSchedule: String?
    @Option(help: "Bytes uploads leave free on the data directory's file system, or 'auto' (2 % of it, 64 MiB to 1 GiB).")
    var minFreeSpace: String?
    @Option(help: "Days the event log keeps events (default 30).") var eventRetentionDays: String?
    @Option(help: "Events the event log keeps at most (default 10000000).") var eventRetentionCount: String?
    @Option(help: "Days the audit log keeps entries (default 365).") var auditRetentionDays: String?

    /// The effective configuration and log level.
    func load() throws -> (ServerConfiguration, String) {
        var loader = ConfigurationLoader()
        do {
            if let config { try loader.apply(file: config) }
            try loader.apply(environment: ProcessInfo.processInfo.environment)
            let flags: [(String, String?)] = [
                ("data_dir", dataDir), ("http", http), ("https", https), ("private_http", privateHttp),
                ("private_https", privateHttps), ("public_host", publicHost), ("private_host", privateHost),
                ("host_names", hostNames.isEmpty ? nil : hostNames.joined(separator: ",")),
                ("tls_cert", tlsCert), ("tls_key", tlsKey),
                ("http2_stream_window", http2StreamWindow), ("max_blob_size", maxBlobSize), ("min_free_space", minFreeSpace),
                ("direct_writes", directWrites),
                ("upload_timeout", uploadTimeout), ("read_timeout", readTimeout), ("token_ttl", tokenTtl),
                ("auth_failure_limit", authFailureLimit),
                ("max_connections", maxConnections), ("max_connections_per_ip", maxConnectionsPerIp),
                ("response_memory", responseMemory), ("metrics_access", metricsAccess),
                ("trusted_proxies", trustedProxies.isEmpty ? nil : trustedProxies.joined(separator: ",")), ("backup_dir", backupDir),
                ("gc_grace", gcGrace), ("gc_after_delete", gcAfterDelete), ("gc_schedule", gcSchedule),
                ("untagged_grace", untaggedGrace),
                ("event_retention_days", eventRetentionDays), ("event_retention_count", eventRetentionCount),
                ("audit_retention_days", auditRetentionDays),
                ("shutdown_timeout", shutdownTimeout), ("log_level", logLevel),
            ]
            for case let (key, value?) in flags { try loader.set(key, value) }
            return (try loader.validated(), loader.logLevel)
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }
    }
}

struct Initialize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "First boot: create the data directory, the TLS certificate and the bootstrap admin, then exit.",
        discussion: "Idempotent: what exists is kept. The server does the same at start; this runs it ahead (systemd ExecStartPre).")

    @OptionGroup var settings: Settings

    func run() async throws {
        let (configuration, logLevel) = try settings.load()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        // JSON lines on standard error, as `serve` writes them (this runs as ExecStartPre: both reach the journal).
        try await BerthServer.initialize(configuration, logger: Logger(label: "berth") { JSONLogHandler(label: $0, level: level) })
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Work with configuration files.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a configuration file and print the effective settings (environment included).")
        @Argument(help: "The YAML file.") var file: String

        func run() async throws {
            var loader = ConfigurationLoader()
            do {
                try loader.apply(file: file)
                try loader.apply(environment: ProcessInfo.processInfo.environment)
                let unknown = ConfigurationLoader.unknownVariableWarnings(in: ProcessInfo.processInfo.environment)
                for warning in try unknown + BerthServer.check(try loader.validated()) {
                    FileHandle.standardError.write(Data("warning: \(warning)\n".utf8))
                }
            } catch let error as ConfigurationError {
                throw ValidationError(error.description)
            }
            print(loader.effective().map { "\($0.key): \($0.value)" }.joined(separator: "\n"))
        }
    }
}

struct RegistryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry", abstract: "Manage registries offline (the server must not be running).",
        subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a registry.", discussion: "Before the first start too: the data directory is created if missing.")
        @Argument(help: "Registry name.") var name: String
        @OptionGroup var location: DataDirectoryOptions

        func run() async throws {
            let store = try location.openStore(creating: true).store
            let registry = try Registry(
                store: store, releaseRegistry: Registry.release(identity: try Identity(store: store), jobLog: try JobLog(store: store)))
            do {
                let record = try await registry.createRegistry(name)
                print("created registry \(record.name)")
            } catch let error as RegistryError {
                try await store.shutdown()
                throw ValidationError(error.message)
            }
            try await store.shutdown()
        }
    }
}

/// Where the offline commands find the data directory: `--data-dir`, else
/// the configuration's (`--config` file, then `BERTH_DATA_DIR`), else ./berth-data,
/// as `serve` would find it.
struct DataDirectoryOptions: ParsableArguments {
    @Option(help: "YAML configuration file whose data_dir to use.") var config: String?
    @Option(help: "Data directory (default: the configuration's, else ./berth-data).") var dataDir: String?

    func resolved() throws -> String {
        var loader = ConfigurationLoader()
        do {
            if let config { try loader.apply(file: config) }
            try loader.apply(environment: ProcessInfo.processInfo.environment)
            if let dataDir { try loader.set("data_dir", dataDir) }
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }
        return loader.configuration.dataDir
    }

    /// The data directory and its store. Without `creating`, a directory that
    /// holds none is an error rather than a new, empty store.
    func openStore(creating: Bool) throws -> (store: Store, directory: String) {
        let directory = try resolved()
        let db = URL(fileURLWithPath: directory).appendingPathComponent("db").path
        if !FileManager.default.fileExists(atPath: db + "/CURRENT") {
            guard creating else {
                throw ValidationError("no Berth store in '\(directory)' (no db/ there): give --data-dir or --config of an installation")
            }
            // As `berth init` makes it: the data directory is the service's alone.
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        return (try Store(directory: db), directory)
    }
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up a data directory whose server is stopped.",
        discussion: "While the server runs, the data directory is locked: take an online backup with POST /api/v1/system/backups.")
    @OptionGroup var location: DataDirectoryOptions
    @Option(help: "Destination directory (must not exist).") var to: String

    func run() async throws {
        // A backup of a store made up on the spot would be an empty one reported as a success.
        let (store, directory) = try location.openStore(creating: false)
        do {
            let summary = try await Backup.create(store: store, dataDir: directory, destination: to)
            print("backed up \(summary.artifacts.count) artifacts and \(summary.tags) tags to \(summary.path)")
        } catch let error as BackupError {
            try await store.shutdown()
            throw ValidationError(error.description)
        }
        try await store.shutdown()
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore", abstract: "Restore a backup into an empty data directory.")
    @Option(help: "The backup directory.") var from: String
    @Option(help: "Data directory to create (must be empty or absent).") var dataDir: String

    func run() async throws {
        do {
            try Backup.restore(from: from, into: dataDir)
            print("restored \(from) into \(dataDir)")
        } catch let error as BackupError {
            throw ValidationError(error.description)
        }
    }
}
