"""Response memory: bodies waiting for clients that read nothing are bounded.

A client that keeps its HTTP/2 windows at 0 and opens many streams, each
asking for a large manifest or a blob, used to make the server hold every
body until `read_timeout` (one connection with 64 streams of 3 MiB manifests:
+236 MiB). Each body larger than 16 KiB now leases its bytes from
`response_memory` (a quarter per client address, at most 64 MiB per
connection) before it is read; a request whose lease does not fit waits,
holding nothing, until a body is taken or its channel closes, for at most
`read_timeout`: then it is refused with 429 and `Retry-After`."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import struct
import time

import requests
from hpack import Decoder

from helpers import MiB, anon_bytes, assert_status, make_image, random_bytes
from test_http2 import (
    DATA, END_HEADERS, END_STREAM, H2, HEADERS, INITIAL_WINDOW_SIZE, RST_STREAM, SETTINGS, WINDOW_UPDATE, literal,
)

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
        self.headers: dict[int, dict[str, str]] = {}
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
                self.headers[stream] = fields
            elif kind == DATA:
                self.body.setdefault(stream, bytearray()).extend(payload)
            elif kind == RST_STREAM:
                self.reset.add(stream)
            if kind in (HEADERS, DATA) and flags & END_STREAM:
                self.ended.add(stream)
        return True


def _metric(srv, name: str) -> float:
    text = srv.client().get("/metrics").text
    return float(re.search(rf"^berth_{name} (\S+)$", text, re.M).group(1))


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
        assert _metric(srv, "response_memory_waiting") == 1
        assert _metric(srv, "response_memory_leased_bytes") == len(img.manifest)
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
        assert _metric(srv, "response_memory_waiting") == 2
        # A waiting request whose stream is cancelled leaves the queue, while stream 1 still holds its lease.
        h2.cancel(3)
        deadline = time.monotonic() + 10
        while _metric(srv, "response_memory_waiting") != 1:
            assert time.monotonic() < deadline, "a cancelled stream stayed in the queue"
            time.sleep(0.05)
        assert _metric(srv, "response_memory_leased_bytes") == 3 * MiB
        # One whose body is cancelled gives its lease back.
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
    before = anon_bytes(srv.proc.pid)
    clients = [Client(srv) for _ in range(2)]
    try:
        for h2 in clients:
            for stream in range(1, 2 * 60, 2):
                h2.get(stream, path)
        # Every request has been read and answered or queued by now.
        for h2 in clients:
            h2.pump(lambda: False, 3)
        grown = anon_bytes(srv.proc.pid) - before
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


def test_http1_connections_each_have_their_own_share(make_server):
    """Over HTTP/1.1 the connection is the accepted socket, not the listener all of them share."""
    srv = _server(make_server)
    c = srv.client()
    blob = random_bytes(64 * MiB)
    digest = c.upload_blob(f"{REG}/blob", blob)
    path = f"/v2/{REG}/blob/blobs/{digest}"
    header = "Basic " + base64.b64encode(srv.admin_arg.encode()).decode()
    # A client that reads nothing holds its 3 MiB lease: the kernel's buffers take less than the 64 MiB body.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.bind(("127.0.0.3", 0))
    stalled.connect(("127.0.0.1", srv.http_port))
    try:
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while _metric(srv, "response_memory_leased_bytes") != 3 * MiB:
            assert time.monotonic() < deadline, "the stalled GET took no lease"
            time.sleep(0.05)
        # Another address's connection on the same listener has a share of its own.
        other = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10, source_address=("127.0.0.2", 0))
        other.request("GET", path, headers={"Authorization": header})
        answer = other.getresponse()
        assert answer.status == 200 and answer.read() == blob
        other.close()
    finally:
        stalled.close()


def test_a_request_that_waits_longer_than_read_timeout_is_refused_with_retry_after(make_server):
    srv = make_server(
        registries=[REG], extra_args=["--response-memory", str(BUDGET), "--read-timeout", "2"], label="response-memory-wait"
    )
    img = _big_manifest_image()
    assert_status(srv.client().push_image(f"{REG}/big", img, "v1"), 201)
    path = f"/v2/{REG}/big/manifests/v1"
    h2 = Client(srv)
    try:
        h2.get(1, path)
        assert h2.pump(lambda: 1 in h2.status, 10) and h2.status[1] == 200
        h2.get(3, path)
        started = time.monotonic()
        # Stream 1 is read slowly, 16 KiB at a time: it never stalls, so its lease stays held.
        while 3 not in h2.status:
            assert time.monotonic() - started < 15, "the waiting request was never answered"
            h2.open_window(1, 16 * 1024)
            h2.pump(lambda: 3 in h2.status, 0.25)
        waited = time.monotonic() - started
        assert h2.status[3] == 429, h2.headers[3]
        assert h2.headers[3]["retry-after"] == "5"
        assert 1.8 <= waited < 10, waited
        assert 1 not in h2.reset and 1 not in h2.ended, "the slow reader's stream should still be going"
        assert _metric(srv, "response_memory_waiting") == 0
        h2.open_window(3)
        assert h2.pump(lambda: 3 in h2.ended, 10)
        assert json.loads(bytes(h2.body[3]))["errors"][0]["code"] == "TOOMANYREQUESTS"
        # The slow reader still gets its whole body.
        h2.open_window(1)
        assert h2.pump(lambda: 1 in h2.ended, 30)
        assert bytes(h2.body[1]) == img.manifest
    finally:
        h2.close()
