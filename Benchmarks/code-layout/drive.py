"""Drives every workload of Benchmarks/e2e/bench.py, briefly, against a running Berth: the
run `record` profiles to learn which functions Berth executes.

    python3 drive.py DATA_DIR HTTP_PORT HTTPS_PORT
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import bench  # noqa: E402
data, port, tls_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# bench.Berth, pointed at the running server instead of starting one.
s = object.__new__(bench.Berth)
s.name = "berth"
s.url, s.tls_url = f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}"
creds = json.loads((data / "bootstrap-credentials.json").read_text())
s.auth = (creds["access_key"], creds["secret_key"])
s.repo = "bench/app"
s.cert = str(data / "tls" / "cert.pem")
requests.post(s.url + "/api/v1/registries", json={"name": "bench"}, auth=s.auth)
work = Path(tempfile.mkdtemp(prefix="berth-layout-"))
blob = work / "blob.bin"
blob.write_bytes(os.urandom(12 << 20))
digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
tagged = "/v2/bench/tags/manifests/tag00001"  # bench.tags pushes it
bench_accept = "application/vnd.oci.image.manifest.v1+json"


def step(name, f):
    """Runs one workload; a failure is reported and the run goes on (the profile still counts)."""
    t = time.time()
    try:
        f()
    except Exception as e:
        print(name, "failed", e)
    print(name, f"{time.time() - t:.1f}s", flush=True)


step("mono", lambda: bench.push_monolithic(s, blob, digest))
step("pull", lambda: bench.pull(s, digest))
step("del", lambda: bench.delete_blob(s, digest))
step("chunked", lambda: bench.push_chunked(s, blob, digest, 4 << 20))
for name, push in (
    ("tls h1", lambda: bench.push_monolithic(s, blob, digest, tls="1.1")),
    ("tls h2", lambda: bench.push_monolithic(s, blob, digest, tls="2")),
    ("nghttp", lambda: bench.push_nghttp(s, blob, digest)),
    ("h2 large", lambda: bench.push_h2_large_frames(s, blob, digest)),
):
    bench.delete_blob(s, digest)
    step(name, push)
step("pull tls", lambda: bench.pull(s, digest, tls="1.1"))
step("pull tls lean", lambda: bench.pull_tls_lean(s, digest, 12 << 20))
step("pull h2", lambda: bench.pull(s, digest, tls="2"))
step("small", lambda: bench.small_images(s, 40, 16))
step("tags", lambda: bench.tags(s, 200))
auth = bench.auth_args(s)
for name, request in (
    ("manifest GET", lambda: bench.curl(*auth, "-o", "/dev/null", "-H", "Accept: " + bench_accept, s.url + tagged)),
    ("HEAD", lambda: bench.curl(*auth, "-I", "-o", "/dev/null", f"{s.url}/v2/{s.repo}/blobs/{digest}")),
    ("h2 manifest", lambda: bench.curl("--cacert", s.cert, "--http2", *auth, "-o", "/dev/null", s.tls_url + tagged)),
):
    for _ in range(5):
        step(name, request)
small = bench.push_small_blob(s)
step("small GET", lambda: bench.curl(*auth, "-o", "/dev/null", f"{s.url}/v2/{s.repo}/blobs/{small}"))
step("wrk", lambda: bench.wrk(s, s.url + tagged, 2))
step("head load", lambda: bench.head_load(s, f"/v2/{s.repo}/blobs/{digest}", 2))
# A few HTTP/2 requests (bench.h2load's 160 streams take minutes under valgrind).
step("h2load", lambda: subprocess.run(
    ["h2load", "-n", "40", "-c", "2", "-m", "4", "-H", "Authorization: " + s.headers()["Authorization"], s.tls_url + tagged],
    capture_output=True, check=True, timeout=600))
time.sleep(3)  # the periodic services run too
shutil.rmtree(work)
