#if canImport(Glibc)
import Glibc
#endif
import BerthStorage
import Crypto
import Foundation
import Logging
import SwiftASN1
import X509

/// The TLS identity of the HTTPS listener: the operator's certificate and key
/// when configured, otherwise one generated at first start and kept in the data directory.
public struct TLSIdentity: Sendable {
    public var certificatePath: String
    public var keyPath: String

    /// Days before its expiry that a generated certificate is replaced.
    static let renewalDays = 30

    /// Returns the generated identity under `<dataDir>/tls`: a self-signed
    /// certificate with SANs for localhost, 127.0.0.1, ::1 and `hostNames`,
    /// and name constraints to the same names.
    /// The one there is kept unless it misses one of `hostNames` or expires
    /// within ``renewalDays`` days: then it is moved to `cert.pem.replaced`
    /// (its key to `key.pem.replaced`) and a new one is made, so adding a
    /// host name to the configuration and restarting is enough.
    /// `derivedNames` go into a new certificate as well, but one that misses
    /// them is kept.
    public static func ensure(
        dataDir: String, hostNames: [String], derivedNames: [String] = [], logger: Logger? = nil
    ) throws -> TLSIdentity {
        let directory = URL(fileURLWithPath: dataDir).appendingPathComponent("tls").path
        let identity = TLSIdentity(certificatePath: directory + "/cert.pem", keyPath: directory + "/key.pem")
        let files = FileManager.default
        if files.fileExists(atPath: identity.certificatePath), files.fileExists(atPath: identity.keyPath) {
            // Files that cannot be read fail the start, as before; a pair that
            // reads but is not a pair (left empty or short by a power cut before
            // writes were durable) is replaced, not a reason for every start to fail.
            let pem = try String(contentsOfFile: identity.certificatePath, encoding: .utf8)
            let keyPEM = try String(contentsOfFile: identity.keyPath, encoding: .utf8)
            guard let reason = try damage(pem, keyPEM: keyPEM) ?? replacementReason(pem, hostNames: hostNames, now: Date())
            else { return identity }
            for path in [identity.certificatePath, identity.keyPath] {
                _ = try? files.removeItem(atPath: path + ".replaced")
                try files.moveItem(atPath: path, toPath: path + ".replaced")
            }
            logger?.notice(
                "generated TLS certificate replaced", metadata: ["reason": "\(reason)", "old": "\(identity.certificatePath).replaced"])
        }
        try files.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("Berth")
            CommonName("Berth self-signed certificate")
        }
        // The loopback names, then each of `hostNames` once.
        var dnsNames = ["localhost"]
        var addresses: [[UInt8]] = [[127, 0, 0, 1], Array(repeating: 0, count: 15) + [1]]
        for host in hostNames + derivedNames {
            if let address = ipAddressBytes(host) {
                if !addresses.contains(address) { addresses.append(address) }
            } else if !dnsNames.contains(host.lowercased()) {
                dnsNames.append(host.lowercased())
            }
        }
        let sans = dnsNames.map { GeneralName.dnsName($0) } + addresses.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
        // The certificate is its own CA (clients are told to trust it as one),
        // so it may sign for nothing but these names: its key, which backups
        // hold too, cannot mint a certificate that clients trust for any other site.
        let constraints = NameConstraints(
            permittedDNSDomains: dnsNames.map { $0.hasPrefix("*.") ? String($0.dropFirst(2)) : $0 },
            permittedIPRanges: addresses.map { ASN1OctetString(contentBytes: ArraySlice($0 + Array(repeating: 0xff, count: $0.count))) })
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
                Critical(constraints)
            },
            issuerPrivateKey: .init(key))
        // Each file is written aside, synced and renamed into place, the key
        // first: a power cut leaves the old pair, a new key beside the old
        // certificate (which the next start replaces), or the new pair, never
        // an empty file.
        try FileSync.replace(identity.keyPath, with: Array(key.pemRepresentation.utf8), mode: 0o600)
        try FileSync.replace(identity.certificatePath, with: Array(try certificate.serializeAsPEM().pemString.utf8), mode: 0o644)
        return identity
    }

    /// Why the generated pair's files are not a usable pair: a certificate that
    /// does not parse, a key file holding no PEM document, or a P-256 key that
    /// is not the certificate's; nil otherwise. A key of another kind (an
    /// operator's pair copied there) is left alone.
    static func damage(_ pem: String, keyPEM: String) -> String? {
        guard let certificate = try? Certificate(pemEncoded: pem) else { return "its certificate does not parse" }
        guard (try? PEMDocument(pemString: keyPEM)) != nil else { return "its key does not parse" }
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: keyPEM),
            Certificate.PublicKey(key.publicKey) != certificate.publicKey
        {
            return "its key is not the certificate's"
        }
        return nil
    }

    /// Why a generated certificate must be replaced: a host name it does not
    /// name, or its expiry within ``renewalDays`` days; nil when it serves.
    static func replacementReason(_ pem: String, hostNames: [String], now: Date) throws -> String? {
        let certificate = try Certificate(pemEncoded: pem)
        if certificate.notValidAfter < now.addingTimeInterval(Double(renewalDays) * 86_400) {
            return "it expires at \(certificate.notValidAfter)"
        }
        var dnsNames = Set<String>()
        var addresses = Set<[UInt8]>()
        for name in try certificate.extensions.subjectAlternativeNames ?? SubjectAlternativeNames([]) {
            switch name {
            case .dnsName(let host): dnsNames.insert(host.lowercased())
            case .ipAddress(let bytes): addresses.insert(Array(bytes.bytes))
            default: break
            }
        }
        let missing = hostNames.filter { host in
            if let address = ipAddressBytes(host) { return !addresses.contains(address) }
            return !dnsNames.contains(host.lowercased())
        }
        return missing.isEmpty ? nil : "it does not name \(missing.joined(separator: ", "))"
    }
}

/// The bytes of an IPv4 or IPv6 address; nil for a host name.
func ipAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}
