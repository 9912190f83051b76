/// Everything `berth serve` needs to run.
import Foundation

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
    public var http: Listener? = Listener(host: "127.0.0.1", port: 5000)
    public var https: Listener? = Listener(host: "127.0.0.1", port: 5443)
    /// Extra host names for the generated certificate.
    public var hostNames: [String] = []
    /// An operator's certificate and key (PEM) instead of the generated one.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// Largest blob accepted, in bytes.
    public var maxBlobSize: Int64 = 64 << 30
    /// Seconds an upload may sit idle before it expires and its space is freed.
    public var uploadTimeout: Double = 3600
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

    public init() {}
}
