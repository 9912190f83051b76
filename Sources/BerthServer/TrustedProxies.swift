import Foundation
import Hummingbird
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address range, `10.0.0.0/8`, `fd00::/8`, or one address.
struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// The network's bytes (4 or 16), and how many leading bits must match.
    let network: [UInt8]
    let prefixLength: Int

    init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let bytes = Self.bytes(String(parts[0])) else { return nil }
        let bits = bytes.count * 8
        if parts.count == 2 {
            guard parts[1].allSatisfy({ ("0"..."9").contains($0) }), let length = Int(parts[1]), (0...bits).contains(length)
            else { return nil }
            prefixLength = length
        } else {
            prefixLength = bits
        }
        network = bytes
    }

    var description: String {
        var text = [CChar](repeating: 0, count: 64)
        _ = network.withUnsafeBytes { inet_ntop(network.count == 4 ? AF_INET : AF_INET6, $0.baseAddress, &text, 64) }
        let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return prefixLength == network.count * 8 ? address : "\(address)/\(prefixLength)"
    }

    /// Whether `address` (text, as NIO prints it) is in the range; an
    /// IPv4-mapped IPv6 address is taken as its IPv4 address.
    func contains(_ address: String) -> Bool {
        guard let bytes = Self.bytes(address), bytes.count == network.count else { return false }
        var left = prefixLength
        for (a, b) in zip(bytes, network) where left > 0 {
            let mask: UInt8 = left >= 8 ? 0xff : ~(0xff >> UInt8(left))
            if a & mask != b & mask { return false }
            left -= 8
        }
        return true
    }

    /// The address's bytes (``ipAddressBytes(_:)``), an IPv4-mapped IPv6 address's as IPv4.
    static func bytes(_ text: String) -> [UInt8]? {
        guard let bytes = ipAddressBytes(text) else { return nil }
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return Array(bytes[12...])
        }
        return bytes
    }
}

/// The client address of a request that came through trusted proxies
/// (`trusted_proxies`): the right-most `X-Forwarded-For` entry that is not a
/// trusted proxy, when the peer itself is one.
///
/// Behind a TLS-terminating proxy every request's peer is the proxy: the
/// auth throttle, the audit log and the response-memory shares would see
/// one client. A header from a peer that is not trusted is ignored (anyone
/// can send one), and so is the part of it left of an entry that does not
/// parse. Connection limits stay with the peer: they count sockets.
struct ForwardedForMiddleware: RouterMiddleware {
    typealias Context = BerthRequestContext

    let trusted: [AddressRange]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.source = Self.client(peer: context.source, forwardedFor: request.headers[values: .xForwardedFor], trusted: trusted)
        return try await next(request, context)
    }

    /// The client behind `peer`, given the `X-Forwarded-For` field lines in order.
    static func client(peer: String, forwardedFor lines: [String], trusted: [AddressRange]) -> String {
        var client = peer
        guard isTrusted(peer, trusted) else { return peer }
        let hops = lines.flatMap { $0.split(separator: ",") }.map { address(of: String($0.trimmingHTTPWhitespace())) }
        for hop in hops.reversed() {
            guard AddressRange.bytes(hop) != nil else { break }  // not an address: what is left of it is unknown
            client = hop
            if !isTrusted(hop, trusted) { break }
        }
        return client
    }

    /// A hop's address without the port or brackets some proxies add
    /// (`192.0.2.1:51234`, `[2001:db8::1]:443`, `[2001:db8::1]`).
    static func address(of hop: String) -> String {
        if hop.hasPrefix("["), let close = hop.firstIndex(of: "]") {
            return String(hop[hop.index(after: hop.startIndex)..<close])
        }
        let colons = hop.filter { $0 == ":" }.count
        if colons == 1, let colon = hop.firstIndex(of: ":") { return String(hop[..<colon]) }
        return hop
    }

    private static func isTrusted(_ address: String, _ trusted: [AddressRange]) -> Bool {
        trusted.contains { $0.contains(address) }
    }
}
