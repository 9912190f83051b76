"""A client that gives up in the middle of a request (an interrupted `docker
push`: its connection closes while it sends a layer, or its HTTP/2 stream is
reset) is not a server error: the request is logged at info and counted as
400 (its body ended before its declared length) or 499 (its connection or
stream went away and nothing could be answered), never as a 500 that would
page an operator, and its upload takes the blob whole afterwards."""

from __future__ import annotations

import re
import socket
import ssl
import time

from helpers import MiB, random_bytes, sha256_digest, with_query

REG = "aborted"


def _upload_counts(srv) -> dict[str, float]:
    """`berth_http_requests_total` of the upload route, by status."""
    text = srv.client().get("/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("berth_http_requests_total{") and 'route="v2.uploads"' in line:
            status = re.search(r'status="(\d+)"', line).group(1)
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def _patch_head(srv, http, path: str) -> bytes:
    return (f"PATCH {path} HTTP/1.1\r\nHost: {srv.host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {10 * MiB}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items())
            + "\r\n").encode()


def _new_upload(http) -> tuple[str, str]:
    """A new upload's URL and its path."""
    location = http.abs_location(http.start_upload(f"{REG}/img"))
    return location, "/" + location.split("/", 3)[3]


def test_an_abandoned_upload_is_the_clients_doing_not_a_server_error(make_server):
    from test_http2 import DATA, END_HEADERS, H2, HEADERS, RST_STREAM, literal

    srv = make_server(registries=[REG], label="aborted")
    http = srv.client()
    since = srv.log_size()
    uploads = []

    # Plain HTTP/1.1: the connection closes after 1 MiB of a declared 10 MiB.
    location, path = _new_upload(http)
    uploads.append(location)
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as sock:
        sock.sendall(_patch_head(srv, http, path) + b"x" * MiB)
        time.sleep(0.3)

    # HTTP/1.1 over TLS: the client drops its connection without TLS's close_notify.
    location, path = _new_upload(http)
    uploads.append(location)
    ctx = ssl.create_default_context(cafile=srv.cert_path)
    ctx.set_alpn_protocols(["http/1.1"])
    host, port = srv.tls_host.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(_patch_head(srv, http, path) + b"x" * MiB)
    time.sleep(0.3)
    raw.close()  # the TCP connection only: no close_notify
    tls.close()

    # HTTP/2: the client resets its stream (CANCEL) after part of the body.
    location, path = _new_upload(http)
    uploads.append(location)
    c = H2(srv)
    try:
        c.server_settings()
        headers = (literal(":method", "PATCH") + literal(":scheme", "https") + literal(":authority", "localhost")
                   + literal(":path", path) + literal("content-type", "application/octet-stream")
                   + literal("content-length", str(10 * MiB))
                   + literal("authorization", http.auth_headers()["Authorization"]))
        c.sock.sendall(c.frame(HEADERS, END_HEADERS, 1, headers) + c.frame(DATA, 0, 1, b"y" * 65000))
        time.sleep(0.3)
        c.sock.sendall(c.frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))  # CANCEL
        time.sleep(0.3)
    finally:
        c.close()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counts = _upload_counts(srv)
        if sum(v for k, v in counts.items() if k not in ("201", "202", "204")) >= 3:
            break
        time.sleep(0.2)
    # Which one each is depends on when the server notices the close.
    assert counts.get("400", 0) + counts.get("499", 0) == 3, counts
    assert not any(k.startswith("5") for k in counts), counts
    log = srv.log_text(since)
    assert '"level":"error"' not in log, log
    assert "request abandoned by its client" in log, log

    # Nothing of any chunk was kept, and each upload takes its blob whole.
    data = random_bytes(MiB + 5)
    for loc in uploads:
        status = http.get(loc)
        assert status.status_code == 204 and status.headers["Range"] == "0-0", status.headers
        done = http.put(with_query(loc, digest=sha256_digest(data)), data=data,
                        headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
