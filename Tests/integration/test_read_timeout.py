"""read_timeout: a request whose body stalls is cut off after that long (the
connection closed over HTTP/1.1, the stream reset over HTTP/2), so a stalled
upload no longer holds its session, file and buffers forever; an idle
connection (HTTP/1.1, or HTTP/2 with no open stream) is closed too. The upload keeps what was synced before."""

from __future__ import annotations

import base64
import socket
import time

import pytest

from helpers import KiB, MiB, assert_status, path_of, random_bytes, sha256_digest, with_query
from test_http2 import DATA, END_HEADERS, GOAWAY, H2, HEADERS, RST_STREAM, literal

REG = "stall"
OCTET = {"Content-Type": "application/octet-stream"}
TIMEOUT = 2


def _server(make_server):
    return make_server(registries=[REG], extra_args=["--read-timeout", str(TIMEOUT)], label="read-timeout")


def _upload(c, image: str) -> str:
    """A fresh upload session's URL."""
    s = c.start_upload(f"{REG}/{image}")
    assert_status(s, 202)
    return c.abs_location(s)


def _h2_patch(srv, loc: str, length: int) -> H2:
    """An HTTP/2 connection with a PATCH of `length` bytes to `loc` begun on stream 1 (headers only)."""
    auth = "Basic " + base64.b64encode(srv.admin_arg.encode()).decode()
    h2 = H2(srv)
    h2.server_settings()
    headers = (
        literal(":method", "PATCH") + literal(":scheme", "https") + literal(":authority", "localhost")
        + literal(":path", path_of(loc)) + literal("authorization", auth)
        + literal("content-type", "application/octet-stream") + literal("content-length", str(length))
    )
    h2.sock.sendall(h2.frame(HEADERS, END_HEADERS, 1, headers))
    return h2


def _seconds_until_closed(sock: socket.socket) -> float:
    start = time.monotonic()
    while sock.recv(65536):
        pass
    return time.monotonic() - start


def _assert_about_the_timeout(waited: float) -> None:
    assert TIMEOUT * 0.75 <= waited < TIMEOUT + 10, waited


def _resume_whole(c, loc: str, blob: bytes) -> None:
    """The stalled request changed nothing: the whole blob goes up from byte 0."""
    r = c.patch(loc, data=blob, headers={**OCTET, "Content-Range": f"0-{len(blob) - 1}"})
    assert_status(r, 202)
    r = c.put(with_query(c.abs_location(r), digest=sha256_digest(blob)), headers=OCTET)
    assert_status(r, 201)


def test_stalled_http1_body_is_cut_off(make_server):
    srv = _server(make_server)
    c = srv.client()
    loc = _upload(c, "h1")
    blob = random_bytes(4 * MiB)
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=30) as sock:
        sock.sendall(
            f"PATCH {path_of(loc)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {c.auth_headers()['Authorization']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(blob)}\r\n\r\n".encode()
            + blob[: 1536 * KiB]
        )
        waited = _seconds_until_closed(sock)
    _assert_about_the_timeout(waited)
    _resume_whole(c, loc, blob)


def test_stalled_http2_stream_is_reset(make_server):
    srv = _server(make_server)
    c = srv.client()
    loc = _upload(c, "h2")
    blob = random_bytes(4 * MiB)
    h2 = _h2_patch(srv, loc, len(blob))
    try:
        for offset in range(0, 48 * KiB, 16 * KiB):  # within the 64 KiB the connection starts with
            h2.sock.sendall(h2.frame(DATA, 0, 1, blob[offset : offset + 16 * KiB]))
        start = time.monotonic()
        h2.sock.settimeout(TIMEOUT + 10)
        while True:
            f = h2.read_frame()
            assert f is not None, "the server closed the connection instead of resetting the stream"
            if f[0] == RST_STREAM and f[2] == 1:
                break
        waited = time.monotonic() - start
    finally:
        h2.close()
    _assert_about_the_timeout(waited)
    _resume_whole(c, loc, blob)


def test_idle_http1_connection_is_closed(make_server):
    srv = _server(make_server)
    c = srv.client()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=30) as sock:
        sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {c.auth_headers()['Authorization']}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        waited = _seconds_until_closed(sock)
    _assert_about_the_timeout(waited)


@pytest.mark.parametrize("sends", [b"", b"\x16\x03\x01\x00\xc8\x01"], ids=["nothing", "half-a-client-hello"])
def test_tls_handshake_that_never_finishes_is_closed(make_server, sends):
    """Before ALPN picks a protocol no idle timer runs: a client that never
    finishes its handshake held a file descriptor forever."""
    srv = _server(make_server)
    host, port = srv.tls_host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT + 10) as sock:
        sock.sendall(sends)
        waited = _seconds_until_closed(sock)
    _assert_about_the_timeout(waited)


def test_tls_handshake_gets_at_most_ten_seconds_whatever_read_timeout_is(make_server):
    """A handshake takes milliseconds: sockets held open without one would fill
    the address's and the listener's connection shares for read_timeout."""
    srv = make_server(registries=[REG], extra_args=["--read-timeout", "120"], label="handshake-limit")
    host, port = srv.tls_host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        waited = _seconds_until_closed(sock)
    assert 9 <= waited < 15, waited


def test_blob_pull_whose_client_stops_reading_is_closed(make_server):
    """A client that takes none of a blob for read_timeout has its connection
    closed: the response held its chunks in flight (2-3 MiB) forever."""
    srv = _server(make_server)
    c = srv.client()
    blob = random_bytes(48 * MiB)
    digest = c.upload_blob(f"{REG}/pull", blob)
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=TIMEOUT + 10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        sock.sendall(f"GET /v2/{REG}/pull/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: {c.auth_headers()['Authorization']}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(TIMEOUT + 3)  # read nothing: the socket buffers fill and the server's writes stall
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    assert received < len(blob), "the connection was closed before the whole blob was sent"


def test_idle_http2_connection_gets_goaway_and_is_closed(make_server):
    srv = _server(make_server)
    h2 = H2(srv)
    try:
        h2.server_settings()
        start = time.monotonic()
        h2.sock.settimeout(TIMEOUT + 10)
        kinds = []
        while (f := h2.read_frame()) is not None:
            kinds.append(f[0])
        waited = time.monotonic() - start
    finally:
        h2.close()
    assert GOAWAY in kinds, kinds
    _assert_about_the_timeout(waited)


def test_http2_upload_sending_slowly_is_not_cut(make_server):
    """A body that keeps arriving, however slowly, outlives read_timeout, and so does its connection."""
    srv = _server(make_server)
    c = srv.client()
    loc = _upload(c, "slow")
    blob = random_bytes(5 * KiB)
    h2 = _h2_patch(srv, loc, len(blob))
    try:
        for i in range(5):  # one KiB a second for five seconds: 2.5 timeouts
            time.sleep(1)
            h2.sock.sendall(h2.frame(DATA, 0x1 if i == 4 else 0, 1, blob[i * KiB : (i + 1) * KiB]))
        h2.sock.settimeout(10)
        answered = False
        while not answered:
            f = h2.read_frame()
            assert f is not None, "the server closed the connection"
            assert f[0] not in (RST_STREAM, GOAWAY), f
            answered = f[0] == HEADERS and f[2] == 1
    finally:
        h2.close()
    # The PATCH was answered (HEADERS on its stream) and stored every byte.
    r = c.get(loc)
    assert_status(r, 204)
    assert r.headers.get("Range") == f"0-{len(blob) - 1}", r.headers
