"""Response memory: bodies waiting for clients that read nothing are bounded.

A client that keeps its HTTP/2 windows at 0 and opens many streams, each
asking for a large manifest or a blob, used to make the server hold every
body until `read_timeout` (one connection with 64 streams of 3 MiB manifests:
+236 MiB). Each body larger than 16 KiB now leases its bytes from
`response_memory` (a quarter per client address, at most 64 MiB per
connection) before it is read; a request whose lease does not fit waits,
holding nothing, until a body is taken or its channel closes."""

from __future__ import annotations

import base64
import http.client
import re
import socket
import struct
import time
from pathlib import Path

import requests
from hpack import Decoder

from helpers import MiB, assert_status, make_image, random_bytes
from test_http2 import DATA, END_HEADERS, END_STREAM, H2, HEADERS, INITIAL_WINDOW_SIZE, SETTINGS, WINDOW_UPDATE, literal

RST_STREAM = 0x3
REG = "respmem"
# 16 MiB: 4 MiB per client address, so one 3 MiB body at a time per address.
BUDGET = 16 * MiB


def _server(make_server):
    return make_server(registries=[REG], extra_args=["--response-memory", str(BUDGET)], label="response-memory")


def _big_manifest_image():
    """An image whose manifest is about 3 MiB (an annotation pads it)."""
    return make_image(n_layers=1, layer_size=1024, annotations={"org.example.pad": "x" * (3 * MiB)})


class Client(H2):
    """An HTTP/2 connection that grants the server no stream window until told to."""

    def __init__(self, srv):
        super().__init__(srv)
        self.auth = "Basic " + base64.b64encode(srv.admin_arg.encode()).decode()
        self.decoder = Decoder()
        self.status: dict[int, int] = {}
        self.body: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.sock.sendall(self.frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)))
        self.server_settings()

    def get(self, stream: int, path: str) -> None:
        headers = (
            literal(":method", "GET") + literal(":scheme", "https") + literal(":authority", "localhost")
            + literal(":path", path) + literal("authorization", self.auth)
        )
        self.sock.sendall(self.frame(HEADERS, END_HEADERS | END_STREAM, stream, headers))

    def open_window(self, stream: int, size: int = 64 * MiB) -> None:
        self.sock.sendall(
            self.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", size)) + self.frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", size))
        )

    def cancel(self, stream: int) -> None:
        self.sock.sendall(self.frame(RST_STREAM, 0, stream, struct.pack(">I", 0x8)))  # CANCEL

    def pump(self, until, seconds: float) -> bool:
        """Reads frames until `until()` holds (True) or `seconds` pass (False)."""
        deadline = time.monotonic() + seconds
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                f = self.read_frame()
            except (socket.timeout, TimeoutError):
                return until()
            assert f is not None, "the server closed the connection"
            kind, flags, stream, payload = f
            if kind == HEADERS:
                fields = dict(self.decoder.decode(payload))
                self.status[stream] = int(fields[":status"])
            elif kind == DATA:
                self.body.setdefault(stream, bytearray()).extend(payload)
            elif kind == RST_STREAM:
                self.reset.add(stream)
            if kind in (HEADERS, DATA) and flags & END_STREAM:
                self.ended.add(stream)
        return True


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def test_a_request_whose_body_does_not_fit_waits_until_one_is_read(make_server):
    srv = _server(make_server)
    img = _big_manifest_image()
    assert_status(srv.client().push_image(f"{REG}/big", img, "v1"), 201)
    assert 3 * MiB < len(img.manifest) < 4 * MiB
    path = f"/v2/{REG}/big/manifests/v1"
    h2 = Client(srv)
    try:
        h2.get(1, path)
        assert h2.pump(lambda: 1 in h2.status, 10), "the first GET got no answer"
        assert h2.status[1] == 200
        # The address's 4 MiB are leased to stream 1, whose client reads nothing: stream 3 waits.
        h2.get(3, path)
        assert not h2.pump(lambda: 3 in h2.status, 1.5), "a body beyond the budget was answered at once"
        metrics = requests.get(f"http://127.0.0.1:{srv.http_port}/metrics", timeout=10).text
        assert re.search(r"^berth_response_memory_waiting 1(\.0)?$", metrics, re.M), metrics
        leased = float(re.search(r"^berth_response_memory_leased_bytes (\S+)$", metrics, re.M).group(1))
        assert leased == len(img.manifest)
        # Another client address is not held up by this one.
        other = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10, source_address=("127.0.0.2", 0))
        other.request("GET", path, headers={"Authorization": h2.auth})
        answer = other.getresponse()
        assert answer.status == 200 and answer.read() == img.manifest
        other.close()
        # Once stream 1's body is read, stream 3's lease fits.
        h2.open_window(1)
        assert h2.pump(lambda: 1 in h2.ended and 3 in h2.status, 10), "stream 3 still waits after stream 1 was read"
        assert bytes(h2.body[1]) == img.manifest
        assert h2.status[3] == 200
        h2.open_window(3)
        assert h2.pump(lambda: 3 in h2.ended, 10)
        assert bytes(h2.body[3]) == img.manifest
    finally:
        h2.close()


def test_a_blob_get_waits_and_a_cancelled_stream_gives_its_lease_back(make_server):
    srv = _server(make_server)
    c = srv.client()
    blob = random_bytes(8 * MiB)
    digest = c.upload_blob(f"{REG}/blob", blob)
    path = f"/v2/{REG}/blob/blobs/{digest}"
    h2 = Client(srv)
    try:
        h2.get(1, path)
        assert h2.pump(lambda: 1 in h2.status, 10) and h2.status[1] == 200
        h2.get(3, path)  # waits: stream 1 holds 3 MiB of the address's 4
        h2.get(5, path)
        assert not h2.pump(lambda: 3 in h2.status or 5 in h2.status, 1.5)
        # A waiting request whose stream is cancelled leaves the queue; one whose body is cancelled gives its lease back.
        h2.cancel(3)
        h2.cancel(1)
        assert h2.pump(lambda: 5 in h2.status, 10), "the lease of a cancelled stream was not given back"
        assert h2.status[5] == 200 and 3 not in h2.status
        h2.open_window(5)
        assert h2.pump(lambda: 5 in h2.ended, 30)
        assert bytes(h2.body[5]) == blob
    finally:
        h2.close()
    # Nothing leaked: a plain GET of the blob is answered at once.
    r = c.get_blob(f"{REG}/blob", digest)
    assert_status(r, 200)
    assert r.content == blob


def test_streams_that_read_nothing_do_not_grow_the_server(make_server):
    srv = _server(make_server)
    c = srv.client()
    img = _big_manifest_image()
    assert_status(c.push_image(f"{REG}/big", img, "v1"), 201)
    path = f"/v2/{REG}/big/manifests/v1"
    assert c.get(path).status_code == 200
    before = _rss(srv.proc.pid)
    clients = [Client(srv) for _ in range(2)]
    try:
        for h2 in clients:
            for stream in range(1, 2 * 60, 2):
                h2.get(stream, path)
        # Every request has been read and answered or queued by now.
        for h2 in clients:
            h2.pump(lambda: False, 3)
        grown = _rss(srv.proc.pid) - before
        # 120 streams of 3 MiB: 360 MiB held before the budget; now one body plus what 120 streams cost.
        assert grown < 48 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
        assert sum(len(h2.status) for h2 in clients) == 1
    finally:
        for h2 in clients:
            h2.close()
    # Closing the connections gave everything back.
    r = c.get(path)
    assert_status(r, 200)
    assert r.content == img.manifest
