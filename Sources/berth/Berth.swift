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
        subcommands: [Serve.self, RegistryCommand.self])
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the registry server.")

    @Option(help: "Data directory.") var dataDir: String = "./berth-data"
    @Option(help: "Plain HTTP/1.1 listener, ADDR:PORT, or 'off'.") var http: String = "127.0.0.1:5000"
    @Option(help: "TLS listener (HTTP/2 and HTTP/1.1 by ALPN), ADDR:PORT, or 'off'.") var https: String = "127.0.0.1:5443"
    @Option(name: .customLong("host-name"), help: "Extra host name for the generated certificate (repeatable).")
    var hostNames: [String] = []
    @Option(help: "Operator's TLS certificate (PEM).") var tlsCert: String?
    @Option(help: "Operator's TLS private key (PEM).") var tlsKey: String?
    @Option(help: "Largest blob accepted, in bytes.") var maxBlobSize: Int64 = 64 << 30
    @Option(help: "Seconds an idle upload lives before it expires.") var uploadTimeout: Double = 3600
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"

    func run() async throws {
        var configuration = ServerConfiguration()
        configuration.dataDir = dataDir
        configuration.http = try listener(http, "--http")
        configuration.https = try listener(https, "--https")
        configuration.hostNames = hostNames
        configuration.tlsCertificatePath = tlsCert
        configuration.tlsKeyPath = tlsKey
        configuration.maxBlobSize = maxBlobSize
        configuration.uploadTimeout = uploadTimeout
        configuration.maintenanceInterval = min(30, max(1, uploadTimeout / 2))
        var logger = Logger(label: "berth")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        try await BerthServer.run(configuration, logger: logger)
    }

    private func listener(_ text: String, _ flag: String) throws -> ServerConfiguration.Listener? {
        if text == "off" { return nil }
        guard let listener = ServerConfiguration.Listener(text) else {
            throw ValidationError("\(flag) must be ADDR:PORT or 'off', got '\(text)'")
        }
        return listener
    }
}

struct RegistryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry", abstract: "Manage registries offline (the server must not be running).",
        subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a registry.")
        @Argument(help: "Registry name.") var name: String
        @Option(help: "Data directory.") var dataDir: String = "./berth-data"

        func run() async throws {
            let store = try Store(directory: URL(fileURLWithPath: dataDir).appendingPathComponent("db").path)
            let registry = Registry(store: store)
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
