"""Public and private URIs: a registry whose public URI is off is absent on
public listeners and served on private ones; the registry detail shows both
URIs and the commands to use them; system info and per-registry usage."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time

import pytest
import requests

from conftest import _free_ports, berth_binary
from helpers import Registry, new_principal


@pytest.fixture
def two_listeners(tmp_path):
    public_port, private_port = _free_ports(2)
    data = tmp_path / "data"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [berth_binary(), "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{public_port}", "--https", "off",
         "--private-http", f"127.0.0.2:{private_port}", "--public-host", "registry.example.com",
         "--private-host", "registry.vpc.internal:8080"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    urls = (f"http://127.0.0.1:{public_port}", f"http://127.0.0.2:{private_port}")
    deadline = time.time() + 30
    for url in urls:
        while True:
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
    creds = json.loads((data / "bootstrap-credentials.json").read_text())
    yield urls, (creds["access_key"], creds["secret_key"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log.close()
    assert "listening on http://127.0.0.2:%d (private)" % private_port in (tmp_path / "server.log").read_text()


def _push(url, auth, name):
    data = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{url}/v2/{name}/blobs/uploads/?digest={digest}", data=data, auth=auth)
    assert r.status_code == 201, r.text
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(data)},
                           "layers": []}).encode()
    r = requests.put(f"{url}/v2/{name}/manifests/v1", data=manifest, auth=auth,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text


def test_public_uri_switched_off(two_listeners):
    (public, private), auth = two_listeners
    for name in ("open", "vpconly"):
        assert requests.post(public + "/api/v1/registries", json={"name": name}, auth=auth).status_code == 201
        _push(public, auth, f"{name}/app")
    r = requests.patch(public + "/api/v1/registries/vpconly", json={"public_uri_enabled": False}, auth=auth)
    assert r.status_code == 200 and r.json()["public_uri_enabled"] is False

    denied = requests.get(public + "/v2/vpconly/app/manifests/v1", auth=auth)
    assert denied.status_code == 403
    error = denied.json()["errors"][0]
    assert error["code"] == "DENIED" and "vpconly is not reachable through its public URI" in error["message"]
    assert requests.post(public + "/v2/vpconly/app/blobs/uploads/", auth=auth).status_code == 403
    assert requests.get(public + "/v2/open/app/manifests/v1", auth=auth).status_code == 200
    catalog = requests.get(public + "/v2/_catalog", auth=auth).json()["repositories"]
    assert catalog == ["open/app"]

    assert requests.get(private + "/v2/vpconly/app/manifests/v1", auth=auth).status_code == 200
    assert requests.get(private + "/v2/_catalog", auth=auth).json()["repositories"] == ["open/app", "vpconly/app"]

    # To a caller who may not use it, it answers as a registry that does not exist:
    # anonymous callers get the same challenge, a user without a role the same denial.
    for path in ("/v2/vpconly/app/manifests/v1", "/v2/nosuch/app/manifests/v1"):
        r = requests.get(public + path)
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers, (path, r.status_code, r.text)
    _, stranger = new_principal(Registry(public, creds=auth), role="viewer", registry="open", prefix="x")
    answers = [requests.get(public + f"/v2/{reg}/app/manifests/v1", auth=stranger) for reg in ("vpconly", "nosuch")]
    assert [r.status_code for r in answers] == [403, 403]
    assert [r.json()["errors"][0]["message"].replace("vpconly", "nosuch") for r in answers] == [
        answers[1].json()["errors"][0]["message"]] * 2

    # Switched back on, it is served publicly again.
    requests.patch(public + "/api/v1/registries/vpconly", json={"public_uri_enabled": True}, auth=auth).raise_for_status()
    assert requests.get(public + "/v2/vpconly/app/manifests/v1", auth=auth).status_code == 200


def test_public_listener_mounts_nothing_from_a_private_only_registry(two_listeners):
    (public, private), auth = two_listeners
    for name in ("pubdst", "vpcsrc"):
        assert requests.post(public + "/api/v1/registries", json={"name": name}, auth=auth).status_code == 201
    _push(public, auth, "vpcsrc/app")
    digest = "sha256:" + hashlib.sha256(b'{"architecture":"amd64","os":"linux"}').hexdigest()
    requests.patch(public + "/api/v1/registries/vpcsrc", json={"public_uri_enabled": False}, auth=auth).raise_for_status()

    # Through the public listener the source does not exist: an upload session, no mount.
    r = requests.post(f"{public}/v2/pubdst/app/blobs/uploads/?mount={digest}&from=vpcsrc/app", auth=auth)
    assert r.status_code == 202, r.text
    assert requests.head(f"{public}/v2/pubdst/app/blobs/{digest}", auth=auth).status_code == 404
    # Through the private listener it does, and the mount happens.
    r = requests.post(f"{private}/v2/pubdst/app/blobs/uploads/?mount={digest}&from=vpcsrc/app", auth=auth)
    assert r.status_code == 201, r.text
    assert requests.head(f"{public}/v2/pubdst/app/blobs/{digest}", auth=auth).status_code == 200


def test_registry_detail_shows_uris_and_commands(two_listeners):
    (public, _), auth = two_listeners
    requests.post(public + "/api/v1/registries", json={"name": "shown"}, auth=auth).raise_for_status()
    detail = requests.get(public + "/api/v1/registries/shown", auth=auth).json()
    assert detail["public_uri"] == "registry.example.com/shown"
    assert detail["private_uri"] == "registry.vpc.internal:8080/shown"
    commands = detail["commands"]["private"]
    assert commands["docker_login"].startswith("docker login registry.vpc.internal:8080")
    assert commands["docker_push"] == "docker push registry.vpc.internal:8080/shown/<image>:<tag>"
    assert commands["helm_push"] == "helm push <chart>.tgz oci://registry.vpc.internal:8080/shown"
    assert commands["oras_pull"] == "oras pull registry.vpc.internal:8080/shown/<artifact>:<tag>"
    assert detail["commands"]["public"]["docker_pull"] == "docker pull registry.example.com/shown/<image>:<tag>"
    off = requests.patch(public + "/api/v1/registries/shown", json={"public_uri_enabled": False}, auth=auth).json()
    assert off["public_uri"] is None and off["commands"]["public"] is None


def test_system_info_and_usage(two_listeners):
    (public, private), auth = two_listeners
    requests.post(public + "/api/v1/registries", json={"name": "used"}, auth=auth).raise_for_status()
    _push(public, auth, "used/app")
    info = requests.get(private + "/api/v1/system/info", auth=auth).json()
    assert info["version"] and info["build"] in ("debug", "release")
    assert info["storage_engine"].startswith("rocksdb") and info["uptime_seconds"] >= 0
    assert info["listener"] == {"scheme": "http", "exposure": "private"}
    assert info["endpoints"] == {"public": "registry.example.com", "private": "registry.vpc.internal:8080"}
    public_port, private_port = public.rsplit(":", 1)[1], private.rsplit(":", 1)[1]
    assert sorted(info["listeners"], key=lambda l: l["address"]) == [
        {"address": f"127.0.0.1:{public_port}", "scheme": "http", "exposure": "public"},
        {"address": f"127.0.0.2:{private_port}", "scheme": "http", "exposure": "private"},
    ]
    assert requests.get(public + "/api/v1/system/info").status_code == 401
    usage = requests.get(public + "/api/v1/system/usage", auth=auth).json()
    assert {"name": "used", "logical_bytes": 37, "blobs": 1} in usage["registries"]
