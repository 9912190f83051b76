"""A new certificate without a restart (appliance/README.md, "TLS with your
own certificate"): on SIGHUP (and every minute) the server looks at its
certificate and key files and serves a changed pair to new connections; a
pair that does not load is logged and the served one kept. A generated
certificate in its last 30 days is renewed the same way."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import requests

from conftest import _free_ports
from helpers import read_bootstrap_creds, self_signed
from test_config import _serve, _wait_ready


def _served(port: int) -> tuple[str, datetime.datetime]:
    """The common name and expiry of the certificate a new connection gets."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-enddate"], input=pem, capture_output=True,
                          text=True, check=True).stdout
    subject = next(line for line in text.splitlines() if line.startswith("subject"))
    end = next(line for line in text.splitlines() if line.startswith("notAfter=")).split("=", 1)[1]
    expires = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.timezone.utc)
    return subject.rsplit("=", 1)[1].strip(), expires


def _fingerprint(port: int) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port), timeout=10))).hexdigest()


def _until_served(port: int, name: str, proc) -> None:
    deadline = time.time() + 10
    while _served(port)[0] != name:
        assert proc.poll() is None and time.time() < deadline, f"{name} not served: {_served(port)}"
        time.sleep(0.1)


def _replace(source, target) -> None:
    """Replaces `target` as a deploy tool would: a new file renamed over it."""
    shutil.copyfile(source, str(target) + ".new")
    os.replace(str(target) + ".new", target)


def test_an_operator_certificate_is_reloaded_on_sighup(tmp_path):
    for name, days in (("first", 2), ("second", 2), ("third", 5)):
        self_signed(tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem", name, days=days, san="IP:127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    _replace(tmp_path / "first-cert.pem", cert)
    _replace(tmp_path / "first-key.pem", key)
    http, https = _free_ports(2)
    proc = _serve(["--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{http}", "--https", f"127.0.0.1:{https}",
                   "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        _wait_ready(f"http://127.0.0.1:{http}", proc)
        assert _served(https)[0] == "first"
        # A connection opened before the change keeps its certificate.
        before = ssl.create_default_context(cafile=str(tmp_path / "first-cert.pem"))
        with socket.create_connection(("127.0.0.1", https), timeout=10) as raw, \
                before.wrap_socket(raw, server_hostname="127.0.0.1") as old:
            _replace(tmp_path / "second-cert.pem", cert)
            _replace(tmp_path / "second-key.pem", key)
            os.kill(proc.pid, signal.SIGHUP)
            _until_served(https, "second", proc)
            old.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert old.recv(64).startswith(b"HTTP/1.1 200"), "the open connection goes on"

        # Half a change (the certificate, not yet its key) is not served; the pair is once both are there.
        _replace(tmp_path / "third-cert.pem", cert)
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
        assert _served(https)[0] == "second"
        _replace(tmp_path / "third-key.pem", key)
        os.kill(proc.pid, signal.SIGHUP)
        _until_served(https, "third", proc)
        # The expiry gauge follows the served certificate.
        metrics = requests.get(f"http://127.0.0.1:{http}/metrics", auth=read_bootstrap_creds(tmp_path / "data"), timeout=10)
        found = re.search(r"^berth_tls_certificate_expiry_timestamp_seconds (\S+)$", metrics.text, re.M)
        assert found and 4.9 < (float(found.group(1)) - time.time()) / 86400 <= 5.01, metrics.text[:2000]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    log = out.decode()
    assert log.count("TLS certificate reloaded") == 2, log
    assert "TLS certificate not reloaded" in log and "cannot serve the certificate" in log, log


def test_a_generated_certificate_near_its_end_is_renewed_while_serving(tmp_path):
    http, https = _free_ports(2)
    data = tmp_path / "data"
    proc = _serve(["--data-dir", str(data), "--http", f"127.0.0.1:{http}", "--https", f"127.0.0.1:{https}"])
    try:
        _wait_ready(f"http://127.0.0.1:{http}", proc)
        first = _fingerprint(https)
        assert _served(https)[1] > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=700)
        # The generated pair, as if it had served for two years: 10 days left.
        self_signed(tmp_path / "old-cert.pem", tmp_path / "old-key.pem", "old", days=10, san="IP:127.0.0.1")
        _replace(tmp_path / "old-key.pem", data / "tls" / "key.pem")
        _replace(tmp_path / "old-cert.pem", data / "tls" / "cert.pem")
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.time() + 10
        while _fingerprint(https) == first:
            assert proc.poll() is None and time.time() < deadline, "no new certificate served"
            time.sleep(0.1)
        # What is served now is the one just generated in place of the old pair.
        new = ssl.PEM_cert_to_DER_cert((data / "tls" / "cert.pem").read_text())
        assert _fingerprint(https) == hashlib.sha256(new).hexdigest()
        name, renewed = _served(https)
        assert name != "old" and renewed > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=700)
        assert (data / "tls" / "cert.pem.replaced").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
