import Crypto
import Foundation
import SwiftASN1
import X509

/// The TLS identity of the HTTPS listener: the operator's certificate and key
/// when configured, otherwise one generated at first start and kept in the data directory.
public struct TLSIdentity: Sendable {
    public var certificatePath: String
    public var keyPath: String

    /// Returns the configured identity, or creates (once) a self-signed one
    /// under `<dataDir>/tls` with SANs for localhost, 127.0.0.1, ::1 and `hostNames`.
    public static func ensure(dataDir: String, hostNames: [String]) throws -> TLSIdentity {
        let directory = URL(fileURLWithPath: dataDir).appendingPathComponent("tls").path
        let identity = TLSIdentity(certificatePath: directory + "/cert.pem", keyPath: directory + "/key.pem")
        let files = FileManager.default
        if files.fileExists(atPath: identity.certificatePath), files.fileExists(atPath: identity.keyPath) {
            return identity
        }
        try files.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("Berth")
            CommonName("Berth self-signed certificate")
        }
        var sans: [GeneralName] = [.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                                   .ipAddress(ASN1OctetString(contentBytes: ArraySlice(repeating: 0, count: 15) + [1]))]
        for host in hostNames where host != "localhost" {
            if let address = IPv4Address(host) {
                sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))))
            } else {
                sans.append(.dnsName(host))
            }
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: .init(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(825 * 86400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(sans)
            },
            issuerPrivateKey: .init(key))
        let keyData = Data(key.pemRepresentation.utf8)
        guard files.createFile(atPath: identity.keyPath, contents: keyData, attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown)
        }
        try Data(certificate.serializeAsPEM().pemString.utf8).write(to: URL(fileURLWithPath: identity.certificatePath))
        return identity
    }
}

/// Parses a dotted-quad IPv4 address into its four bytes.
private func IPv4Address(_ text: String) -> [UInt8]? {
    let parts = text.split(separator: ".")
    guard parts.count == 4 else { return nil }
    let bytes = parts.compactMap { UInt8($0) }
    return bytes.count == 4 ? bytes : nil
}
