import BerthCore
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP2

/// How many connections the listeners hold open, in all and per client address.
///
/// Every connection is a file descriptor, and the store needs descriptors too
/// (RocksDB's tables and log, an extent file per read or write in flight):
/// without a bound, a client opening idle connections filled the table, and
/// pushes failed with "Too many open files" while the accept loop spun on a
/// core. The listeners stop accepting at their share of `total` (the kernel
/// queues further connects), and a connection from an address that already
/// has `perAddress` open is closed as it is set up (before a TLS handshake),
/// so one client cannot take them all.
///
/// HTTP/2 streams are bounded by the same two numbers: each costs about
/// 30 KB of server memory while it is open, and a client holding 64 per
/// connection on its share of connections would hold two gigabytes (a body
/// trickled a byte at a time keeps a stream open). A stream beyond its
/// address's share or the total is refused with RST_STREAM(REFUSED_STREAM),
/// which tells the client nothing ran and it may retry.
final class ConnectionLimits: Sendable {
    /// Connections all listeners together accept; also HTTP/2 streams open at once.
    let total: Int
    /// Connections one client address (an IPv6 client: its /64) may hold open; also its open HTTP/2 streams.
    let perAddress: Int
    private let open = NIOLockedValueBox([String: Int]())
    private let streams = NIOLockedValueBox(StreamCounts())

    private struct StreamCounts {
        var total = 0
        var byAddress: [String: Int] = [:]
    }

    /// Why a connection was closed as it was set up.
    struct AddressAtLimit: Error {}

    /// `configuredTotal` is lowered to what the process's descriptor limit
    /// leaves after a quarter of it (at least 256) is kept for the store.
    init(configuredTotal: Int, perAddress: Int, fileLimit: Int) {
        let reserve = max(256, fileLimit / 4)
        self.total = max(16, min(configuredTotal, fileLimit - reserve))
        self.perAddress = perAddress
    }

    /// What each of `listeners` listeners accepts.
    func perListener(_ listeners: Int) -> Int { max(8, total / max(1, listeners)) }

    /// Counts `channel` against its client address until it closes; false,
    /// counting nothing, when that address holds its share already.
    private func admit(_ channel: any Channel) -> Bool {
        // IPv6 clients by their /64, as the auth throttle counts them: one host holds a whole /64.
        guard let address = channel.remoteAddress?.ipAddress.map(AuthThrottle.sourceName) else { return true }
        let admitted = open.withLockedValue { open in
            guard open[address, default: 0] < perAddress else { return false }
            open[address, default: 0] += 1
            return true
        }
        if admitted { channel.closeFuture.whenComplete { _ in self.release(address) } }
        return admitted
    }

    /// A listener's setup of `channel` when its address holds its share: the
    /// channel closed and the setup failed. Nil, counting the channel, otherwise.
    func refusal<Value>(_ channel: any Channel) -> EventLoopFuture<Value>? {
        guard !admit(channel) else { return nil }
        channel.close(promise: nil)
        return channel.eventLoop.makeFailedFuture(AddressAtLimit())
    }

    /// Counts the HTTP/2 `stream` against its connection's client address and
    /// the total until it closes; false, counting nothing, when either is at its limit.
    func admitStream(_ stream: any Channel) -> Bool {
        let address = stream.parent?.remoteAddress?.ipAddress.map(AuthThrottle.sourceName)
        let admitted = streams.withLockedValue { counts in
            guard counts.total < total else { return false }
            if let address {
                guard counts.byAddress[address, default: 0] < perAddress else { return false }
                counts.byAddress[address, default: 0] += 1
            }
            counts.total += 1
            return true
        }
        if admitted {
            stream.closeFuture.whenComplete { _ in
                self.streams.withLockedValue { counts in
                    counts.total -= 1
                    guard let address else { return }
                    let left = counts.byAddress[address, default: 1] - 1
                    counts.byAddress[address] = left > 0 ? left : nil
                }
            }
        }
        return admitted
    }

    private func release(_ address: String) {
        open.withLockedValue { open in
            let left = open[address, default: 1] - 1
            open[address] = left > 0 ? left : nil
        }
    }

    /// Raises the soft limit on open files to the hard one (what `ulimit -n`
    /// or systemd's `LimitNOFILE` allows) and returns the limit in force.
    static func raiseFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: min(limit.rlim_cur, rlim_t(Int32.max)))  // RLIM_INFINITY is all ones
    }
}

/// Closes an HTTP/1.1 connection whose socket stays unwritable for `timeout`:
/// its client reads none of what the server sends (it pipelined requests and
/// stopped reading). Otherwise the server waits in its write forever, holding
/// the connection and megabytes of kernel socket buffers. A response's writer
/// waits for writability before each write, so a client that takes one write
/// (a blob chunk: 1 MiB) per `timeout` keeps its connection, as a blob GET's
/// own stall rule does.
final class WriteStallHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private var stall: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        stall?.cancel()
        stall = nil
        if !context.channel.isWritable {
            let channel = context.channel
            stall = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stall?.cancel()
        stall = nil
        context.fireChannelInactive()
    }
}

/// Refuses an HTTP/2 stream over ``ConnectionLimits``' shares: once the stream
/// is active it answers RST_STREAM(REFUSED_STREAM) (RFC 9113 §8.7: nothing
/// was processed, the client may retry) and passes nothing it reads on, so
/// the stream's request never reaches the application.
final class RefusedStreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.rstStream(.refusedStream)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
