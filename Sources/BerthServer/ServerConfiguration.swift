import BerthCore
import Foundation

/// Everything `berth serve` needs to run.
public struct ServerConfiguration: Sendable {
    public struct Listener: Sendable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `HOST:PORT` (or `[v6]:PORT`).
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65535).contains(port)
            else { return nil }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { return nil }
            self.init(host: host, port: port)
        }
    }

    public var dataDir: String = "./berth-data"
    /// Public listeners: plain HTTP/1.1, and TLS with HTTP/2 by ALPN.
    public var http: Listener? = Listener(host: "127.0.0.1", port: 5000)
    public var https: Listener? = Listener(host: "127.0.0.1", port: 5443)
    /// Private listeners (the isolated VPC's NIC): they serve every registry,
    /// including those whose public URI is off.
    public var privateHTTP: Listener?
    public var privateHTTPS: Listener?
    /// Host names (optionally `:port`) clients use for the public and private
    /// URIs; default: the first TLS (else plain) listener of that exposure.
    public var publicHost: String?
    public var privateHost: String?
    /// Extra host names for the generated certificate.
    public var hostNames: [String] = []
    /// An operator's certificate and key (PEM) instead of the generated one.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// The HTTP/2 receive window of each stream, in bytes (the connection's is four times it):
    /// the most of one upload a connection buffers, and, over the round trip, one stream's speed.
    public var http2StreamWindow: Int = HTTP2Tuning.defaultStreamWindow
    /// Largest blob accepted, in bytes.
    public var maxBlobSize: Int64 = 64 << 30
    /// Bytes uploads leave available on the data directory's file system, for
    /// the store's own records; nil: 2 % of the file system, 64 MiB to 1 GiB.
    public var minFreeSpace: Int64? = nil
    /// Connections the listeners accept in all (each listener its share),
    /// lowered to what the open-file limit leaves the store; also HTTP/2 streams open at once.
    public var maxConnections: Int = 10_000
    /// Connections one client address may hold open; also its open HTTP/2 streams.
    public var maxConnectionsPerAddress: Int = 1_000
    /// Bytes `/v2` response bodies may hold while their clients have not read them
    /// (a quarter per client address, at most 64 MiB per connection); nil: an
    /// eighth of the machine's memory, 64 MiB to 1 GiB (see ``ResponseBudget``).
    public var responseMemory: Int? = nil
    /// Who may read `/metrics`: by default a user with a global admin or
    /// viewer role (Prometheus sends its key as Basic credentials).
    public var metricsAccess: MetricsAccess = .authenticated
    /// Proxies whose `X-Forwarded-For` names the client (`trusted_proxies`); none by default.
    var trustedProxies: [AddressRange] = []
    /// Whether blob bytes bypass the page cache on their way to the disk
    /// (`O_DIRECT`; see ``ExtentFiles``).
    public var directWrites = true
    /// Seconds an upload may sit idle before it expires and its space is freed.
    public var uploadTimeout: Double = 3600
    /// Seconds a connection may send nothing while its request is read (a
    /// stalled upload), take none of a blob being pulled, leave its TLS
    /// handshake unfinished, or sit idle between requests, before it is
    /// closed; over HTTP/2 the stalled stream alone is reset.
    public var readTimeout: Double = 120
    /// Seconds an unreferenced extent is kept before it is swept.
    public var extentGracePeriod: Double = 3600
    /// Where `POST /api/v1/system/backups` writes; default `<data_dir>/backups`.
    public var backupDir: String?
    public var backupDirectory: String { backupDir ?? URL(fileURLWithPath: dataDir).appendingPathComponent("backups").path }
    /// Seconds a token from `/auth/token` is valid (at most 12 h).
    public var tokenLifetime: Double = 12 * 3600
    /// Failed authentications per minute from one source or on one key before 429.
    public var authFailureLimit: Int = 10
    /// Seconds in-flight requests may run on after SIGTERM.
    public var shutdownTimeout: Double = 30
    /// Seconds between maintenance passes.
    public var maintenanceInterval: Double = 30
    /// Seconds a blob nobody references is kept after its last upload, mount or read.
    public var gcGrace: Double = JobSettings().gcGrace
    /// A `gc_grace` below this is warned about at start: a slow push's layers
    /// could be collected before its manifest arrives.
    public static let shortGCGrace: Double = 600
    /// Seconds after a delete before garbage collection runs; 0 turns it off.
    public var gcAfterDelete: Double = JobSettings().gcAfterDelete
    /// Seconds after its push before a `delete_untagged` cleanup may delete an artifact.
    public var untaggedGrace: Double = JobSettings().untaggedGrace
    /// Garbage collection schedule until one is set through the API; nil: none.
    public var gcSchedule: String? = "15 3 * * *"
    /// Days the event log keeps events.
    public var eventRetentionDays: Int = 30
    /// Events the log keeps at most, whatever their age (about 2 GB of them).
    public var eventRetentionCount: Int = 10_000_000
    /// Days the audit log keeps entries.
    public var auditRetentionDays: Int = 365

    public init() {}
}

/// Who may scrape `/metrics` (`metrics_access`).
public enum MetricsAccess: String, Sendable {
    /// A global admin or viewer, with Basic credentials.
    case authenticated
    /// Anyone who reaches a listener: for a scraper on a closed network.
    case anonymous
}

/// Whether a listener serves a registry's public or private URI.
public enum Exposure: String, Sendable {
    case `public`, `private`
}

/// One bound listener: where, how, and for which URI.
struct ListenerSpec: Sendable {
    var listener: ServerConfiguration.Listener
    var tls: Bool
    var exposure: Exposure
    var scheme: String { tls ? "https" : "http" }
}

extension ServerConfiguration {
    var listeners: [ListenerSpec] {
        var specs: [ListenerSpec] = []
        if let http { specs.append(.init(listener: http, tls: false, exposure: .public)) }
        if let https { specs.append(.init(listener: https, tls: true, exposure: .public)) }
        if let privateHTTP { specs.append(.init(listener: privateHTTP, tls: false, exposure: .private)) }
        if let privateHTTPS { specs.append(.init(listener: privateHTTPS, tls: true, exposure: .private)) }
        return specs
    }

    /// The host clients use for `exposure`, or nil when no listener has it. A
    /// listener on every address (`0.0.0.0`, `::`) names no host a client can
    /// use: then the first of `host_names`, else the machine's name.
    func endpoint(_ exposure: Exposure) -> String? {
        if let configured = exposure == .public ? publicHost : privateHost { return configured }
        let candidates = listeners.filter { $0.exposure == exposure }.sorted { $0.tls && !$1.tls }
        return candidates.first.map { spec in
            var host = spec.listener.host
            if host == "0.0.0.0" || host == "::" { host = hostNames.first ?? Self.machineName() }
            if host.contains(":") { host = "[\(host)]" }
            return "\(host):\(spec.listener.port)"
        }
    }

    /// The names a generated certificate must carry besides localhost and the
    /// loopback addresses, those the operator configured: `host_names` and the
    /// hosts of `public_host` and `private_host`. One that misses any is
    /// replaced at start.
    var certificateNames: [String] {
        Self.unique(hostNames + [publicHost, privateHost].compactMap { $0.map(Self.hostPart) })
    }

    /// Names a new certificate carries too, derived rather than configured:
    /// each TLS listener's own address and, for a TLS listener on every address
    /// with no `host_names`, the machine's name (the host ``endpoint(_:)``
    /// advertises then). A certificate missing one is kept (a renamed machine
    /// must not invalidate what clients trust).
    var derivedCertificateNames: [String] {
        var names: [String] = []
        for spec in listeners where spec.tls {
            let host = spec.listener.host
            if host == "0.0.0.0" || host == "::" {
                if hostNames.isEmpty { names.append(Self.machineName()) }
            } else {
                names.append(host)
            }
        }
        return Self.unique(names)
    }

    private static func unique(_ names: [String]) -> [String] {
        var seen = Set<String>()
        return names.filter { isCertificateName($0) && seen.insert($0.lowercased()).inserted }
    }

    /// The host of `host[:port]` or `[v6]:port`.
    static func hostPart(_ text: String) -> String {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            return String(text[text.index(after: text.startIndex)..<close])
        }
        let colons = text.count { $0 == ":" }
        return colons == 1 ? String(text.prefix { $0 != ":" }) : text
    }

    /// Whether `name` can stand in a certificate: an IP address, or a DNS name
    /// (letters, digits and hyphens in dot-separated labels, a leading `*.` allowed).
    public static func isCertificateName(_ name: String) -> Bool {
        if ipAddressBytes(name) != nil { return true }
        let labels = (name.hasPrefix("*.") ? String(name.dropFirst(2)) : name).split(separator: ".", omittingEmptySubsequences: false)
        return name.utf8.count <= 253 && !labels.isEmpty
            && labels.allSatisfy { label in
                (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                    && label.allSatisfy { $0 == "-" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            }
    }

    /// This machine's host name (`gethostname`, no DNS lookup).
    static func machineName() -> String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
