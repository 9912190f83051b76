"""HTTP/2 on the TLS port, frame by frame: the settings Berth announces
(flow-control windows large enough for uploads, a larger frame size, a bounded
number of streams), the connection window it grants, a large upload in big
DATA frames, and a graceful close (GOAWAY) when the server stops."""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import struct
import time

from helpers import MiB, random_bytes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_CONCURRENT_STREAMS = 0x4, 0x5, 0x3


class H2:
    """A minimal HTTP/2 client connection over TLS with ALPN h2."""

    def __init__(self, server):
        ctx = ssl.create_default_context(cafile=server.cert_path)
        ctx.set_alpn_protocols(["h2"])
        host, port = server.tls_host.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.buffer = b""
        self.sock.sendall(PREFACE + self.frame(SETTINGS, 0, 0, b""))

    @staticmethod
    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    def read_frame(self):
        """(type, flags, stream, payload), or None once the server closed."""
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags = self.buffer[3], self.buffer[4]
        stream = struct.unpack(">I", self.buffer[5:9])[0] & 0x7FFFFFFF
        payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
        return kind, flags, stream, payload

    def server_settings(self) -> dict:
        while True:
            f = self.read_frame()
            assert f is not None, "connection closed before the server's SETTINGS"
            if f[0] == SETTINGS and not f[1] & ACK:
                self.sock.sendall(self.frame(SETTINGS, ACK, 0, b""))
                p = f[3]
                return {struct.unpack(">H", p[i : i + 2])[0]: struct.unpack(">I", p[i + 2 : i + 6])[0] for i in range(0, len(p), 6)}

    def close(self):
        self.sock.close()


def literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def test_settings_announce_large_windows(server):
    c = H2(server)
    try:
        settings = c.server_settings()
    finally:
        c.close()
    assert settings.get(INITIAL_WINDOW_SIZE) == 1 * MiB, settings  # http2_stream_window's default
    assert settings.get(MAX_FRAME_SIZE, 16384) >= 256 * 1024, settings
    assert 1 <= settings.get(MAX_CONCURRENT_STREAMS, 0) <= 128, settings


def test_stream_window_is_a_setting(make_server):
    """`http2_stream_window` sets SETTINGS_INITIAL_WINDOW_SIZE (default 1 MiB,
    like Go's HTTP/2 server), and the connection's window follows at four times it."""
    server = make_server(label="h2-window", extra_args=["--http2-stream-window", str(8 * MiB)])
    auth = "Basic " + base64.b64encode(server.admin_arg.encode()).decode()
    c = H2(server)
    try:
        settings = c.server_settings()
        # The connection window starts at 65,535 (RFC 9113 §6.9.2); the server
        # raises it once data arrives: send the start of an upload's body.
        headers = (
            literal(":method", "POST") + literal(":scheme", "https") + literal(":authority", "localhost")
            + literal(":path", "/v2/h2window/app/blobs/uploads/") + literal("authorization", auth)
        )
        c.sock.sendall(c.frame(HEADERS, END_HEADERS, 1, headers) + c.frame(DATA, 0, 1, bytes(16384)))
        c.sock.settimeout(10)
        increment = None
        while increment is None:
            f = c.read_frame()
            assert f is not None, "connection closed before a connection WINDOW_UPDATE"
            if f[0] == WINDOW_UPDATE and f[2] == 0:
                increment = struct.unpack(">I", f[3])[0] & 0x7FFFFFFF
    finally:
        c.close()
    assert settings.get(INITIAL_WINDOW_SIZE) == 8 * MiB, settings
    assert 65535 - 16384 + increment == 32 * MiB, increment


def test_upload_in_large_frames_beyond_the_default_windows(server, reg):
    """A 24 MiB blob sent as 1 MiB DATA frames: the client never exceeds the
    windows the server granted, and the server keeps granting them (stream
    and connection WINDOW_UPDATEs) until the blob is stored and verified."""
    blob = random_bytes(24 * MiB)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    auth = "Basic " + base64.b64encode(server.admin_arg.encode()).decode()
    c = H2(server)
    try:
        settings = c.server_settings()
        frame_size = settings[MAX_FRAME_SIZE]
        stream_window = settings[INITIAL_WINDOW_SIZE]
        connection_window = 65535
        headers = (
            literal(":method", "POST") + literal(":scheme", "https") + literal(":authority", "localhost")
            + literal(":path", f"/v2/{reg}/h2frames/blobs/uploads/?digest={digest}")
            + literal("authorization", auth) + literal("content-type", "application/octet-stream")
            + literal("content-length", str(len(blob)))
        )
        c.sock.sendall(c.frame(HEADERS, END_HEADERS, 1, headers))
        sent, status, updates = 0, None, 0
        c.sock.settimeout(30)
        while status is None:
            while sent < len(blob) and min(stream_window, connection_window) > 0:
                n = min(frame_size, stream_window, connection_window, len(blob) - sent)
                flags = END_STREAM if sent + n == len(blob) else 0
                c.sock.sendall(c.frame(DATA, flags, 1, blob[sent : sent + n]))
                sent, stream_window, connection_window = sent + n, stream_window - n, connection_window - n
            f = c.read_frame()
            assert f is not None, f"connection closed after {sent} bytes"
            kind, flags, stream, payload = f
            if kind == WINDOW_UPDATE:
                updates += 1
                increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if stream == 0:
                    connection_window += increment
                else:
                    stream_window += increment
            elif kind == HEADERS and stream == 1:
                status = payload  # HPACK-encoded: checked below through a plain request
            elif kind == GOAWAY:
                raise AssertionError(f"GOAWAY after {sent} bytes: {payload!r}")
            elif kind == PING and not flags & ACK:
                c.sock.sendall(c.frame(PING, ACK, 0, payload))
        assert sent == len(blob)
        # 201 is not in HPACK's static table: the server sends `:status` (index 8)
        # as a literal with incremental indexing, the value "201" plain or Huffman-coded.
        assert status.startswith((b"\x48\x03201", b"\x48\x82\x10\x03")), status
        assert updates > 0
        # The biggest grant: the connection window was raised well beyond 64 KiB.
        assert connection_window + sent > 4 * MiB
    finally:
        c.close()
    r = server.client().get(f"{server.url}/v2/{reg}/h2frames/blobs/{digest}")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest[7:]


def test_sigterm_sends_goaway_and_exits_promptly(make_server):
    """An idle HTTP/2 connection gets a GOAWAY and is closed when the server
    stops; it does not hold the shutdown."""
    server = make_server(label="h2-stop")
    c = H2(server)
    try:
        c.server_settings()
        started = time.monotonic()
        server.proc.send_signal(15)
        kinds = []
        c.sock.settimeout(10)
        while (f := c.read_frame()) is not None:
            kinds.append(f[0])
        c.close()  # as clients do on GOAWAY and end of stream
        assert GOAWAY in kinds, kinds
        assert server.terminate(timeout=10) == 0
        assert time.monotonic() - started < 3, time.monotonic() - started
    finally:
        c.close()
