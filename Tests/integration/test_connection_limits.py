"""Connections are bounded (docs/architecture.md, "Connections"): one client
address holds at most `max_connections_per_ip`, the listeners accept at most
`max_connections` (lowered to what the open-file limit leaves the store), and
an HTTP/1.1 client that reads none of its responses for `read_timeout` is
disconnected. Each test drives the real server with raw sockets."""

from __future__ import annotations

import select
import socket
import time

from conftest import BerthServer
from helpers import MiB, assert_status, random_bytes, sha256_digest, with_query

REG = "conn"


def open_raw(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(s)
    return sockets


def closed_by_server(sockets: list[socket.socket], wait: float = 2.0) -> list[socket.socket]:
    """The sockets the server closed within `wait` seconds (readable, at EOF or reset)."""
    readable, _, _ = select.select(sockets, [], [], wait)
    time.sleep(0.2)
    readable, _, _ = select.select(sockets, [], [], 0)
    closed = []
    for s in readable:
        try:
            if s.recv(1) == b"":
                closed.append(s)
        except ConnectionResetError:
            closed.append(s)
    return closed


def test_one_address_holds_at_most_its_share(make_server):
    srv = make_server(extra_args=["--max-connections-per-ip", "4"])
    for port in (srv.http_port, srv.https_port):
        raw = open_raw(port, 6)
        try:
            closed = closed_by_server(raw)
            # The readiness probe may hold one more: 6 + 1 against 4 leaves 2 or 3 closed.
            assert 2 <= len(closed) <= 3, (port, len(closed))
        finally:
            for s in raw:
                s.close()
            time.sleep(0.5)  # for the server to see them closed and count them off
    assert_status(srv.client().get("/v2/"), 200)


class LowFileLimitServer(BerthServer):
    """A server whose process may open 512 files (`prlimit`)."""

    def serve_command(self) -> list[str]:
        return ["prlimit", "--nofile=512:512", "--", *super().serve_command()]


def test_idle_connections_cannot_take_the_files_the_store_needs(berth_bin, tmp_path):
    srv = LowFileLimitServer(berth_bin, tmp_path / "low", registries=[REG])
    try:
        srv.start()
        c = srv.client()
        assert_status(c.get("/v2/"), 200)  # this client's connection is open before the flood
        flood = []
        try:
            for _ in range(600):  # more than the 512 files the server may open
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", srv.http_port))
                flood.append(s)
            time.sleep(1)
            # 512 files, a quarter (at least 256) kept for the store: the listeners accept 256 between them.
            data = random_bytes(3 * MiB)
            started = c.start_upload(f"{REG}/app")
            assert_status(started, 202)
            r = c.put(with_query(c.abs_location(started), digest=sha256_digest(data)), data=data)
            assert_status(r, 201)
            assert c.get_blob(f"{REG}/app", sha256_digest(data)).content == data
        finally:
            for s in flood:
                s.close()
        assert "fewer connections than max_connections" in srv.log_text()
        time.sleep(0.5)
        assert_status(srv.client().get("/v2/"), 200)
        srv.terminate()
    finally:
        srv.stop_quietly()


def test_a_client_that_reads_no_responses_is_disconnected(make_server):
    srv = make_server(extra_args=["--read-timeout", "2"])
    client = srv.client()
    auth = "".join(f"{k}: {v}\r\n" for k, v in client.auth_headers().items())
    request = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{srv.http_port}\r\n{auth}\r\n".encode()
    sample = client.get("/metrics")
    assert_status(sample, 200)
    # Far more response bytes than the socket buffers of both ends hold.
    count = (48 * MiB) // len(sample.content) + 1
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
    try:
        s.sendall(request * count)
        time.sleep(2 + 4)  # read_timeout, and some
        s.settimeout(10)
        received = bytearray()
        while True:
            try:
                chunk = s.recv(1 << 20)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
        answered = received.count(b"HTTP/1.1 200")
        assert 0 < answered < count, f"{answered} of {count} responses: the server kept writing to a client that read none"
    finally:
        s.close()
    assert_status(srv.client().get("/v2/"), 200)


def _h2_streams_answer(c, streams: list[int]) -> dict[int, object]:
    """Each of `streams`' first answer: its `:status` (HEADERS) or ('reset', code)."""
    from hpack import Decoder

    from test_http2 import HEADERS, RST_STREAM

    # The server's header table lives as long as the connection: one decoder per connection.
    if not hasattr(c, "decoder"):
        c.decoder = Decoder()
    decoder, answers = c.decoder, {}
    deadline = time.monotonic() + 10
    while len(answers) < len(streams) and time.monotonic() < deadline:
        f = c.read_frame()
        assert f is not None, "the server closed the connection"
        kind, _, stream, payload = f
        if kind == HEADERS:
            status = dict(decoder.decode(payload)).get(":status")
            if stream in streams:
                answers.setdefault(stream, status)
        elif kind == RST_STREAM and stream in streams:
            answers.setdefault(stream, ("reset", int.from_bytes(payload[:4], "big")))
    return answers


def _h2_barrier(c) -> None:
    """Returns once the server has processed every frame sent before: it
    answers a PING in order, after the streams the frames before it opened."""
    from test_http2 import PING

    c.sock.sendall(c.frame(PING, 0, 0, b"barrier!"))
    while True:
        f = c.read_frame()
        assert f is not None, "the server closed the connection"
        if f[0] == PING and f[1] & 0x1 and f[3] == b"barrier!":
            return


def test_http2_streams_beyond_an_address_share_are_refused(make_server):
    """Open HTTP/2 streams count against the address's share as connections
    do (about 30 KB each; a trickled body holds one open): one beyond it is
    refused with REFUSED_STREAM, so the client knows nothing ran, and once a
    stream ends another is taken."""
    from test_http2 import DATA, END_HEADERS, END_STREAM, H2, HEADERS, literal

    srv = make_server(extra_args=["--max-connections-per-ip", "4"])

    def token_post(length: int) -> bytes:
        return (literal(":method", "POST") + literal(":scheme", "https") + literal(":authority", "localhost")
                + literal(":path", "/auth/token") + literal("content-type", "application/x-www-form-urlencoded")
                + literal("content-length", str(length)))

    get = literal(":method", "GET") + literal(":scheme", "https") + literal(":authority", "localhost") + literal(":path", "/v2/")
    body = b"grant_type=password"
    first, second = H2(srv), H2(srv)
    try:
        first.server_settings()
        second.server_settings()
        # Four streams held open across two connections, each waiting for its body.
        for c, stream in ((first, 1), (first, 3), (second, 1), (second, 3)):
            c.sock.sendall(c.frame(HEADERS, END_HEADERS, stream, token_post(len(body))))
        _h2_barrier(first)
        _h2_barrier(second)
        second.sock.sendall(second.frame(HEADERS, END_HEADERS | END_STREAM, 5, get))
        assert _h2_streams_answer(second, [5]) == {5: ("reset", 7)}  # REFUSED_STREAM
        # One ends; a new stream is taken and answered.
        first.sock.sendall(first.frame(DATA, END_STREAM, 1, body))
        assert _h2_streams_answer(first, [1])[1] in ("400", "401"), "the held stream was not answered"
        time.sleep(0.3)  # the stream's close, after its last frame, gives its place back
        first.sock.sendall(first.frame(HEADERS, END_HEADERS | END_STREAM, 5, get))
        assert _h2_streams_answer(first, [5]) == {5: "401"}
    finally:
        first.close()
        second.close()
