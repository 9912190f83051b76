"""`Expect: 100-continue`: a client that asks for it (curl does for bodies
over 1 MiB) gets an interim `100 Continue` before it sends the body, over
HTTP/1.1 and HTTP/2, and only once the responses to its earlier pipelined
requests are written. Without it curl waits one second per upload. A request
refused before its body is read gets its final response without a `100`, and
over HTTP/1.1 the connection closes after it, so nothing is sent in vain; so
does one whose declared body is over a limit (413), without reading it."""

from __future__ import annotations

import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from helpers import MiB, random_bytes, sha256_digest, small_image, with_query


def _read_head(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes]:
    """One response head (through the blank line) and the bytes after it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; read so far: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _upload_target(http, reg: str, data: bytes) -> str:
    """The path (with `?digest=`) that completes a new upload with `data`."""
    r = http.start_upload(f"{reg}/expect")
    assert r.status_code == 202, r.text
    url = with_query(http.abs_location(r), digest=sha256_digest(data))
    parts = urlsplit(url)
    return parts.path + "?" + parts.query


def _put_head(server, http, target: str, length: int, auth: bool = True) -> bytes:
    headers = {"Host": server.host, "Content-Length": str(length), "Content-Type": "application/octet-stream",
               "Expect": "100-continue", **(http.auth_headers() if auth else {})}
    return (f"PUT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def _put_after_100(server, http, target: str, data: bytes) -> None:
    """PUTs `data` to `target`, sending the body only after the server's `100`; expects 201."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(_put_head(server, http, target, len(data)))
        # Nothing of the body has been sent: the server must speak first.
        head, rest = _read_head(sock)
        assert head == b"HTTP/1.1 100 Continue", head
        sock.sendall(data)
        head, _ = _read_head(sock, rest)
        assert head.startswith(b"HTTP/1.1 201"), head


def test_http1_sends_100_continue_before_the_body(server, http, reg):
    data = random_bytes(2 * MiB)
    target = _upload_target(http, reg, data)
    _put_after_100(server, http, target, data)
    r = http.head(f"/v2/{reg}/expect/blobs/{sha256_digest(data)}")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data))


def _refused_without_100(server, request: bytes, hold: float = 0) -> bytes:
    """Sends a request head (and perhaps the start of its body); the final
    response's head, which came first, after which the server closed the
    connection. The client's side stays open `hold` seconds more."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(request)
        head, rest = _read_head(sock)
        assert not head.startswith(b"HTTP/1.1 100"), "the server invited a body it did not want"
        assert b"\r\nconnection: close" in head.lower(), head
        length = _content_length(head)
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside the response body"
            rest += chunk
        assert sock.recv(65536) == b"", "the connection stayed open with the body unsent"
        time.sleep(hold)
    return head


def test_no_100_continue_for_a_request_refused_before_its_body(server, http, reg):
    data = random_bytes(2 * MiB)
    target = _upload_target(http, reg, data)
    # No credentials: 401, before the body.
    head = _refused_without_100(server, _put_head(server, http, target, len(data), auth=False))
    assert head.startswith(b"HTTP/1.1 401"), head
    # An upload that does not exist: 404, before the body.
    missing = f"/v2/{reg}/expect/blobs/uploads/{'0' * 32}?digest={sha256_digest(data)}"
    head = _refused_without_100(server, _put_head(server, http, missing, len(data)))
    assert head.startswith(b"HTTP/1.1 404"), head
    # The upload is untouched and takes its body afterwards.
    _put_after_100(server, http, target, data)


def test_http10_expectation_is_ignored(server, http, reg):
    """RFC 9110 §10.1.1: an HTTP/1.0 client knows no interim responses, so its
    expectation is ignored; it sends its body without waiting for one."""
    data = random_bytes(2 * MiB)
    target = _upload_target(http, reg, data)
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(_put_head(server, http, target, len(data)).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
        sock.settimeout(1)
        try:
            early = sock.recv(65536)
        except socket.timeout:
            early = b""
        assert early == b"", f"the server answered before the body: {early!r}"
        sock.settimeout(5)
        sock.sendall(data)
        head, _ = _read_head(sock)
        assert head.split(b"\r\n")[0].split(b" ")[1] == b"201", head
    assert http.head(f"/v2/{reg}/expect/blobs/{sha256_digest(data)}").status_code == 200


def test_pipelined_expectation_is_answered_after_the_earlier_response(server, http, reg):
    data = random_bytes(64 * 1024)
    target = _upload_target(http, reg, data)
    catalog = f"GET /v2/{reg}/expect/tags/list HTTP/1.1\r\nHost: {server.host}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in http.auth_headers().items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(catalog.encode() + _put_head(server, http, target, len(data)))
        first, rest = _read_head(sock)
        assert first.startswith(b"HTTP/1.1 "), first
        assert not first.startswith(b"HTTP/1.1 100"), "the 100 came before the earlier request's response"
        length = _content_length(first)
        while len(rest) < length:
            rest += sock.recv(65536)
        interim, rest = _read_head(sock, rest[length:])
        assert interim == b"HTTP/1.1 100 Continue", interim
        sock.sendall(data)
        final, _ = _read_head(sock, rest)
        assert final.startswith(b"HTTP/1.1 201"), final


def test_pipelined_requests_then_a_half_close_are_all_answered(server, http, reg):
    """A client that pipelines requests and then closes its sending side (as
    `nc` does) gets every answer: the half-close waits behind the requests."""
    auth = "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items())
    get = f"GET /v2/ HTTP/1.1\r\nHost: {server.host}\r\n{auth}\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(get * 3)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 3, data


def test_no_100_continue_for_an_empty_body(server, http, reg):
    head = (f"POST /v2/{reg}/expect/blobs/uploads/ HTTP/1.1\r\nHost: {server.host}\r\nContent-Length: 0\r\n"
            "Expect: 100-continue\r\n" + "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items()) + "\r\n")
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(head.encode())
        response, _ = _read_head(sock)
    assert response.startswith(b"HTTP/1.1 202"), response


def _curl_put(server, http, reg: str, version: str, auth: bool = True, expect: bytes = b"201") -> str:
    """A PUT of 3 MiB with curl over TLS; curl's verbose log."""
    data = random_bytes(3 * MiB)
    r = http.start_upload(f"{reg}/expect")
    url = with_query(http.abs_location(r), digest=sha256_digest(data)).replace(server.url, server.tls_url)
    headers = [arg for k, v in http.auth_headers().items() for arg in ("-H", f"{k}: {v}")] if auth else []
    out = subprocess.run(
        ["curl", "--verbose", "--silent", "--show-error", "--noproxy", "*", f"--http{version}", "--cacert",
         server.cert_path, "-X", "PUT", "--data-binary", "@-", "-H", "Content-Type: application/octet-stream",
         "-H", "Expect: 100-continue", *headers, "-o", "/dev/null", "-w", "%{http_code}", url],
        input=data, capture_output=True, timeout=60)
    assert out.stdout == expect, out.stderr.decode(errors="replace")
    return out.stderr.decode(errors="replace")


def test_tls_http1_sends_100_continue(server, http, reg):
    log = _curl_put(server, http, reg, "1.1")
    assert "< HTTP/1.1 100 Continue" in log, log


def test_http2_sends_100_continue(server, http, reg):
    log = _curl_put(server, http, reg, "2")
    assert "< HTTP/2 100" in log, log


def test_http2_refused_request_gets_no_100(server, http, reg):
    log = _curl_put(server, http, reg, "2", auth=False, expect=b"401")
    assert "< HTTP/2 100" not in log, log


def test_tls_http1_refused_request_gets_no_100(server, http, reg):
    log = _curl_put(server, http, reg, "1.1", auth=False, expect=b"401")
    assert "< HTTP/1.1 100" not in log, log


@pytest.mark.parametrize("path,limit", [("/api/v1/registries", 1 << 20), ("/auth/token", 64 << 10)])
def test_a_declared_body_over_the_limit_is_refused_unread(server, http, path, limit):
    """A 10 GiB declared body is answered 413 at once and the connection
    closes: the server neither reads 1 MiB of it first nor drains the rest."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10 << 30}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items())
            + "\r\n").encode()
    response = _refused_without_100(server, head + b"{")
    assert response.startswith(b"HTTP/1.1 413"), response


def test_a_body_found_over_the_limit_closes_after_the_413(server, http, reg):
    """A manifest sent without its length (chunked) is read until it passes
    4 MiB; the 413 then closes the connection instead of reading on."""
    chunk = b"x" * (1 << 20)
    head = (f"PUT /v2/{reg}/expect/manifests/big HTTP/1.1\r\nHost: {server.host}\r\n"
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items()) + "\r\n").encode()
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(5))
    response = _refused_without_100(server, head + body)
    assert response.startswith(b"HTTP/1.1 413"), response


def test_a_request_pipelined_after_a_413_is_not_run(server, http, reg):
    """The connection closes after a 413: a request the client pipelined
    behind the refused one would run with nobody to answer, so it does not run."""
    img = small_image()
    http.upload_blobs(f"{reg}/expect", img.blobs)
    auth = "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items())
    refused = (f"PUT /v2/{reg}/expect/manifests/big HTTP/1.1\r\nHost: {server.host}\r\n"
               f"Content-Type: {img.media_type}\r\nContent-Length: {5 * MiB}\r\n{auth}\r\n").encode()
    behind = (f"PUT /v2/{reg}/expect/manifests/behind HTTP/1.1\r\nHost: {server.host}\r\n"
              f"Content-Type: {img.media_type}\r\nContent-Length: {len(img.manifest)}\r\n{auth}\r\n").encode()
    # The client keeps its side open for as long as the server lingers.
    head = _refused_without_100(server, refused + b"x" * (5 * MiB) + behind + img.manifest, hold=1.5)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert http.get_manifest(f"{reg}/expect", "behind").status_code == 404


def test_a_request_read_before_the_refusal_is_written_is_not_run(server, http, reg):
    """A refused request that expected a `100` but sent its small body anyway,
    with another request behind it in the same write: the server has read
    both before it answers the first, and the connection closes after that
    answer, so the one behind must not run."""
    img = small_image()
    http.upload_blobs(f"{reg}/expect", img.blobs)
    auth = "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items())
    data = b"0123456789"
    refused = _put_head(server, http, _upload_target(http, reg, data), len(data), auth=False) + data
    behind = (f"PUT /v2/{reg}/expect/manifests/raced HTTP/1.1\r\nHost: {server.host}\r\n"
              f"Content-Type: {img.media_type}\r\nContent-Length: {len(img.manifest)}\r\n{auth}\r\n").encode()
    head = _refused_without_100(server, refused + behind + img.manifest, hold=0.5)
    assert head.startswith(b"HTTP/1.1 401"), head
    time.sleep(0.5)
    assert http.get_manifest(f"{reg}/expect", "raced").status_code == 404


def test_pipelined_requests_behind_a_kept_connection_all_run(server, http, reg):
    """Requests pipelined behind responses that keep the connection open are
    each answered in order, and each runs."""
    img = small_image()
    http.upload_blobs(f"{reg}/expect", img.blobs)
    auth = "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items())
    puts = b"".join(
        (f"PUT /v2/{reg}/expect/manifests/p{i} HTTP/1.1\r\nHost: {server.host}\r\n"
         f"Content-Type: {img.media_type}\r\nContent-Length: {len(img.manifest)}\r\n{auth}\r\n").encode()
        + img.manifest for i in range(5))
    statuses = []
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(puts)
        rest = b""
        for _ in range(5):
            head, rest = _read_head(sock, rest)
            statuses.append(head.split(b" ")[1])
            rest = rest[_content_length(head):]
    assert statuses == [b"201"] * 5, statuses
    for i in range(5):
        assert http.get_manifest(f"{reg}/expect", f"p{i}").status_code == 200


def test_http2_stream_refused_with_413_is_reset_not_read_to_its_end(server, http):
    """Over HTTP/2 no connection closes after a 413: the stream is reset once
    the response is written, or the server would read a 10 GiB declared body
    to its end and drop it, holding one of the connection's streams."""
    from hpack import Decoder

    from test_http2 import DATA, END_HEADERS, END_STREAM, H2, HEADERS, RST_STREAM, literal

    c = H2(server)
    try:
        c.server_settings()
        headers = (
            literal(":method", "POST") + literal(":scheme", "https") + literal(":authority", "localhost")
            + literal(":path", "/auth/token") + literal("content-type", "application/x-www-form-urlencoded")
            + literal("content-length", str(10 << 30))
        )
        c.sock.sendall(c.frame(HEADERS, END_HEADERS, 1, headers) + c.frame(DATA, 0, 1, b"grant_type=password&"))
        status, ended, reset, code = None, False, False, None
        decoder = Decoder()
        deadline = time.monotonic() + 10
        while not reset and time.monotonic() < deadline:
            f = c.read_frame()
            assert f is not None, "the server closed the connection, not the stream"
            kind, flags, stream, payload = f
            if stream != 1:
                continue
            if kind == HEADERS:
                status = dict(decoder.decode(payload))[":status"]
            ended = ended or (kind in (HEADERS, DATA) and bool(flags & END_STREAM))
            reset = kind == RST_STREAM
            code = int.from_bytes(payload[:4], "big") if reset else None
        assert status == "413" and ended, (status, ended)
        assert reset, "the refused stream was not reset: its body would be read to the end"
        assert code == 0, f"reset with error code {code}, not NO_ERROR"
    finally:
        c.close()


def test_http2_streams_answered_before_their_body_are_reset_with_no_error(server, reg):
    """A client refused (401) after its headers that then sends nothing would
    hold each stream, about 30 KB of server memory, until read_timeout: every
    stream whose response ends before its request's body is reset with
    NO_ERROR once the response is written (RFC 9113 §8.1)."""
    from hpack import Decoder

    from test_http2 import DATA, END_HEADERS, END_STREAM, H2, HEADERS, RST_STREAM, literal

    streams = list(range(1, 41, 2))
    c = H2(server)
    try:
        c.server_settings()
        for stream in streams:
            headers = (
                literal(":method", "PUT") + literal(":scheme", "https") + literal(":authority", "localhost")
                + literal(":path", f"/v2/{reg}/quiet/blobs/uploads/none") + literal("content-length", "1000")
            )
            c.sock.sendall(c.frame(HEADERS, END_HEADERS, stream, headers))
        statuses, ended, resets = {}, set(), {}
        decoder = Decoder()
        deadline = time.monotonic() + 10
        while len(resets) < len(streams) and time.monotonic() < deadline:
            f = c.read_frame()
            assert f is not None, "the server closed the connection"
            kind, flags, stream, payload = f
            if kind == HEADERS:
                statuses[stream] = dict(decoder.decode(payload))[":status"]
            if kind in (HEADERS, DATA) and flags & END_STREAM:
                ended.add(stream)
            if kind == RST_STREAM:
                assert stream in ended, f"stream {stream} reset before its response ended"
                resets[stream] = int.from_bytes(payload[:4], "big")
        assert set(statuses.values()) == {"401"} and ended == set(streams), (statuses, ended)
        assert resets == {stream: 0 for stream in streams}, resets
    finally:
        c.close()
