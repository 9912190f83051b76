"""Once it serves, the server gives back the pages of its binary that only
start-up ran (RocksDB's recovery, the certificate, the configuration), and
keeps serving: what it runs next comes back from the file. (Each phase of
the start gives back its own as the next begins, and the last 2 s after the
services start.)

Without that, the code pages a start touches stay resident for the life of
the process, so its file-backed RSS at idle is its peak at the start.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from helpers import random_bytes, sha256_digest

REG = "startuppages"


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {field: int(value) for field, value in re.findall(r"^(VmHWM|RssAnon|RssFile):\s+(\d+) kB", status, re.M)}


def released(memory: dict[str, int]) -> bool:
    """File pages well below the start's peak of them (the peak less the
    anonymous memory now, which a heap trim does not move below). Each phase
    of the start already gives its pages back, which lowers that peak to the
    largest phase's (26-27 MiB for a release build, file pages 4-6 MiB above
    what stays once serving): hence a margin in MiB, not a fraction."""
    return memory["RssFile"] <= memory["VmHWM"] - memory["RssAnon"] - 2048


def test_start_up_pages_are_given_back_and_serving_goes_on(make_server):
    srv = make_server(registries=[REG], label="startup-pages", extra_args=["--log-level", "debug"])
    pid = srv.proc.pid
    deadline = time.time() + 20
    # The last release comes 2 s after the services start, and says so.
    while "start-up pages given back" not in srv.log_text() and time.time() < deadline:
        time.sleep(0.1)
    line = next((l for l in srv.log_text().splitlines() if "start-up pages given back" in l), None)
    assert line is not None, "no release logged"
    # Resident pages it dropped: the code start-up ran since its last phase's release.
    dropped = int(json.loads(line)["resident_bytes_dropped"])
    assert dropped > 2 << 20, line
    memory = memory_kib(pid)
    assert released(memory), f"start-up pages still resident: {memory}"

    # Everything the server runs from here faults back in.
    data = random_bytes(3 << 20)
    client = srv.client()
    digest = client.upload_blob(f"{REG}/after-release", data)
    assert digest == sha256_digest(data)
    resp = client.get(f"/v2/{REG}/after-release/blobs/{digest}")
    assert resp.status_code == 200 and resp.content == data
    assert srv.running
