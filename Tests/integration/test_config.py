"""`berth serve --config FILE`: the YAML file, BERTH_* variables and flags, in
rising precedence; bad keys and values are refused with the key and line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest
import requests

from conftest import _free_ports, berth_binary
from helpers import read_bootstrap_creds, self_signed


def _serve(args, env=None, cwd=None, timeout=30):
    return subprocess.Popen(
        [berth_binary(), "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
    )


def _wait_ready(url, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


def test_file_environment_and_flags_in_precedence(tmp_path):
    file_port, env_port = _free_ports(2)
    config = tmp_path / "berth.yaml"
    config.write_text(
        f"# comment\ndata_dir: {tmp_path / 'data'}\nhttp: 127.0.0.1:{file_port}\nhttps: 'off'\n"
        "max_blob_size: 1024\nlog_level: warning\n"
    )
    # The file's port is overridden by the environment; the flag overrides the file's size limit.
    proc = _serve(["--config", str(config), "--max-blob-size", "2048"], env={"BERTH_HTTP": f"127.0.0.1:{env_port}"})
    try:
        url = f"http://127.0.0.1:{env_port}"
        _wait_ready(url, proc)
        auth = read_bootstrap_creds(tmp_path / "data")  # the data_dir from the file is used
        assert requests.post(url + "/api/v1/registries", json={"name": "cfg"}, auth=auth).status_code == 201
        assert (tmp_path / "data" / "db").is_dir()
        ok = requests.post(url + "/v2/cfg/a/blobs/uploads/?digest=sha256:" + "0" * 64, data=b"x" * 1500, auth=auth)
        assert ok.status_code == 400 and ok.json()["errors"][0]["code"] == "DIGEST_INVALID"  # within 2048
        big = requests.post(url + "/v2/cfg/a/blobs/uploads/?digest=sha256:" + "0" * 64, data=b"x" * 3000, auth=auth)
        assert big.status_code == 413 and big.json()["errors"][0]["code"] == "SIZE_INVALID"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def _refused(tmp_path, text, *needles, env=None):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    proc = _serve(["--config", str(config), "--data-dir", str(tmp_path / "d")], env=env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    for needle in needles:
        assert needle in out.decode(), out.decode()
    assert not (tmp_path / "d").exists(), "a refused configuration must not create anything"


def test_unknown_key_names_key_and_line(tmp_path):
    _refused(tmp_path, "http: 127.0.0.1:0\nlisten_port: 80\n", "unknown key 'listen_port'", "bad.yaml:2")


def test_bad_value_names_key_and_line(tmp_path):
    _refused(tmp_path, "\n\nmax_blob_size: lots\n", "'max_blob_size' must be a number", "bad.yaml:3")
    _refused(tmp_path, "https: nowhere\n", "'https' must be ADDR:PORT or 'off'", "bad.yaml:1")
    _refused(tmp_path, "http2_stream_window: 65534\n", "'http2_stream_window' must be a number ≥ 65535", "bad.yaml:1")
    _refused(tmp_path, "http2_stream_window: 2147483648\n", "'http2_stream_window' must be at most 2147483647")
    _refused(tmp_path, "direct_writes: maybe\n", "'direct_writes' must be true or false", "bad.yaml:1")
    # Durations become integer nanoseconds at start: one that Int64 cannot hold would trap.
    _refused(tmp_path, "read_timeout: 1e300\n", "'read_timeout' must be a number from 1.0 to 86400.0", "bad.yaml:1")
    _refused(tmp_path, "shutdown_timeout: 1e300\n", "'shutdown_timeout' must be a number from 0.0 to 86400.0", "bad.yaml:1")
    # The first delete's GC timer took `inf` as a Duration and trapped; every duration is bounded.
    for key in ("gc_after_delete", "gc_grace", "untagged_grace"):
        _refused(tmp_path, f"{key}: inf\n", f"'{key}' must be a number from 0.0 to 31536000.0", "bad.yaml:1")
    _refused(tmp_path, "upload_timeout: 1e20\n", "'upload_timeout' must be a number from 1.0 to 2592000.0", "bad.yaml:1")
    _refused(tmp_path, "event_retention_days: 99999999999\n", "'event_retention_days' must be a number from 1 to 36500")
    # A disk reserve below what the store needs to open again after a full disk.
    _refused(tmp_path, "min_free_space: 0\n", "'min_free_space' must be a number ≥ 67108864", "bad.yaml:1")
    # Below 16 MiB an address's share could not hold a largest manifest.
    _refused(tmp_path, "response_memory: 1048576\n", "'response_memory' must be a number ≥ 16777216", "bad.yaml:1")
    _refused(tmp_path, "metrics_access: open\n", "'metrics_access' must be authenticated or anonymous", "bad.yaml:1")
    # A certificate name with a port would be a SAN no client matches.
    _refused(tmp_path, "host_names: [reg.example:443]\n", "'host_names' entries must be host names or IP addresses")
    _refused(tmp_path, "host_names: [reg_example]\n", "'host_names' entries must be host names or IP addresses")


def test_every_listener_off_is_refused(tmp_path):
    _refused(tmp_path, "http: off\nhttps: off\n", "every listener is off")


@pytest.mark.parametrize("direct", ["true", "false"])
def test_blobs_round_trip_with_direct_writes_on_and_off(tmp_path, direct):
    """Both write paths keep every byte: a monolithic and a chunked push of
    blobs that end mid-chunk, read back whole and by range, across a restart."""
    (port,) = _free_ports(1)
    args = ["--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{port}", "--https", "off"]
    url = f"http://127.0.0.1:{port}"
    blobs = [os.urandom(3 * 1048576 + 1234), os.urandom(5 * 1048576 + 77)]
    proc = _serve(args, env={"BERTH_DIRECT_WRITES": direct})
    try:
        _wait_ready(url, proc)
        auth = read_bootstrap_creds(tmp_path / "data")
        assert requests.post(url + "/api/v1/registries", json={"name": "dw"}, auth=auth).status_code == 201
        mono, chunked = blobs
        put = requests.post(f"{url}/v2/dw/a/blobs/uploads/?digest={_digest(mono)}", data=mono, auth=auth)
        assert put.status_code == 201, put.text
        location = requests.post(url + "/v2/dw/a/blobs/uploads/", auth=auth).headers["Location"]
        offset = 0
        for piece in (chunked[:1500000], chunked[1500000:4000000], chunked[4000000:]):
            patch = requests.patch(url + location if location.startswith("/") else location, data=piece, auth=auth,
                                   headers={"Content-Range": f"{offset}-{offset + len(piece) - 1}",
                                            "Content-Type": "application/octet-stream"})
            assert patch.status_code == 202, patch.text
            location, offset = patch.headers["Location"], offset + len(piece)
        sep = "&" if "?" in location else "?"
        done = requests.put(f"{url if location.startswith('/') else ''}{location}{sep}digest={_digest(chunked)}", auth=auth)
        assert done.status_code == 201, done.text
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    proc = _serve(args, env={"BERTH_DIRECT_WRITES": direct})
    try:
        _wait_ready(url, proc)
        for blob in blobs:
            got = requests.get(f"{url}/v2/dw/a/blobs/{_digest(blob)}", auth=auth)
            assert got.status_code == 200 and got.content == blob
            ranged = requests.get(f"{url}/v2/dw/a/blobs/{_digest(blob)}", auth=auth,
                                  headers={"Range": "bytes=1048000-2097999"})
            assert ranged.status_code == 206 and ranged.content == blob[1048000:2098000]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_bad_environment_value_is_named(tmp_path):
    _refused(tmp_path, "", "BERTH_UPLOAD_TIMEOUT", env={"BERTH_UPLOAD_TIMEOUT": "soon"})


def test_certificate_and_key_go_together(tmp_path):
    _refused(tmp_path, "tls_cert: /tmp/x.pem\n", "'tls_cert' and 'tls_key' must be set together")


def test_operator_certificate_is_served(tmp_path):
    cert, key = tmp_path / "op-cert.pem", tmp_path / "op-key.pem"
    self_signed(cert, key, "berth-operator-test", san="IP:127.0.0.1")
    (port,) = _free_ports(1)
    proc = _serve(["--data-dir", str(tmp_path / "data"), "--http", "off", "--https", f"127.0.0.1:{port}",
                   "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                auth = read_bootstrap_creds(tmp_path / "data")  # written before the listeners open
                r = requests.get(url + "/v2/", verify=str(cert), timeout=1, auth=auth)
                break
            except (requests.ConnectionError, FileNotFoundError):
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.status_code == 200
        assert not (tmp_path / "data" / "tls").exists(), "no certificate is generated when the operator gives one"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_a_listener_that_cannot_bind_is_named(tmp_path):
    (port,) = _free_ports(1)
    proc = _serve(["--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{port}", "--https", "off",
                   "--private-http", f"127.0.0.1:{port}"])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out.decode()
    assert f"http listener 127.0.0.1:{port}" in out.decode() and "in use" in out.decode(), out.decode()


def test_a_certificate_that_cannot_be_loaded_is_named(tmp_path):
    (port,) = _free_ports(1)
    missing = tmp_path / "nowhere" / "cert.pem"
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    proc = _serve(["--data-dir", str(tmp_path / "data"), "--http", "off", "--https", f"127.0.0.1:{port}",
                   "--tls-cert", str(missing), "--tls-key", str(key)])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out.decode()
    assert f"cannot load the TLS certificate '{missing}' (missing or not readable by this user)" in out.decode(), out.decode()
    assert not (tmp_path / "data").exists(), "the operator's certificate is loaded before anything is created"


def test_a_key_that_is_not_the_certificates_is_named(tmp_path):
    keys = []
    for name in ("a", "b"):
        self_signed(tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem", name)
        keys.append(tmp_path / f"{name}-key.pem")
    (port,) = _free_ports(1)
    proc = _serve(["--data-dir", str(tmp_path / "data"), "--http", "off", "--https", f"127.0.0.1:{port}",
                   "--tls-cert", str(tmp_path / "a-cert.pem"), "--tls-key", str(keys[1])])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out.decode()
    assert f"the TLS key '{keys[1]}' cannot serve the certificate" in out.decode(), out.decode()
    assert not (tmp_path / "data").exists()


def _handshake(port: int, *args: str) -> str:
    """openssl s_client's report of a handshake with the given options."""
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2,http/1.1", *args],
                          input="", capture_output=True, text=True, timeout=30).stdout


def test_tls_takes_only_tls12_with_aead_and_newer(tmp_path):
    """No TLS 1.0 or 1.1, no CBC or static-RSA suites; TLS 1.2 with ECDHE and
    AES-GCM, and TLS 1.3, both agree on h2 (RFC 9113 §9.2)."""
    (port,) = _free_ports(1)
    proc = _serve(["--data-dir", str(tmp_path / "data"), "--http", "off", "--https", f"127.0.0.1:{port}"])
    try:
        deadline = time.time() + 30
        while "BEGIN CERTIFICATE" not in _handshake(port, "-tls1_3"):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        weak = "DEFAULT:@SECLEVEL=0"
        for refused in (["-tls1", "-cipher", weak], ["-tls1_1", "-cipher", weak],
                        ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"],
                        ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"]):
            out = _handshake(port, *refused)
            assert "BEGIN CERTIFICATE" not in out and "Cipher is (NONE)" in out, (refused, out)
        for accepted, cipher in ((["-tls1_2"], "ECDHE-ECDSA-AES"), (["-tls1_3"], "TLS_AES_")):
            out = _handshake(port, *accepted)
            assert "ALPN protocol: h2" in out and f"Cipher is {cipher}" in out, (accepted, out)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_metrics_tell_when_the_served_certificate_expires(server):
    """The served certificate's expiry is a gauge an operator can alert on
    (the generated one is renewed 30 days ahead; an operator's is theirs)."""
    import re
    import time

    text = server.client().get("/metrics").text
    found = re.search(r"^berth_tls_certificate_expiry_timestamp_seconds (\S+)$", text, re.M)
    assert found, text[:2000]
    days = (float(found.group(1)) - time.time()) / 86400
    # The generated certificate lives 825 days, from its start in whole seconds (rounded up).
    assert 800 < days <= 825 + 2 / 86400, days


def test_config_check_shows_and_refuses_trusted_proxy_ranges(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("trusted_proxies:\n  - 10.0.0.0/8\n  - fd00::/8\n  - 192.0.2.1\n")
    out = subprocess.run([berth_binary(), "config", "check", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "trusted_proxies: [10.0.0.0/8, fd00::/8, 192.0.2.1]" in out.stdout, out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("trusted_proxies: [10.0.0.0/33]\n")
    out = subprocess.run([berth_binary(), "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "'trusted_proxies' entries must be IP addresses or ranges" in out.stderr, out.stderr


def test_a_mistyped_variable_is_warned_about_and_an_empty_certificate_path_is_unset(tmp_path):
    """A BERTH_ variable that names no setting is ignored, but said so (a
    typo in a unit's Environment= would otherwise pass unseen); an empty
    BERTH_TLS_CERT / BERTH_TLS_KEY unsets the file's pair, as an empty
    BERTH_PUBLIC_HOST does, so the generated certificate serves again."""
    config = tmp_path / "berth.yaml"
    config.write_text(f"tls_cert: {tmp_path / 'gone-cert.pem'}\ntls_key: {tmp_path / 'gone-key.pem'}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}

    def check(**env):
        return subprocess.run([berth_binary(), "config", "check", str(config)], capture_output=True, text=True,
                              env={**clean, **env})

    out = check()
    assert out.returncode != 0 and "gone-cert.pem" in out.stderr, out.stderr
    out = check(BERTH_TLS_CERT="", BERTH_TLS_KEY="", BERTH_DATADIR="/srv/berth", BERTH_EVENT_RETENTION="7")
    assert out.returncode == 0, out.stderr
    assert "tls_cert" not in out.stdout or "gone-cert.pem" not in out.stdout, out.stdout
    for name in ("BERTH_DATADIR", "BERTH_EVENT_RETENTION"):
        assert f"warning: environment variable {name} names no setting: ignored" in out.stderr, out.stderr
    assert "BERTH_TLS_CERT" not in out.stderr, out.stderr

    # serve says it too, in its log.
    (port,) = _free_ports(1)
    proc = subprocess.Popen(
        [berth_binary(), "serve", "--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{port}", "--https", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**clean, "BERTH_MAX_BLOBSIZE": "1024"}, start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    log = proc.stdout.read().decode()
    assert "environment variable BERTH_MAX_BLOBSIZE names no setting: ignored" in log, log
