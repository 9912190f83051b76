import Testing

@testable import BerthServer

/// Address ranges parse and match by prefix; the client behind trusted
/// proxies is the right-most forwarded address that is not one of them.
@Suite struct TrustedProxiesTests {
    private let trusted = ["10.0.0.0/8", "fd00::/8", "192.0.2.1"].compactMap(AddressRange.init)

    @Test func rangesParseAndMatch() throws {
        #expect(trusted.count == 3)
        let v4 = try #require(AddressRange("10.0.0.0/8"))
        #expect(v4.contains("10.255.3.4") && !v4.contains("11.0.0.1") && !v4.contains("fd00::1"))
        #expect(v4.contains("::ffff:10.1.2.3"))  // IPv4-mapped
        let odd = try #require(AddressRange("192.0.2.64/26"))
        #expect(odd.contains("192.0.2.127") && !odd.contains("192.0.2.128") && !odd.contains("192.0.2.63"))
        #expect(try #require(AddressRange("0.0.0.0/0")).contains("203.0.113.9"))
        #expect(try #require(AddressRange("fd00::/8")).contains("fdab::1"))
        #expect(AddressRange("192.0.2.1")?.description == "192.0.2.1" && AddressRange("fd00::/8")?.description == "fd00::/8")
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0.0/", "/8", "host.example", "10.0.0.0/8/1", "10.0.0.0/+8", ""] {
            #expect(AddressRange(bad) == nil, "\(bad)")
        }
    }

    @Test func theClientIsTheRightMostAddressNotTrusted() {
        func client(_ peer: String, _ lines: [String]) -> String {
            ForwardedForMiddleware.client(peer: peer, forwardedFor: lines, trusted: trusted)
        }
        #expect(client("10.1.1.1", ["198.51.100.7"]) == "198.51.100.7")
        #expect(client("10.1.1.1", ["203.0.113.1, 198.51.100.7, 10.2.2.2"]) == "198.51.100.7")
        #expect(client("10.1.1.1", ["203.0.113.1", "198.51.100.7, 10.2.2.2"]) == "198.51.100.7")  // two field lines
        #expect(client("10.1.1.1", ["10.3.3.3, 10.2.2.2"]) == "10.3.3.3")  // every hop trusted: the first
        #expect(client("10.1.1.1", []) == "10.1.1.1")
        #expect(client("10.1.1.1", ["unknown"]) == "10.1.1.1")  // nothing known beyond the proxy
        #expect(client("10.1.1.1", ["198.51.100.7, garbage, 10.2.2.2"]) == "10.2.2.2")
        #expect(client("203.0.113.5", ["198.51.100.7"]) == "203.0.113.5")  // not a trusted peer: ignored
        // Ports and brackets some proxies add.
        #expect(client("10.1.1.1", ["198.51.100.7:51234"]) == "198.51.100.7")
        #expect(client("10.1.1.1", ["[2001:db8::1]:443, 10.2.2.2"]) == "2001:db8::1")
        #expect(client("10.1.1.1", ["[2001:db8::1]"]) == "2001:db8::1")
        #expect(client("10.1.1.1", ["2001:db8::1"]) == "2001:db8::1")
    }
}
