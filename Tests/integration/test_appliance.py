"""The appliance files: install.sh into a DESTDIR staging root, the systemd
unit (systemd-analyze verify), `berth config check` and `berth init`."""

from __future__ import annotations

import json
import os
import shutil
import stat
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import berth_binary
from helpers import self_signed

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
    # The image's systemd makes the user, the data directory and the configuration's group at first boot.
    assert "u berth " in (stage / "usr/lib/sysusers.d/berth.conf").read_text()
    tmpfiles = (stage / "usr/lib/tmpfiles.d/berth.conf").read_text()
    assert "d /var/lib/berth 0700 berth berth" in tmpfiles and "z /etc/berth/berth.yaml 0640 root berth" in tmpfiles
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
    # A listener on every address names no host a client can use: the machine's name instead.
    assert lines["public_host"] == f"{os.uname().nodename}:443", lines
    assert lines["token_ttl"].startswith("43200")
    assert out.stderr == "", "the shipped configuration draws no warning"


def test_config_check_reports_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: /x\nhttps: 0.0.0.0:443\ntoken_ttl: 99999\n")
    out = subprocess.run([berth_binary(), "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "bad.yaml:3" in out.stderr and "token_ttl" in out.stderr


def test_config_check_warns_when_the_unit_would_kill_a_stopping_server(tmp_path):
    """Stopping takes up to shutdown_timeout, 5 s to cancel what is left and
    the store's close: within 15 s of the unit's TimeoutStopSec, systemd
    could kill the server before it is done."""
    unit = (APPLIANCE / "berth.service").read_text()
    stop = int(next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("TimeoutStopSec=")))
    config = tmp_path / "berth.yaml"
    for timeout, warned in ((stop - 14, True), (stop - 15, False)):
        config.write_text(f"shutdown_timeout: {timeout}\n")
        out = subprocess.run([berth_binary(), "config", "check", str(config)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert ("warning: shutdown_timeout" in out.stderr and "TimeoutStopSec" in out.stderr) == warned, (timeout, out.stderr)


def test_config_check_warns_of_a_gc_grace_shorter_than_a_push(tmp_path):
    config = tmp_path / "berth.yaml"
    for grace, warned in ((599, True), (600, False)):
        config.write_text(f"gc_grace: {grace}\n")
        out = subprocess.run([berth_binary(), "config", "check", str(config)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert ("warning: gc_grace 599 s is shorter than a push may take" in out.stderr) == warned, (grace, out.stderr)


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    self_signed(cert, key, name)
    return cert, key


def test_config_check_loads_the_operator_certificate(tmp_path):
    """A certificate and key that cannot serve together fail the check (the
    server would fail at start), named; a matching pair passes."""
    cert, key = _certificate(tmp_path, "a")
    _, other_key = _certificate(tmp_path, "b")
    config = tmp_path / "berth.yaml"
    for key_path, ok in ((key, True), (other_key, False), (tmp_path / "missing.pem", False)):
        config.write_text(f"data_dir: {tmp_path / 'data'}\nhttps: 127.0.0.1:8443\ntls_cert: {cert}\ntls_key: {key_path}\n")
        out = subprocess.run([berth_binary(), "config", "check", str(config)], capture_output=True, text=True)
        assert (out.returncode == 0) == ok, (key_path, out.stderr)
        if not ok:
            assert str(key_path) in out.stderr, out.stderr
    assert not (tmp_path / "data").exists(), "a check creates nothing"


def test_init_with_a_key_that_is_not_the_certificates_creates_nothing(tmp_path):
    """`berth init` runs first on the appliance (ExecStartPre): a certificate
    and key that cannot serve together fail it before anything is created."""
    cert, _ = _certificate(tmp_path, "a")
    _, other_key = _certificate(tmp_path, "b")
    out = subprocess.run([berth_binary(), "init", "--data-dir", str(tmp_path / "data"), "--https", "127.0.0.1:8443",
                          "--tls-cert", str(cert), "--tls-key", str(other_key)], capture_output=True, text=True)
    assert out.returncode != 0 and f"the TLS key '{other_key}' cannot serve the certificate" in out.stderr, out.stderr
    assert not (tmp_path / "data").exists()


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


def _sans(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
                          capture_output=True, text=True, check=True).stdout


def test_generated_certificate_names_what_clients_are_told_and_signs_for_nothing_else(tmp_path):
    """The SANs hold the hosts of public_host and private_host and each TLS
    listener's own address (for one on every address with no host_names, the
    machine's name, which the registry detail advertises); name constraints
    keep the certificate, trusted as a CA, from vouching for other sites."""
    data = tmp_path / "data"
    subprocess.run([berth_binary(), "init", "--data-dir", str(data), "--https", "192.0.2.7:5443",
                    "--private-https", "[fd00::7]:8443", "--public-host", "registry.example.com:443",
                    "--private-host", "registry.vpc.internal"], capture_output=True, check=True)
    cert = data / "tls/cert.pem"
    sans = _sans(cert)
    for name in ("localhost", "registry.example.com", "registry.vpc.internal", "192.0.2.7", "127.0.0.1"):
        assert name in sans, sans
    assert "FD00:0:0:0:0:0:0:7" in sans.upper(), sans
    constraints = subprocess.run(["openssl", "x509", "-noout", "-ext", "nameConstraints", "-in", str(cert)],
                                 capture_output=True, text=True, check=True).stdout
    assert "critical" in constraints and "Permitted" in constraints, constraints
    assert "DNS:registry.example.com" in constraints and "IP:192.0.2.7/255.255.255.255" in constraints, constraints
    # A certificate this key signs for another site does not verify against it;
    # one for a name it carries does (so it is the constraint that refuses).
    def signed_for(name: str) -> subprocess.CompletedProcess:
        key, csr, ext, leaf = (tmp_path / f"{name}.{suffix}" for suffix in ("key", "csr", "cnf", "pem"))
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True)
        ext.write_text(f"subjectAltName=DNS:{name}\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(cert), "-CAkey", str(data / "tls/key.pem"),
                        "-out", str(leaf), "-days", "1", "-extfile", str(ext)], check=True, capture_output=True)
        return subprocess.run(["openssl", "verify", "-CAfile", str(cert), str(leaf)], capture_output=True, text=True)

    forged = signed_for("bank.example")
    assert forged.returncode != 0 and "permitted subtree violation" in forged.stdout + forged.stderr, forged
    assert signed_for("registry.example.com").returncode == 0

    # A derived name (a new listener address) missing from it does not replace it,
    # a configured one (public_host) does.
    kept = cert.read_bytes()
    subprocess.run([berth_binary(), "init", "--data-dir", str(data), "--https", "192.0.2.8:5443",
                    "--private-https", "[fd00::7]:8443", "--public-host", "registry.example.com:443",
                    "--private-host", "registry.vpc.internal"], capture_output=True, check=True)
    assert cert.read_bytes() == kept
    subprocess.run([berth_binary(), "init", "--data-dir", str(data), "--https", "192.0.2.7:5443",
                    "--public-host", "other.example.com"], capture_output=True, check=True)
    assert cert.read_bytes() != kept and "other.example.com" in _sans(cert)

    wildcard = tmp_path / "wildcard"
    subprocess.run([berth_binary(), "init", "--data-dir", str(wildcard), "--https", "0.0.0.0:5443"],
                   capture_output=True, check=True)
    assert socket.gethostname().lower() in _sans(wildcard / "tls/cert.pem").lower()


def test_init_replaces_a_generated_certificate_that_misses_a_host_name_or_expires(tmp_path):
    data = tmp_path / "data"
    tls = data / "tls"
    base = [berth_binary(), "init", "--data-dir", str(data), "--host-name", "registry.example.internal"]
    subprocess.run(base, capture_output=True, check=True)
    first = (tls / "cert.pem").read_bytes()

    # A host name added to the configuration: a new certificate naming it, the old one kept aside.
    added = subprocess.run(base + ["--host-name", "10.0.0.5", "--host-name", "fd00::5"], capture_output=True, text=True,
                           check=True)
    sans = _sans(tls / "cert.pem")
    assert "registry.example.internal" in sans and "10.0.0.5" in sans and "FD00:0:0:0:0:0:0:5" in sans.upper(), sans
    assert (tls / "cert.pem.replaced").read_bytes() == first
    assert (tls / "key.pem.replaced").is_file() and _mode(tls / "key.pem") == 0o600
    # init logs JSON lines, as serve does; the reason is among them.
    notes = [json.loads(line) for line in added.stderr.splitlines() if line.strip()]
    assert any("does not name" in note.get("reason", "") for note in notes), added.stderr
    second = (tls / "cert.pem").read_bytes()
    subprocess.run(base + ["--host-name", "10.0.0.5"], capture_output=True, check=True)
    assert (tls / "cert.pem").read_bytes() == second, "a certificate naming every host is kept"

    # One that expires within 30 days is replaced.
    self_signed(tls / "cert.pem", tls / "key.pem", "old", days=3, san="DNS:localhost,DNS:registry.example.internal")
    expiring = (tls / "cert.pem").read_bytes()
    subprocess.run(base, capture_output=True, check=True)
    assert (tls / "cert.pem").read_bytes() != expiring and (tls / "cert.pem.replaced").read_bytes() == expiring
    end = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(800 * 86400), "-in", str(tls / "cert.pem")],
                         capture_output=True, text=True)
    assert end.returncode == 0, "the new certificate is valid for 825 days"
