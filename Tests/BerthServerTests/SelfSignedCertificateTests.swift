@testable import BerthServer
import Crypto
import Foundation
import Testing
import X509

@Suite struct SelfSignedCertificateTests {
    private func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("berth-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    private func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    @Test func aGoodPairIsKeptAndWrittenWithoutLeftovers() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        let pem = try read(first.certificatePath)
        _ = try Certificate(pemEncoded: pem)
        let mode = try FileManager.default.attributesOfItem(atPath: first.keyPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tls").sorted() == ["cert.pem", "key.pem"])
        _ = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        #expect(try read(first.certificatePath) == pem)
    }

    @Test func anEmptyCertificateIsReplacedNotFatal() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let identity = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        try Data().write(to: URL(fileURLWithPath: identity.certificatePath))
        _ = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        _ = try Certificate(pemEncoded: try read(identity.certificatePath))
        #expect(FileManager.default.fileExists(atPath: identity.certificatePath + ".replaced"))
    }

    @Test func aKeyThatIsNotTheCertificatesIsReplaced() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let identity = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        let old = try read(identity.certificatePath)
        try P256.Signing.PrivateKey().pemRepresentation.write(toFile: identity.keyPath, atomically: false, encoding: .utf8)
        _ = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        let certificate = try Certificate(pemEncoded: try read(identity.certificatePath))
        let key = try P256.Signing.PrivateKey(pemRepresentation: try read(identity.keyPath))
        #expect(try read(identity.certificatePath) != old)
        #expect(Certificate.PublicKey(key.publicKey) == certificate.publicKey)
    }

    @Test func aKeyOfAnotherKindIsLeftAlone() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let identity = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        let p384 = P384.Signing.PrivateKey().pemRepresentation
        try p384.write(toFile: identity.keyPath, atomically: false, encoding: .utf8)
        let pem = try read(identity.certificatePath)
        _ = try TLSIdentity.ensure(dataDir: dir, hostNames: [])
        #expect(try read(identity.certificatePath) == pem)
        #expect(try read(identity.keyPath) == p384)
    }
}
