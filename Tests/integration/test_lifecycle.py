"""Operations: one server per data directory, graceful SIGTERM during an
upload, online backup while pushing and restore, /metrics and JSON logs."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

from conftest import _free_ports, berth_binary


class Server:
    """A bare `berth serve` on loopback, independent of the shared fixtures."""

    def __init__(self, data: Path, *extra: str, auth: tuple[str, str] | None = None, env: dict[str, str] | None = None):
        self.data = data
        self.port = _free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / f"{data.name}-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [berth_binary(), "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{self.port}", "--https", "off", *extra],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        deadline = time.time() + 30
        while True:
            assert self.proc.poll() is None, (data.parent / f"{data.name}-{self.port}.log").read_text()
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "server did not become ready"
            time.sleep(0.1)
        if auth is None:
            creds = json.loads((data / "bootstrap-credentials.json").read_text())
            auth = (creds["access_key"], creds["secret_key"])
        self.auth = auth

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        return code

    def push_blob(self, name: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{self.url}/v2/{name}/blobs/uploads/?digest={digest}", data=data, auth=self.auth,
                          headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return digest

    def push_image(self, name: str, tag: str, layer: bytes) -> str:
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        cd, ld = self.push_blob(name, config), self.push_blob(name, layer)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": len(layer)}],
        }).encode()
        r = requests.put(f"{self.url}/v2/{name}/manifests/{tag}", data=manifest, auth=self.auth,
                         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text
        return r.headers["Docker-Content-Digest"]


def test_second_server_on_same_data_dir_is_refused(tmp_path):
    first = Server(tmp_path / "data")
    try:
        port = _free_ports(1)[0]
        second = subprocess.run(
            [berth_binary(), "serve", "--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{port}", "--https", "off"],
            capture_output=True, text=True, timeout=30,
        )
        assert second.returncode != 0
        assert "in use by another Berth process" in second.stderr + second.stdout
        assert requests.get(first.url + "/readyz").status_code == 200, "the first server is unaffected"
    finally:
        assert first.stop() == 0


def test_sighup_without_a_tls_listener_changes_nothing(tmp_path):
    """`systemctl reload` sends SIGHUP; a server with no TLS listener has no
    certificate to reload and must keep serving, not end as if stopped."""
    server = Server(tmp_path / "data")
    try:
        for _ in range(3):
            server.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        assert server.proc.poll() is None, "SIGHUP ended the server"
        assert requests.get(server.url + "/v2/", auth=server.auth, timeout=5).status_code == 200
    finally:
        assert server.stop() == 0


def test_sigterm_is_not_held_by_a_connection_still_in_its_tls_handshake(tmp_path):
    """A client that connects to the TLS listener and sends nothing has no
    protocol yet to drain it: the stop closes it at once. It used to hold the
    stop until shutdown_timeout, then its cancellation past the 5 s allowed,
    and the server died of a fatal error without closing its store."""
    tls_port = _free_ports(1)[0]
    server = Server(tmp_path / "data", "--https", f"127.0.0.1:{tls_port}", "--shutdown-timeout", "3")
    silent = socket.create_connection(("127.0.0.1", tls_port))
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 3, "the stop waited for the handshake"
        assert b"stopped" in (tmp_path / f"data-{server.port}.log").read_bytes()
    finally:
        silent.close()


def test_an_upload_the_stop_cuts_off_is_the_servers_doing(tmp_path):
    """An upload still sending when shutdown_timeout runs out is cut off by
    the stop, not by its client: logged as such, answered 503 (which clients
    retry) if anything can be, never counted as a client's 400 or 499."""
    server = Server(tmp_path / "data", "--shutdown-timeout", "1")
    requests.post(server.url + "/api/v1/registries", json={"name": "cut"}, auth=server.auth).raise_for_status()
    location = requests.post(server.url + "/v2/cut/app/blobs/uploads/", auth=server.auth).headers["Location"]
    auth = "Basic " + __import__("base64").b64encode(f"{server.auth[0]}:{server.auth[1]}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall((f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
                  f"Content-Type: application/octet-stream\r\nContent-Length: {3 << 20}\r\n\r\n").encode()
                 + os.urandom(1 << 20))
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)  # and the client sends nothing more
    sock.settimeout(20)
    reply = b""
    try:
        while chunk := sock.recv(4096):
            reply += chunk
    except ConnectionResetError:
        pass
    sock.close()
    assert server.proc.wait(30) == 0
    server.log.close()
    log = (tmp_path / f"data-{server.port}.log").read_text()
    assert "request cut off by the server's stop" in log, log
    assert "request abandoned by its client" not in log, log
    line = next(json.loads(l) for l in log.splitlines() if '"route":"v2.uploads"' in l and '"method":"PATCH"' in l)
    assert line["status"] == 503, line
    assert reply == b"" or reply.startswith(b"HTTP/1.1 503"), reply[:200]


def test_a_registry_delete_the_stop_cuts_off_finishes_and_is_audited(tmp_path):
    """A forced registry delete still emptying its bucket when shutdown_timeout
    runs out (the stop cancels the requests in flight) runs to its end and
    records its audit entry: its records went in one write, so stopping it
    there would have left a registry gone with no trace of who deleted it."""
    server = Server(tmp_path / "data", "--shutdown-timeout", "0")
    requests.post(server.url + "/api/v1/registries", json={"name": "cutshort"}, auth=server.auth).raise_for_status()
    session = requests.Session()
    session.auth = server.auth
    for i in range(3000):  # a bucket of 3,000 objects takes a few hundred ms to empty
        blob = b"blob %d" % i
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = session.post(f"{server.url}/v2/cutshort/app/blobs/uploads/?digest={digest}", data=blob,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    deleted: dict[str, object] = {}

    def delete() -> None:
        try:
            deleted["status"] = session.delete(server.url + "/api/v1/registries/cutshort?force=true", timeout=30).status_code
        except requests.RequestException as error:
            deleted["error"] = error

    thread = threading.Thread(target=delete)
    thread.start()
    time.sleep(0.1)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    thread.join(30)
    server.log.close()
    again = Server(tmp_path / "data")
    try:
        assert requests.get(again.url + "/api/v1/registries/cutshort", auth=again.auth).status_code == 404, deleted
        entries = requests.get(again.url + "/api/v1/audit-logs", params={"action": "registry.delete"}, auth=again.auth).json()
        assert [e["target"] for e in entries["items"]] == ["cutshort"], (deleted, entries)
    finally:
        assert again.stop() == 0


def test_sigterm_finishes_an_upload_in_flight(tmp_path):
    server = Server(tmp_path / "data", "--shutdown-timeout", "20")
    requests.post(server.url + "/api/v1/registries", json={"name": "life"}, auth=server.auth).raise_for_status()
    start = requests.post(server.url + "/v2/life/app/blobs/uploads/", auth=server.auth)
    assert start.status_code == 202
    location = start.headers["Location"]
    body = os.urandom(3 << 20)
    auth = "Basic " + __import__("base64").b64encode(f"{server.auth[0]}:{server.auth[1]}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Range: 0-{len(body) - 1}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[: 1 << 20])
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)  # mid-request
    time.sleep(0.5)
    assert server.proc.poll() is None, "the server waits for the request in flight"
    sock.sendall(body[1 << 20:])
    sock.settimeout(20)
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    sock.close()
    assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
    assert server.proc.wait(30) == 0
    server.log.close()
    # The acknowledged bytes are there after the restart.
    again = Server(tmp_path / "data")
    try:
        status = requests.get(again.url + location, auth=again.auth)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(body) - 1}"
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        done = requests.put(f"{again.url}{location}?digest={digest}", auth=again.auth)
        assert done.status_code == 201, done.text
    finally:
        assert again.stop() == 0


def test_online_backup_while_pushing_then_restore(tmp_path):
    # A local zone 5.5 h from UTC (a POSIX rule: no tzdata needed): the backup's default name stays UTC.
    server = Server(tmp_path / "data", env={"TZ": "XST-5:30"})
    requests.post(server.url + "/api/v1/registries", json={"name": "bk"}, auth=server.auth).raise_for_status()
    pushed: dict[str, str] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def pusher():
        i = 0
        try:
            while not stop.is_set() and i < 200:
                tag = f"t{i}"
                # Over 1 MiB: full chunks live in extent files, which the backup links beside its checkpoint.
                pushed[tag] = server.push_image("bk/app", tag, os.urandom(1 << 20) + tag.encode())
                i += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=pusher)
    thread.start()
    try:
        time.sleep(1.0)
        r = requests.post(server.url + "/api/v1/system/backups", json={"name": "mid"}, auth=server.auth)
        assert r.status_code == 201, r.text
        backup = r.json()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert backup["artifacts"] >= 1 and len(pushed) > backup["tags"] >= 1, (backup, len(pushed))
    assert requests.post(server.url + "/api/v1/system/backups", json={"name": "mid"}, auth=server.auth).status_code == 409
    anonymous = requests.post(server.url + "/api/v1/system/backups", json={"name": "x"})
    assert anonymous.status_code == 401
    # Names are the spec's ASCII: letters of other scripts, digits and fractions are refused.
    for name in ("bäckup", "٣", "½", "ｂａｃｋｕｐ", ".hidden", "a/b", "x" * 129):
        refused = requests.post(server.url + "/api/v1/system/backups", json={"name": name}, auth=server.auth)
        assert refused.status_code == 400, (name, refused.status_code, refused.text)
    # Unnamed, a backup is named for its UTC time.
    unnamed = requests.post(server.url + "/api/v1/system/backups", json={}, auth=server.auth)
    assert unnamed.status_code == 201, unnamed.text
    stamp = re.fullmatch(r"backup-(\d{8}T\d{6})Z", Path(unnamed.json()["path"]).name)
    assert stamp, unnamed.json()
    taken = datetime.datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - taken).total_seconds()) < 120, stamp.group(0)
    assert server.stop() == 0

    listing = json.loads((Path(backup["path"]) / "backup.json").read_text())
    restored = tmp_path / "restored"
    # A fresh volume's root holds lost+found: it counts as empty.
    (restored / "lost+found").mkdir(parents=True)
    subprocess.run([berth_binary(), "restore", "--from", backup["path"], "--data-dir", str(restored)], check=True,
                   capture_output=True)
    # Restoring over a non-empty directory is refused.
    again = subprocess.run([berth_binary(), "restore", "--from", backup["path"], "--data-dir", str(restored)],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "not empty" in again.stderr

    # Users and keys are in the backup: the original admin key works on the copy.
    copy = Server(restored, auth=server.auth)
    assert not (restored / "bootstrap-credentials.json").exists(), "no new admin on a restored store"
    try:
        assert len(listing["artifacts"]) == backup["artifacts"]
        for entry in listing["artifacts"]:
            name, digest = entry.split("@")
            m = requests.get(f"{copy.url}/v2/{name}/manifests/{digest}", auth=copy.auth)
            assert m.status_code == 200
            assert "sha256:" + hashlib.sha256(m.content).hexdigest() == digest
            for layer in [m.json()["config"]] + m.json()["layers"]:
                b = requests.get(f"{copy.url}/v2/{name}/blobs/{layer['digest']}", auth=copy.auth)
                assert b.status_code == 200 and "sha256:" + hashlib.sha256(b.content).hexdigest() == layer["digest"]
        tags = requests.get(f"{copy.url}/v2/bk/app/tags/list", auth=copy.auth).json()["tags"]
        assert len(tags) == backup["tags"]
        for tag in tags:
            assert requests.head(f"{copy.url}/v2/bk/app/manifests/{tag}", auth=copy.auth).headers[
                "Docker-Content-Digest"] == pushed[tag]
    finally:
        assert copy.stop() == 0


def test_a_backup_restores_after_an_upload_it_holds_goes_on(tmp_path):
    """On the store's file system a backup holds hard links to the live extent
    files: an upload appending after the backup grows the backup's copy of its
    file too. The restore still takes it, since the backup's records name only
    the bytes it had."""
    server = Server(tmp_path / "data")
    requests.post(server.url + "/api/v1/registries", json={"name": "grow"}, auth=server.auth).raise_for_status()
    location = requests.post(server.url + "/v2/grow/app/blobs/uploads/", auth=server.auth).headers["Location"]
    first, second = os.urandom(2 << 20), os.urandom(2 << 20)
    headers = {"Content-Type": "application/octet-stream"}
    r = requests.patch(server.url + location, data=first, auth=server.auth, headers=headers)
    assert r.status_code == 202, r.text
    backup = requests.post(server.url + "/api/v1/system/backups", json={"name": "mid-upload"}, auth=server.auth)
    assert backup.status_code == 201, backup.text
    r = requests.patch(server.url + r.headers["Location"], data=second, auth=server.auth, headers=headers)
    assert r.status_code == 202, r.text
    assert server.stop() == 0
    restored = tmp_path / "restored"
    out = subprocess.run([berth_binary(), "restore", "--from", backup.json()["path"], "--data-dir", str(restored)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    copy = Server(restored, auth=server.auth)
    try:
        status = requests.get(copy.url + location, auth=copy.auth)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}", status.headers
    finally:
        assert copy.stop() == 0


def test_offline_commands_find_the_data_directory_as_serve_does(tmp_path):
    """`backup` never makes up an empty store to back up; `registry create` and
    `backup` take the data directory from --config or BERTH_DATA_DIR, as `serve`."""
    def berth(*args, cwd=tmp_path, env=None):
        return subprocess.run([berth_binary(), *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **(env or {})})

    # In a directory with no store, the default ./berth-data: refused, nothing created.
    r = berth("backup", "--to", str(tmp_path / "b0"))
    assert r.returncode != 0 and "no Berth store" in r.stderr, r
    assert not (tmp_path / "b0").exists() and not (tmp_path / "berth-data").exists()

    data = tmp_path / "appliance-data"
    config = tmp_path / "berth.yaml"
    config.write_text(f"data_dir: {data}\n")
    r = berth("registry", "create", "fromconfig", "--config", str(config))
    assert r.returncode == 0, r
    assert (data / "db" / "CURRENT").exists() and (data.stat().st_mode & 0o777) == 0o700
    r = berth("registry", "create", "fromenv", env={"BERTH_DATA_DIR": str(data)})
    assert r.returncode == 0, r
    r = berth("backup", "--config", str(config), "--to", str(tmp_path / "b1"))
    assert r.returncode == 0 and "backed up" in r.stdout, r
    assert not (tmp_path / "berth-data").exists()

    # A copy cut short (rsync sends backup.json before db/), or a file of another
    # size, is refused by the manifest's file list, nothing restored.
    import shutil
    listed = json.loads((tmp_path / "b1" / "backup.json").read_text())["files"]
    assert "db/CURRENT" in listed, sorted(listed)
    for damage in ("missing", "short"):
        broken = tmp_path / f"b1-{damage}"
        shutil.copytree(tmp_path / "b1", broken)
        victim = broken / "db" / "CURRENT"
        if damage == "missing":
            victim.unlink()
        else:
            victim.write_bytes(victim.read_bytes()[:-1])
        r = berth("restore", "--from", str(broken), "--data-dir", str(tmp_path / "restored"))
        assert r.returncode != 0 and "not whole" in r.stderr and "db/CURRENT" in r.stderr, r
        assert not (tmp_path / "restored").exists()

    # A backup whose manifest is not whole (a power cut mid-write) is not restored.
    (tmp_path / "b1" / "backup.json").write_text('{"createdAt": ')
    r = berth("restore", "--from", str(tmp_path / "b1"), "--data-dir", str(tmp_path / "restored"))
    assert r.returncode != 0 and "not whole" in r.stderr, r
    assert not (tmp_path / "restored").exists()

    server = Server(data)
    try:
        names = [x["name"] for x in requests.get(server.url + "/api/v1/registries", auth=server.auth).json()["items"]]
        assert {"fromconfig", "fromenv"} <= set(names), names
    finally:
        assert server.stop() == 0


def test_metrics_need_a_global_reader_unless_opened(tmp_path):
    """By default /metrics answers a global admin or viewer (Basic), as the
    admin API does; metrics_access: anonymous opens it to a scraper without a key."""
    server = Server(tmp_path / "data")
    try:
        anonymous = requests.get(server.url + "/metrics")
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHORIZED", anonymous.text
        assert "berth_" not in anonymous.text
        wrong = requests.get(server.url + "/metrics", auth=(server.auth[0], "x" * 40))
        assert wrong.status_code == 401, wrong.text
        # A registry token is for /v2: here it is refused like on the admin API.
        token = requests.get(server.url + "/auth/token", params={"service": "berth"}, auth=server.auth).json()["token"]
        bearer = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 401 and "Basic" in bearer.json()["detail"], bearer.text
        # A user bound only to one registry reads none of it.
        assert requests.post(server.url + "/api/v1/registries", json={"name": "m1"}, auth=server.auth).status_code == 201
        assert requests.post(server.url + "/api/v1/users", json={"name": "scoped"}, auth=server.auth).status_code == 201
        bound = requests.post(server.url + "/api/v1/users/scoped/roles", json={"role": "admin", "registry": "m1"},
                              auth=server.auth)
        assert bound.status_code == 201, bound.text
        key = requests.post(server.url + "/api/v1/users/scoped/access-keys", auth=server.auth).json()
        scoped = requests.get(server.url + "/metrics", auth=(key["access_key"], key["secret_key"]))
        assert scoped.status_code == 403 and scoped.json()["code"] == "FORBIDDEN", scoped.text
        allowed = requests.get(server.url + "/metrics", auth=server.auth)
        assert allowed.status_code == 200 and "berth_http_requests_total" in allowed.text
        assert 'route="metrics",method="GET",status="401"' in allowed.text
        # The router skips empty path components; so does the check of credentials.
        for path in ("/metrics/", "//metrics"):
            assert requests.get(server.url + path, auth=server.auth).status_code == 200, path
            assert requests.get(server.url + path).status_code == 401, path
    finally:
        assert server.stop() == 0
    server = Server(tmp_path / "data", "--metrics-access", "anonymous")
    try:
        opened = requests.get(server.url + "/metrics")
        assert opened.status_code == 200 and "berth_http_requests_total" in opened.text
        # Open means open: credentials a scraper still sends are not checked.
        stale = requests.get(server.url + "/metrics", auth=(server.auth[0], "x" * 40))
        assert stale.status_code == 200, stale.text
    finally:
        assert server.stop() == 0


def test_metrics_and_json_logs(tmp_path):
    server = Server(tmp_path / "data", "--upload-timeout", "2")  # maintenance runs every second
    try:
        time.sleep(1.5)
        requests.get(server.url + "/v2/", auth=server.auth, headers={"X-Request-Id": "req-42"})
        requests.get(server.url + "/v2/")
        metrics = requests.get(server.url + "/metrics", auth=server.auth)
        assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
        text = metrics.text
        assert 'berth_http_requests_total{route="v2.base",method="GET",status="200"} 1' in text
        assert 'berth_http_requests_total{route="v2.base",method="GET",status="401"} 1' in text
        for name in ("berth_http_request_duration_seconds_bucket", "berth_uploads_open", "berth_storage_logical_bytes",
                     "berth_storage_physical_bytes", "berth_rocksdb_pending_compaction_bytes", "berth_rocksdb_write_stopped",
                     'berth_job_runs_total{job="maintenance",outcome="success"}', 'berth_jobs_running{job="maintenance"}'):
            assert name in text, name
        gauges = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("berth_rocksdb_")}
        # The bootstrap admin's writes sit in a memtable; on a fresh store the
        # block cache and the table readers may hold nothing yet, but are reported.
        assert gauges["berth_rocksdb_memtable_bytes"] > 0, gauges
        assert {"berth_rocksdb_block_cache_bytes", "berth_rocksdb_table_readers_bytes"} <= gauges.keys(), gauges
    finally:
        assert server.stop() == 0
    lines = [json.loads(line) for line in (tmp_path / f"data-{server.port}.log").read_text().splitlines() if line.startswith("{")]
    requests_logged = [line for line in lines if line.get("message") == "request"]
    mine = [line for line in requests_logged if line.get("request_id") == "req-42"]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["status"] == 200 and entry["route"] == "v2.base" and entry["user"] == "admin"
    assert entry["remote"] == "127.0.0.1" and isinstance(entry["duration_ms"], (int, float))
    assert all(server.auth[1] not in json.dumps(line) for line in lines), "no secret in the logs"
