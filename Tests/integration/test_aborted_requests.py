"""A client that gives up in the middle of a request (an interrupted `docker
push`: its connection closes while it sends a layer) is not a server error:
the request is logged at info and counted as 400 (its body ended before its
declared length) or 499 (its connection or stream went away and nothing could
be answered), never as a 500 that would page an operator, and its upload
takes the blob whole afterwards."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest

from helpers import MiB, have_tool, random_bytes, sha256_digest, with_query

REG = "aborted"


def _upload_counts(srv) -> dict[str, float]:
    """`http_requests_total` of the upload route, by status."""
    text = srv.client().get("/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("berth_http_requests_total{") and 'route="v2.uploads"' in line:
            status = re.search(r'status="(\d+)"', line).group(1)
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.skipif(not have_tool("curl"), reason="curl not installed")
def test_an_abandoned_upload_is_the_clients_doing_not_a_server_error(make_server, tmp_path):
    srv = make_server(registries=[REG], label="aborted")
    http = srv.client()
    since = srv.log_size()

    # HTTP/1.1: the connection closes after 1 MiB of a declared 10 MiB.
    r = http.start_upload(f"{REG}/img")
    location = http.abs_location(r)
    path = location.split(str(srv.http_port), 1)[1] if location.startswith("http") else location
    head = (f"PATCH {path} HTTP/1.1\r\nHost: {srv.host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {10 * MiB}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items()) + "\r\n")
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as sock:
        sock.sendall(head.encode() + b"x" * MiB)
        time.sleep(0.3)

    # HTTP/2: curl gives up after half a second of a slow 20 MiB PATCH.
    r = http.start_upload(f"{REG}/img")
    h2_location = http.abs_location(r).replace(srv.url, srv.tls_url)
    body = tmp_path / "body"
    body.write_bytes(b"y" * (20 * MiB))
    out = subprocess.run(
        ["curl", "--silent", "--noproxy", "*", "--http2", "--cacert", srv.cert_path, "--max-time", "0.5",
         "--limit-rate", "4M", "--request", "PATCH", "--user", srv.admin_arg, "--header",
         "Content-Type: application/octet-stream", "--data-binary", f"@{body}", "--output", "/dev/null", h2_location],
        capture_output=True, timeout=30)
    assert out.returncode == 28, out  # curl's timeout: it closed the connection mid-body

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counts = _upload_counts(srv)
        if counts.get("400", 0) + counts.get("499", 0) + counts.get("500", 0) >= 2:
            break
        time.sleep(0.2)
    # Which one each is depends on when the server notices the close.
    assert counts.get("400", 0) + counts.get("499", 0) == 2, counts
    assert "500" not in counts, counts
    log = srv.log_text(since)
    assert '"level":"error"' not in log, log
    # Over HTTP/2 the stream may instead end short of its declared length: a 400 of its own.
    assert "request abandoned by its client" in log, log

    # Nothing of either chunk was kept, and each upload takes its blob whole.
    data = random_bytes(MiB + 5)
    for loc in (location, h2_location.replace(srv.tls_url, srv.url)):
        status = http.get(loc)
        assert status.status_code == 204 and status.headers["Range"] == "0-0", status.headers
        done = http.put(with_query(loc, digest=sha256_digest(data)), data=data,
                        headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
