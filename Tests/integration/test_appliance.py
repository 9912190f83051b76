"""The appliance files: install.sh into a DESTDIR staging root, the systemd
unit (systemd-analyze verify), `berth config check` and `berth init`."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import berth_binary

REPO = Path(__file__).resolve().parents[2]
APPLIANCE = REPO / "appliance"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_destdir(tmp_path):
    stage = tmp_path / "stage"
    out = subprocess.run(
        ["bash", str(APPLIANCE / "install.sh"), berth_binary()],
        env={**os.environ, "DESTDIR": str(stage)}, capture_output=True, text=True, check=True,
    )
    assert "staged under" in out.stdout
    binary = stage / "usr/local/bin/berth"
    assert binary.is_file() and _mode(binary) == 0o755
    assert _mode(stage / "etc/berth/berth.yaml") == 0o640
    assert (stage / "etc/systemd/system/berth.service").is_file()
    assert _mode(stage / "var/lib/berth") == 0o700
    # A second run keeps an operator's edited configuration.
    config = stage / "etc/berth/berth.yaml"
    config.write_text("log_level: debug\n")
    subprocess.run(["bash", str(APPLIANCE / "install.sh"), berth_binary()],
                   env={**os.environ, "DESTDIR": str(stage)}, capture_output=True, check=True)
    assert config.read_text() == "log_level: debug\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    unit = (APPLIANCE / "berth.service").read_text()
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/berth",
                      "LimitNOFILE=", "Restart=on-failure", "User=berth"):
        assert directive in unit
    # Point the unit at a real binary so verify can check ExecStart.
    staged = tmp_path / "berth.service"
    staged.write_text(unit.replace("/usr/local/bin/berth", berth_binary()))
    result = subprocess.run(["systemd-analyze", "verify", str(staged)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_default_config_checks_clean():
    out = subprocess.run([berth_binary(), "config", "check", str(APPLIANCE / "berth.yaml")],
                         capture_output=True, text=True, check=True)
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert lines["data_dir"] == "/var/lib/berth"
    assert lines["https"] == "0.0.0.0:443"
    assert lines["token_ttl"].startswith("43200")


def test_config_check_reports_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: /x\nhttps: 0.0.0.0:443\ntoken_ttl: 99999\n")
    out = subprocess.run([berth_binary(), "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "bad.yaml:3" in out.stderr and "token_ttl" in out.stderr


def test_init_is_idempotent(tmp_path):
    data = tmp_path / "data"
    args = [berth_binary(), "init", "--data-dir", str(data), "--host-name", "registry.example.internal"]
    first = subprocess.run(args, capture_output=True, text=True, check=True)
    creds = data / "bootstrap-credentials.json"
    assert _mode(creds) == 0o600 and _mode(data) == 0o700
    assert not (data / "bootstrap-credentials.json.partial").exists(), "written aside, then renamed into place"
    secret = json.loads(creds.read_text())["secret_key"]
    assert secret not in first.stdout + first.stderr, "the secret must never be printed"
    cert = (data / "tls/cert.pem").read_bytes()
    san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(data / "tls/cert.pem")],
                         capture_output=True, text=True, check=True).stdout
    assert "registry.example.internal" in san and "127.0.0.1" in san
    subprocess.run(args, capture_output=True, check=True)
    assert json.loads(creds.read_text())["secret_key"] == secret
    assert (data / "tls/cert.pem").read_bytes() == cert
