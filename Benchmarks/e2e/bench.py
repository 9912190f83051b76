#!/usr/bin/env python3
"""Side-by-side benchmark: Berth against the CNCF Distribution registry
(Debian's docker-registry 2.8), the same workloads one after the other on this
machine, printed as one table with the ratio Berth/peer.

Berth runs with its embedded store and authentication on: every request
carries the bootstrap admin's Basic credential (a SHA-256 and a constant-time
compare per request). The peer runs with filesystem storage and no auth.

    python3 Benchmarks/e2e/bench.py [--berth PATH] [--blob-mib 1024] [--images 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import requests

import h2_put
import tls_get

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    name: str
    url: str
    proc: subprocess.Popen
    auth: tuple[str, str] | None = None
    repo: str  # the repository workloads push to
    peak_rss_kib = 0

    def headers(self) -> dict[str, str]:
        if not self.auth:
            return {}
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def wait_ready(self, url: str, verify: str | bool = True) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(url, headers=self.headers(), verify=verify, timeout=1).status_code < 500:
                    return
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start ({url})")

    def processes(self) -> list[subprocess.Popen]:
        return [self.proc]

    def status_kib(self, field: str) -> int:
        """The largest value of a /proc/PID/status field (in kB) among the server's processes."""
        largest = 0
        for proc in self.processes():
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
                largest = max(largest, int(re.search(rf"{field}:\s+(\d+)", text).group(1)))
            except (OSError, AttributeError):
                pass
        return largest

    def rss_kib(self) -> int:
        """Peak RSS (VmHWM)."""
        return self.status_kib("VmHWM")

    def phase_peak_mib(self) -> float:
        """Peak RSS since the previous call: VmHWM, then reset (clear_refs 5)."""
        peak = self.rss_kib()
        self.peak_rss_kib = max(self.peak_rss_kib, peak)
        for proc in self.processes():
            try:
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            except OSError:
                pass
        return peak / 1024

    def anon_kib(self) -> int:
        """RssAnon: heap and stacks, without the code pages that RSS also
        counts (clean, file-backed, shared with the page cache)."""
        return self.status_kib("RssAnon")

    def start_anon_sampler(self) -> None:
        """Samples RssAnon every 50 ms (the kernel keeps no high-water mark for it)."""
        self.anon_peak_kib = self.step_peak_kib = self.anon_kib()
        self.step_peaks: dict[str, int] = {}

        def sample() -> None:
            while all(proc.poll() is None for proc in self.processes()):
                anon = self.anon_kib()
                self.anon_peak_kib = max(self.anon_peak_kib, anon)
                self.step_peak_kib = max(self.step_peak_kib, anon)
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()

    def step_done(self, label: str) -> None:
        """Files the peak sampled RssAnon since the previous step under `label`
        (the largest over repeats): which workload sets a phase's peak."""
        peak, self.step_peak_kib = self.step_peak_kib, self.anon_kib()
        self.step_peaks[label] = max(self.step_peaks.get(label, 0), peak)

    def phase_peak_anon_mib(self) -> float:
        """Peak sampled RssAnon since the previous call."""
        peak, self.anon_peak_kib = self.anon_peak_kib, self.anon_kib()
        return peak / 1024

    def stop(self) -> None:
        self.peak_rss_kib = max(self.peak_rss_kib, self.rss_kib())
        for proc in self.processes():
            proc.send_signal(signal.SIGTERM)
        for proc in self.processes():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


class Berth(Server):
    def __init__(self, binary: str, work: Path, env: dict[str, str] | None = None):
        self.name = "berth"
        port, tls_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.tls_url = f"https://127.0.0.1:{tls_port}"
        data = work / "berth-data"
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{port}", "--https", f"127.0.0.1:{tls_port}",
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=open(work / "berth.log", "wb"), start_new_session=True,
            env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while not (data / "bootstrap-credentials.json").exists():
            assert time.time() < deadline and self.proc.poll() is None, "berth did not start"
            time.sleep(0.1)
        creds = json.loads((data / "bootstrap-credentials.json").read_text())
        self.auth = (creds["access_key"], creds["secret_key"])
        self.wait_ready(self.url + "/v2/")
        requests.post(self.url + "/api/v1/registries", json={"name": "bench"}, auth=self.auth).raise_for_status()
        self.repo = "bench/app"
        self.cert = str(data / "tls" / "cert.pem")


class Distribution(Server):
    def __init__(self, work: Path):
        self.name = "distribution"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = work / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {work / 'registry-data'}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(work / "registry.log", "wb"), start_new_session=True)
        self.wait_ready(self.url + "/v2/")
        self.repo = "bench/app"
        # A second process on the same storage serves TLS (Go negotiates h2),
        # for the TLS and HTTP/2 workloads; its RSS counts too.
        tls_port = free_port()
        self.tls_url = f"https://127.0.0.1:{tls_port}"
        self.cert, key = str(work / "registry-cert.pem"), str(work / "registry-key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", self.cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=True)
        tls_config = work / "registry-tls.yml"
        tls_config.write_text(config.read_text().replace(f"  addr: 127.0.0.1:{port}\n", f"  addr: 127.0.0.1:{tls_port}\n")
                              + f"  tls:\n    certificate: {self.cert}\n    key: {key}\n")
        self.tls_proc = subprocess.Popen(["docker-registry", "serve", str(tls_config)], stdout=subprocess.DEVNULL,
                                         stderr=open(work / "registry-tls.log", "wb"), start_new_session=True)
        self.wait_ready(self.tls_url + "/v2/", verify=self.cert)

    def processes(self) -> list[subprocess.Popen]:
        return [self.proc, self.tls_proc]


# ---------------------------------------------------------------- workloads

def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", "--fail", *args], capture_output=True, text=True, check=True).stdout


def auth_args(server: Server) -> list[str]:
    return ["-u", f"{server.auth[0]}:{server.auth[1]}"] if server.auth else []


def start_upload(server: Server, base: str | None = None, extra: tuple[str, ...] = ()) -> str:
    base = base or server.url
    out = curl("-X", "POST", "-D", "-", "-o", "/dev/null", *extra, *auth_args(server), f"{base}/v2/{server.repo}/blobs/uploads/")
    location = re.search(r"(?im)^location:\s*(\S+)", out).group(1)
    return location if location.startswith("http") else base + location


def with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


def push_monolithic(server: Server, path: Path, digest: str, tls: str | None = None) -> float:
    """POST then a streaming PUT with curl; `tls` ("1.1" or "2"): over Berth's TLS port with that HTTP version."""
    base, extra = server.url, ()
    if tls:
        base, extra = server.tls_url, ("--cacert", server.cert, f"--http{tls}")
    location = start_upload(server, base, extra)
    start = time.perf_counter()
    # No `Expect: 100-continue`: both servers answer it, but it costs a round trip
    # before the body that neither server needs.
    curl("-X", "PUT", "-T", str(path), "-H", "Content-Type: application/octet-stream", "-H", "Expect:", *extra,
         *auth_args(server), "-o", "/dev/null", with_query(location, f"digest={digest}"))
    return time.perf_counter() - start


def push_nghttp(server: Server, path: Path, digest: str) -> float:
    """The monolithic push over HTTP/2 with nghttp (nghttp2's own client). curl 7.88
    writes each 16 KiB DATA frame's 9-byte header and its payload as two TLS records
    in two syscalls, and over h2 spends about twice its HTTP/1.1 CPU."""
    location = start_upload(server, server.tls_url, ("--cacert", server.cert, "--http2"))
    headers = ["-H", ":method: PUT", "-H", "content-type: application/octet-stream"]
    for name, value in server.headers().items():
        headers += ["-H", f"{name.lower()}: {value}"]
    start = time.perf_counter()
    subprocess.run(["nghttp", "--null-out", "--data", str(path), *headers, with_query(location, f"digest={digest}")],
                   capture_output=True, check=True)
    elapsed = time.perf_counter() - start
    # nghttp exits 0 whatever the status: the blob must be there.
    curl("-I", *auth_args(server), "-o", "/dev/null", f"{server.url}/v2/{server.repo}/blobs/{digest}")
    return elapsed


def push_h2_large_frames(server: Server, path: Path, digest: str) -> float:
    """The monolithic push over HTTP/2 with h2_put's client: DATA frames as large as
    the server allows (curl and nghttp send 16 KiB ones)."""
    location = start_upload(server, server.tls_url, ("--cacert", server.cert, "--http2"))
    status, elapsed = h2_put.put(with_query(location, f"digest={digest}"), str(path), path.stat().st_size,
                                 server.cert, server.headers())
    if status != 201:
        raise RuntimeError(f"HTTP/2 push to {server.name}: status {status}")
    return elapsed


def push_chunked(server: Server, path: Path, digest: str, chunk: int) -> float:
    """POST, then `chunk`-byte PATCHes one after the other on one keep-alive
    connection, then the closing PUT. Each body is read into one reused buffer
    and sent as it is: `requests` allocated and copied every 8 MiB body twice
    (reading it, then joining it to the head), and the server waited 9 ms of
    a PATCH's 29 for the next one to start."""
    size = path.stat().st_size
    location = start_upload(server)
    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    buffer = bytearray(chunk)
    view = memoryview(buffer)

    def target(location: str) -> str:
        parts = urllib.parse.urlsplit(location)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    start = time.perf_counter()
    offset = 0
    with open(path, "rb") as f:
        while offset < size:
            n = f.readinto(buffer)
            conn.putrequest("PATCH", target(location), skip_accept_encoding=True)
            for name, value in {**server.headers(), "Content-Type": "application/octet-stream",
                                "Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)}.items():
                conn.putheader(name, value)
            conn.endheaders()
            conn.send(view[:n])
            r = conn.getresponse()
            r.read()
            assert r.status == 202, f"PATCH: {r.status}"
            location = r.getheader("Location")
            offset += n
    conn.request("PUT", target(with_query(location, f"digest={digest}")), headers={**server.headers(), "Content-Length": "0"})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, f"PUT: {r.status}"
    conn.close()
    return time.perf_counter() - start


def delete_blob(server: Server, digest: str) -> None:
    requests.delete(f"{server.url}/v2/{server.repo}/blobs/{digest}", headers=server.headers())


def pull(server: Server, digest: str, tls: str | None = None) -> float:
    base, extra = server.url, ()
    if tls:
        base, extra = server.tls_url, ("--cacert", server.cert, f"--http{tls}")
    start = time.perf_counter()
    curl(*extra, *auth_args(server), "-o", "/dev/null", f"{base}/v2/{server.repo}/blobs/{digest}")
    return time.perf_counter() - start


def pull_tls_lean(server: Server, digest: str, size: int) -> tuple[float, float]:
    """A TLS pull with tls_get's client (curl is the bottleneck over TLS): seconds, client CPU seconds."""
    url = f"{server.tls_url}/v2/{server.repo}/blobs/{digest}"
    received, seconds, cpu = tls_get.get(url, server.cert, server.headers().get("Authorization"))
    if received != size:
        raise RuntimeError(f"TLS pull of {digest}: {received} of {size} bytes")
    return seconds, cpu


def push_small_blob(server: Server, size: int = 4096) -> str:
    data = os.urandom(size)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = start_upload(server)
    requests.put(with_query(location, f"digest={digest}"), data=data, headers={
        **server.headers(), "Content-Type": "application/octet-stream"}).raise_for_status()
    return digest


def small_images(server: Server, count: int, concurrency: int) -> float:
    """config + one 4 KiB layer + manifest per image, `concurrency` pushers.

    The client is plain `http.client` on keep-alive connections with every body
    and digest prepared before the clock starts: with `requests`, the Python
    client itself used a whole core at ~1,000 requests/s and was what the
    figure measured."""
    host, port = server.url.removeprefix("http://").split(":")
    auth = server.headers()
    octet = {**auth, "Content-Type": "application/octet-stream"}
    oci = {**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}

    def prepare(i: int) -> tuple[str, list[tuple[bytes, str]], bytes]:
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
        layer = os.urandom(4096)
        blobs, descriptors = [], []
        for blob, media in ((config, "application/vnd.oci.image.config.v1+json"),
                            (layer, "application/vnd.oci.image.layer.v1.tar+gzip")):
            d = "sha256:" + hashlib.sha256(blob).hexdigest()
            blobs.append((blob, d))
            descriptors.append({"mediaType": media, "digest": d, "size": len(blob)})
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": descriptors[0], "layers": descriptors[1:]}).encode()
        return f"bench/small{i % 64}", blobs, manifest

    images = [prepare(i) for i in range(count)]
    local = threading.local()

    def request(method: str, path: str, body: bytes | None, headers: dict[str, str], expect: int):
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, int(port))
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read()
        if response.status != expect:
            raise RuntimeError(f"{server.name}: {method} {path} {response.status}: {text[:200]!r}")
        return response

    def push(i: int) -> None:
        repo, blobs, manifest = images[i]
        for blob, digest in blobs:
            # POST then PUT: what docker does (Distribution 2.8 ignores a digest on the POST).
            location = request("POST", f"/v2/{repo}/blobs/uploads/", b"", auth, 202).headers["Location"]
            path = urllib.parse.urlsplit(location)
            query = f"{path.query}&digest={digest}" if path.query else f"digest={digest}"
            request("PUT", f"{path.path}?{query}", blob, octet, 201)
        request("PUT", f"/v2/{repo}/manifests/t{i}", manifest, oci, 201)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(push, range(count)))
    return count / (time.perf_counter() - start)


def wrk(server: Server, url: str, seconds: int, method: str = "GET") -> tuple[float, float]:
    """requests/s and p99 latency (ms) with 16 connections, 2 threads."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = [f'wrk.method = "{method}"']
    for k, v in server.headers().items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    lines.append('wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json"')
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    value, unit = float(p99.group(1)), p99.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} error responses from {url}")
    return rps, p99_ms


def head_load(server: Server, path: str, seconds: int, connections: int = 16) -> float:
    """HEAD requests/s over keep-alive HTTP/1.1 connections (wrk and h2load
    wait for a body after a HEAD's Content-Length). Python asyncio: the client
    may be the bottleneck, for both servers alike."""
    import asyncio

    host, port = server.url.removeprefix("http://").split(":")
    auth = "".join(f"{k}: {v}\r\n" for k, v in server.headers().items())
    request = f"HEAD {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()
    done = 0

    async def connection(deadline: float) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"HEAD answered {head[:40]!r}")
            done += 1
        writer.close()

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(connection(start + seconds) for _ in range(connections)))
        return done / (time.perf_counter() - start)

    return asyncio.run(run())


def h2load(server: Server, url: str, seconds: int) -> tuple[float, float]:
    # The Accept header as for wrk: Distribution answers 404 to a client that does not accept OCI manifests.
    args = ["h2load", "-c16", "-m10", "-t2", f"-D{seconds}", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"]
    for k, v in server.headers().items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    failed = int(re.search(r"(\d+) failed", out).group(1))
    if failed:
        raise RuntimeError(f"h2load: {failed} failed requests")
    # "time for request:  min max mean sd" — report the max as an upper bound for p99.
    line = re.search(r"time for request:\s+\S+\s+(\S+)", out).group(1)
    value = float(re.match(r"[\d.]+", line).group(0))
    p = value / 1000 if line.endswith("us") else value * 1000 if line.endswith("s") and not line.endswith("ms") else value
    return rps, p


def tags(server: Server, count: int) -> tuple[float, float]:
    """Tag a manifest `count` times, then time the full list and an n=100 page (median of 5, ms)."""
    repo = "bench/tags"
    config = b'{"architecture":"amd64","os":"linux"}'
    d = "sha256:" + hashlib.sha256(config).hexdigest()
    h = server.headers()
    location = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", headers=h).headers["Location"]
    location = location if location.startswith("http") else server.url + location
    requests.put(with_query(location, f"digest={d}"), data=config, headers=h).raise_for_status()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d,
                                      "size": len(config)}, "layers": []})

    def put(i: int) -> None:
        requests.put(f"{server.url}/v2/{repo}/manifests/tag{i:05d}", data=manifest,
                     headers={**h, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    session = requests.Session()
    session.headers.update(h)

    def timed(url: str) -> float:
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            session.get(url).raise_for_status()
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    return timed(f"{server.url}/v2/{repo}/tags/list"), timed(f"{server.url}/v2/{repo}/tags/list?n=100")


# ---------------------------------------------------------------- machine limits

def machine_limits(work: Path) -> dict[str, float]:
    limits = {}
    out = subprocess.run(["openssl", "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "2"],
                         capture_output=True, text=True).stdout
    m = re.search(r"sha256\s+([\d.]+)k", out)
    if m:
        limits["sha256 MB/s (1 core)"] = float(m.group(1)) * 1000 / 1e6
    disk = durable_write(work)
    if disk:
        limits["disk durable write MB/s"] = disk
    limits["loopback TCP MB/s (1 stream)"] = loopback_tcp()
    return limits


def durable_write(work: Path, size: int = 512 << 20) -> float | None:
    """MB/s of `dd` writing random data with `conv=fdatasync`, as dd reports it."""
    target = work / "dd.bin"
    src = work / "random.bin"
    subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=open(src, "wb"), check=True)
    out = subprocess.run(["dd", f"if={src}", f"of={target}", "bs=1M", "conv=fdatasync"], capture_output=True, text=True).stderr
    target.unlink()
    src.unlink()
    m = re.search(r"([\d.]+) ([MG])B/s", out)
    return float(m.group(1)) * (1000 if m.group(2) == "G" else 1) if m else None


def loopback_tcp(total: int = 2 << 30, block: int = 4 << 20) -> float:
    """One TCP stream over loopback, 4 MiB sends and receives (the GIL is
    released in both): what any server's byte path here cannot beat."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = 0

    def receive() -> None:
        nonlocal received
        conn, _ = listener.accept()
        buffer = bytearray(block)
        while (n := conn.recv_into(buffer)) > 0:
            received += n
        conn.close()

    reader = threading.Thread(target=receive)
    reader.start()
    sender = socket.create_connection(listener.getsockname())
    data = os.urandom(block)
    start = time.perf_counter()
    for _ in range(total // block):
        sender.sendall(data)
    sender.close()
    reader.join()
    elapsed = time.perf_counter() - start
    listener.close()
    return received / elapsed / 1e6


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", default=str(REPO / ".build" / "release" / "berth"))
    parser.add_argument("--blob-mib", type=int, default=1024)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--tags", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3,
                        help="seconds of idle between phases before the next phase's memory peak starts")
    parser.add_argument("--workloads", default="blobs,small,requests,tags",
                        help="comma-separated subset of blobs,small,requests,tags (requests needs small)")
    parser.add_argument("--berth-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the Berth server (repeatable)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the peer (--no-peer: Berth alone, for A/B runs of Berth builds)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    blob = work / "blob.bin"
    subprocess.run(["head", "-c", str(args.blob_mib << 20), "/dev/urandom"], stdout=open(blob, "wb"), check=True)
    digest = "sha256:" + hashlib.file_digest(open(blob, "rb"), "sha256").hexdigest()
    mb = args.blob_mib * 1.048576

    results: dict[str, dict[str, float]] = {}
    limits = machine_limits(work)
    workloads = set(args.workloads.split(","))
    berth_env = dict(item.split("=", 1) for item in args.berth_env)
    factories = [lambda: Berth(args.berth, work, berth_env)] + ([lambda: Distribution(work)] if args.peer else [])
    for factory in factories:
        server = factory()
        server.start_anon_sampler()
        r: dict[str, float] = {}

        def phase_peaks(phase: str) -> None:
            r[f"peak RSS MiB: {phase}"] = server.phase_peak_mib()
            r[f"peak anon MiB: {phase}"] = server.phase_peak_anon_mib()
            # Both servers give memory back in the background once a load
            # ends (Berth's trimmer, Go's scavenger): the next phase's peak
            # counts from where this one settles, not from its tail.
            time.sleep(args.settle)
            server.phase_peak_mib()
            server.phase_peak_anon_mib()

        try:
            # The idle phase's peak is the start's; what an idle server keeps
            # once started (settled) is a row of its own.
            phase_peaks("idle")
            r["RSS MiB: idle, settled"] = server.status_kib("VmRSS") / 1024
            if "blobs" in workloads:
                # This VM's disk speed moves within a run: the pushes' share of
                # it is taken against `dd` right before them, too.
                r["disk durable write MB/s, before blobs"] = durable_write(work) or 0
                mono, chunked, pulls, pulls_again = [], [], [], []
                for _ in range(args.runs):
                    mono.append(mb / push_monolithic(server, blob, digest))
                    server.step_done("push")
                    # Right after the push (the blob is in the page cache if the
                    # push left it there), then once more (it is, either way).
                    pulls.append(mb / pull(server, digest))
                    pulls_again.append(mb / pull(server, digest))
                    server.step_done("pull")
                    delete_blob(server, digest)
                    chunked.append(mb / push_chunked(server, blob, digest, 8 << 20))
                    delete_blob(server, digest)
                    server.step_done("chunked push")
                r["blob push monolithic MB/s"] = statistics.median(mono)
                r["blob push chunked 8 MiB MB/s"] = statistics.median(chunked)
                r["blob pull MB/s"] = statistics.median(pulls)
                r["blob pull again (cached) MB/s"] = statistics.median(pulls_again)
                # The same push over TLS: HTTP/1.1, then HTTP/2 (flow-control windows matter
                # here) with curl and with nghttp; then a TLS pull.
                tls_pushes = (
                    ("h1", lambda: push_monolithic(server, blob, digest, tls="1.1")),
                    ("h2", lambda: push_monolithic(server, blob, digest, tls="2")),
                    ("h2 (nghttp)", lambda: push_nghttp(server, blob, digest)),
                    ("h2 (large frames)", lambda: push_h2_large_frames(server, blob, digest)),
                )
                for label, push in tls_pushes:
                    runs = []
                    for _ in range(args.runs):
                        runs.append(mb / push())
                        delete_blob(server, digest)
                        server.step_done(f"TLS push {label}")
                    r[f"blob push TLS {label} MB/s"] = statistics.median(runs)
                push_monolithic(server, blob, digest)
                server.step_done("push after the TLS pushes")
                r["blob pull TLS h1 MB/s"] = statistics.median(mb / pull(server, digest, tls="1.1") for _ in range(args.runs))
                server.step_done("TLS pull")
                lean = [pull_tls_lean(server, digest, args.blob_mib << 20) for _ in range(args.runs)]
                server.step_done("TLS pull (BIO client)")
                r["blob pull TLS h1 (BIO client) MB/s"] = statistics.median(mb / seconds for seconds, _ in lean)
                r["  its client CPU s per GiB"] = statistics.median(cpu * 1024 / args.blob_mib for _, cpu in lean)
                delete_blob(server, digest)
                # Keep one copy for the HEAD workload.
                push_monolithic(server, blob, digest)
                phase_peaks("blob push/pull")
                for label, kib in server.step_peaks.items():
                    r[f"  peak anon MiB: {label}"] = kib / 1024
            if "small" in workloads:
                r["small images/s (c=16)"] = small_images(server, args.images, 16)
                phase_peaks("small images")
            if "requests" in workloads:
                manifest_url = f"{server.url}/v2/bench/small0/manifests/t0"
                r["manifest GET req/s (h1, c=16)"], r["manifest GET p99 ms (h1)"] = wrk(server, manifest_url, args.seconds)
                tls = f"{server.tls_url}/v2/bench/small0/manifests/t0"
                r["manifest GET req/s (h2 TLS)"], r["manifest GET max ms (h2 TLS)"] = h2load(server, tls, args.seconds)
                if "blobs" not in workloads:
                    push_monolithic(server, blob, digest)  # the blob the HEAD load asks for
                r["HEAD blob req/s (py client)"] = head_load(server, f"/v2/{server.repo}/blobs/{digest}", args.seconds)
                small = push_small_blob(server)
                r["small blob GET req/s (h1, c=16)"], _ = wrk(server, f"{server.url}/v2/{server.repo}/blobs/{small}", args.seconds)
                phase_peaks("request load")
            if "tags" in workloads:
                r["tag list full ms"], r["tag list n=100 ms"] = tags(server, args.tags)
                phase_peaks("tags")
        finally:
            server.stop()
        r["peak RSS MiB"] = server.peak_rss_kib / 1024
        results[server.name] = r

    keys = list(results["berth"].keys())
    print(f"\n{'workload':<44} {'berth':>12} {'distribution':>14} {'ratio':>8}")
    for key in keys:
        b = results["berth"].get(key)
        d = results.get("distribution", {}).get(key)
        ratio = f"{b / d:8.2f}" if b is not None and d else "       -"
        ds = f"{d:14.1f}" if d is not None else f"{'-':>14}"
        print(f"{key:<44} {b:12.1f} {ds} {ratio}")
    print()
    for key, value in limits.items():
        print(f"{key:<44} {value:12.1f}")
    floor = min((v for k, v in limits.items() if not k.startswith("loopback")), default=0)
    if floor:
        if "blob push monolithic MB/s" in results["berth"]:
            print(f"{'berth push / min(sha256, disk)':<44} {results['berth']['blob push monolithic MB/s'] / floor:12.2f}")
    disk = results["berth"].get("disk durable write MB/s, before blobs")
    if disk:
        for kind in ("monolithic", "chunked 8 MiB"):
            print(f"{f'berth {kind} push / its dd':<44} {results['berth'][f'blob push {kind} MB/s'] / disk:12.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
