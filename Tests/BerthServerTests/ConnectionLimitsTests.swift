import NIOCore
import NIOEmbedded
import Testing

@testable import BerthServer

/// Connections count against their client address, IPv6 clients by their /64
/// (as the auth throttle counts them), until they close.
@Suite struct ConnectionLimitsTests {
    private let limits = ConnectionLimits(configuredTotal: 100, perAddress: 2, fileLimit: 100_000)

    private func connect(_ address: String) async throws -> (EmbeddedChannel, admitted: Bool) {
        let channel = EmbeddedChannel()
        try await channel.connect(to: SocketAddress(ipAddress: address, port: 40_000)).get()
        let refused: EventLoopFuture<Void>? = limits.refusal(channel)
        return (channel, refused == nil)
    }

    @Test func anIPv6SlashSixtyFourIsOneAddress() async throws {
        #expect(try await connect("2001:db8::1").admitted)
        #expect(try await connect("2001:db8::2").admitted)
        #expect(try await !connect("2001:db8::ffff:3").admitted)  // the same /64, at its share
        #expect(try await connect("2001:db8:0:1::1").admitted)  // another /64
        #expect(try await connect("192.0.2.1").admitted)
    }

    @Test func aClosedConnectionGivesItsPlaceBack() async throws {
        let (first, _) = try await connect("192.0.2.7")
        #expect(try await connect("192.0.2.7").admitted)
        #expect(try await !connect("192.0.2.7").admitted)
        _ = try first.finish()  // closes it
        #expect(try await connect("192.0.2.7").admitted)
    }
}
