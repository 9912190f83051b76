"""Blob pulls and pushes stream in bounded memory.

The server's anonymous memory (heap and stacks: `RssAnon`, sampled from
/proc every 10 ms) may grow by a few 1 MiB chunks while it sends a 384 MiB
blob, over plain HTTP/1.1, TLS HTTP/1.1 and HTTP/2. Over TLS the event loop
encrypts every byte, and a reader serving chunks from the page cache ran
hundreds of MiB ahead of it before blob GETs were paced (docs/performance.md).

A push of as much may grow it by its chunk buffers and, over HTTP/2, by what
the flow-control windows let the client send ahead (1 MiB per stream, 4 MiB
per connection), which swift-nio-http2 holds in copies of its reads.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import anon_bytes, have_tool

MiB = 1 << 20
BLOB = 384 * MiB
# Two chunks queued for the loop, one prefetched, the TLS and HTTP/2 buffers
# and malloc's slack: 1-5 MiB measured. The build before pacing grew by
# 17-70 MiB here (and by 140-300 MiB on a 1 GiB TLS pull).
ALLOWED_GROWTH = 12 * MiB
# Three chunk buffers of an upload (one filling, two being written), the
# socket's reads and malloc's slack: 6 MiB measured over HTTP/1.1, 10-12 over
# TLS; over HTTP/2 up to the windows' worth of DATA frames, each keeping a
# whole read buffer alive (see HTTP2Tuning): 14-20. With 256 MiB stream
# windows the HTTP/2 push grew by 39 MiB.
ALLOWED_PUSH_GROWTH = 32 * MiB
REG = "streammem"


class PeakSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, anon_bytes(pid), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, anon_bytes(self.pid))


@pytest.mark.skipif(not have_tool("curl"), reason="curl not installed")
def test_pull_memory_is_bounded(make_server):
    srv = make_server(registries=[REG], label="stream-memory")
    digest = srv.client().upload_blob(f"{REG}/big", os.urandom(BLOB))
    path = f"/v2/{REG}/big/blobs/{digest}"
    tls = ["--cacert", srv.cert_path]
    for label, url, extra in (
        ("plain HTTP/1.1", srv.url, ["--http1.1"]),
        ("TLS HTTP/1.1", srv.tls_url, [*tls, "--http1.1"]),
        ("HTTP/2", srv.tls_url, [*tls, "--http2"]),
    ):
        baseline = anon_bytes(srv.proc.pid)
        sampler = PeakSampler(srv.proc.pid)
        sampler.start()
        try:
            out = subprocess.run(
                ["curl", "--silent", "--show-error", "--fail", "--noproxy", "*", *extra, "--user", srv.admin_arg,
                 "--output", "/dev/null", "--write-out", "%{size_download} %{http_version}", url + path],
                capture_output=True, text=True, timeout=300)
        finally:
            sampler.done.set()
            sampler.join()
        assert out.returncode == 0, (label, out.stderr)
        size, version = out.stdout.split()
        assert int(size) == BLOB, (label, out.stdout)
        assert version == ("2" if label == "HTTP/2" else "1.1"), (label, out.stdout)
        growth = sampler.peak - baseline
        assert growth < ALLOWED_GROWTH, f"{label}: anon memory grew {growth / MiB:.1f} MiB during a {BLOB // MiB} MiB pull"


def curl_push(srv, url: str, extra: list[str], body: Path, digest: str) -> str:
    """Pushes `body` monolithically (POST, then one streamed PUT); returns curl's HTTP version."""
    start = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--noproxy", "*", *extra, "--user", srv.admin_arg,
         "--request", "POST", "--output", "/dev/null", "--write-out", "%header{location}",
         url + f"/v2/{REG}/pushed/blobs/uploads/"],
        capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    location = start.stdout.strip()
    assert location, "POST gave no Location"
    target = location if location.startswith("http") else url + location
    target += ("&" if "?" in target else "?") + "digest=" + digest
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--noproxy", "*", *extra, "--user", srv.admin_arg,
         "--upload-file", str(body), "--header", "Content-Type: application/octet-stream",
         "--output", "/dev/null", "--write-out", "%{http_code} %{http_version}", target],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    code, version = out.stdout.split()
    assert code == "201", out.stdout
    return version


@pytest.mark.skipif(not have_tool("curl"), reason="curl not installed")
def test_push_memory_is_bounded(make_server, tmp_path):
    srv = make_server(registries=[REG], label="stream-memory-push")
    tls = ["--cacert", srv.cert_path]
    for label, url, extra in (
        ("plain HTTP/1.1", srv.url, ["--http1.1"]),
        ("TLS HTTP/1.1", srv.tls_url, [*tls, "--http1.1"]),
        ("HTTP/2", srv.tls_url, [*tls, "--http2"]),
    ):
        # A blob of its own each time, so no push finds the last one stored.
        body = tmp_path / "blob"
        digest_of = hashlib.sha256()
        with body.open("wb") as f:
            for _ in range(BLOB // (16 * MiB)):
                piece = os.urandom(16 * MiB)
                digest_of.update(piece)
                f.write(piece)
        digest = "sha256:" + digest_of.hexdigest()
        baseline = anon_bytes(srv.proc.pid)
        sampler = PeakSampler(srv.proc.pid)
        sampler.start()
        try:
            version = curl_push(srv, url, extra, body, digest)
        finally:
            sampler.done.set()
            sampler.join()
        assert version == ("2" if label == "HTTP/2" else "1.1"), (label, version)
        head = srv.client().session.head(srv.url + f"/v2/{REG}/pushed/blobs/{digest}", timeout=30)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == BLOB, (label, head.status_code)
        growth = sampler.peak - baseline
        print(f"{label}: push grew anon memory by {growth / MiB:.1f} MiB")
        assert growth < ALLOWED_PUSH_GROWTH, f"{label}: anon memory grew {growth / MiB:.1f} MiB during a {BLOB // MiB} MiB push"
