"""Artifacts pushed and pulled with the ORAS Python client (oras-py)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from helpers import (
    KiB,
    MT_HELM_CHART,
    MT_HELM_CONFIG,
    MT_OCI_EMPTY,
    MT_OCI_MANIFEST,
    assert_oci_error,
    assert_status,
    create_registry,
    make_tgz,
    random_bytes,
    sha256_digest,
)

oras_provider = pytest.importorskip("oras.provider")
import oras.defaults  # noqa: E402
import oras.oci  # noqa: E402


class Oras(oras_provider.Registry):
    """oras-py's Registry without its retry decorator: the stock client
    retries any exception or 500 five times with sleeps of up to 80 s, which
    would turn one server bug into minutes of waiting.

    creds=(key, secret) is handed to oras-py's own auth backend with
    `auth.set_basic_auth` (what `login()` does, minus writing
    ~/.docker/config.json). With auth_backend="basic" every request that gets
    the 401 challenge is retried with Basic auth; with the default "token"
    backend oras-py fetches a Bearer token from the challenge's realm. Pushes
    use the basic backend: oras-py 0.2.43's token backend keeps its first
    token (pull, from the HEAD of a blob) and retries the upload POST with
    it instead of asking for pull,push, so it cannot push to a registry that
    scopes its challenges per action, as docs/identity.md requires."""

    do_request = oras_provider.Registry.do_request.__wrapped__

    def __init__(self, *args, creds=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.session.trust_env = False  # loopback only: no proxies, no env CA bundle
        if creds is not None:
            self.auth.set_basic_auth(*creds)


CUSTOM_CONFIG = "application/vnd.example.berth.config.v1+json"
CUSTOM_LAYER = "application/vnd.example.berth.payload.v1"
ARTIFACT_TYPE = "application/vnd.example.berth.artifact.v1"


@pytest.fixture(scope="module")
def oreg(http) -> str:
    return create_registry(http, "or")


@pytest.fixture
def client(server) -> Oras:
    return Oras(insecure=True, auth_backend="basic", creds=server.admin_creds)


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_push_pull_file_artifact(server, http, oreg, client, tmp_path, chunked):
    data = random_bytes(300 * KiB + 11)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(data)
    config = tmp_path / "config.json"
    config.write_bytes(b'{"purpose": "berth integration test"}')
    name = f"{oreg}/files/blob{'-chunked' if chunked else ''}"
    target = f"{server.host}/{name}:v1"

    res = client.push(
        target=target,
        files=[f"{payload}:{CUSTOM_LAYER}"],
        manifest_config=f"{config}:{CUSTOM_CONFIG}",
        manifest_annotations={"org.example.note": "hello"},
        disable_path_validation=True,
        do_chunked=chunked,
        chunk_size=64 * KiB,
        quiet=True,
    )
    assert res.status_code == 201, res.text
    manifest_digest = res.headers.get("Docker-Content-Digest")
    assert manifest_digest and manifest_digest.startswith("sha256:")

    outdir = tmp_path / "out"
    files = client.pull(target=target, outdir=str(outdir))
    assert [p.rsplit("/", 1)[-1] for p in files] == ["payload.bin"]
    with open(files[0], "rb") as f:
        assert f.read() == data

    m = client.get_manifest(target)
    assert m["config"]["mediaType"] == CUSTOM_CONFIG
    assert m["config"]["digest"] == sha256_digest(config.read_bytes())
    assert [l["mediaType"] for l in m["layers"]] == [CUSTOM_LAYER]
    assert m["layers"][0]["digest"] == sha256_digest(data)
    assert m["annotations"]["org.example.note"] == "hello"

    r = http.get_manifest(name, "v1")
    assert_status(r, 200)
    assert r.headers.get("Docker-Content-Digest") == manifest_digest
    assert sha256_digest(r.content) == manifest_digest


def test_artifact_type_via_provider_api(server, http, oreg, client, tmp_path):
    """OCI 1.1 style: empty config + artifactType, built with oras-py's
    lower-level blob/manifest calls."""
    data = random_bytes(40 * KiB)
    payload = tmp_path / "data.txt"
    payload.write_bytes(data)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"{}")
    name = f"{oreg}/typed"
    target = f"{server.host}/{name}:v1"
    container = client.get_container(target)

    layer = oras.oci.NewLayer(str(payload), media_type="text/plain")
    layer["annotations"] = {oras.defaults.annotation_title: "data.txt"}
    r = client.upload_blob(str(payload), container, layer)
    assert r.status_code in (200, 201), r.text
    conf, _ = oras.oci.ManifestConfig(None, MT_OCI_EMPTY)
    r = client.upload_blob(str(empty), container, conf)
    assert r.status_code in (200, 201), r.text

    manifest = oras.oci.NewManifest()
    del manifest["annotations"]
    manifest["artifactType"] = ARTIFACT_TYPE
    manifest["config"] = conf
    manifest["layers"] = [layer]
    r = client.upload_manifest(manifest, container)
    assert r.status_code == 201, r.text

    g = http.get_manifest(name, "v1")
    assert_status(g, 200)
    body = g.json()
    assert body["artifactType"] == ARTIFACT_TYPE
    assert body["config"]["mediaType"] == MT_OCI_EMPTY
    assert body["config"]["digest"] == sha256_digest(b"{}")

    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert len(files) == 1
    with open(files[0], "rb") as f:
        assert f.read() == data


def test_tags_and_delete(server, http, oreg, client, tmp_path):
    f = tmp_path / "note.txt"
    f.write_bytes(b"tag me")
    name = f"{oreg}/tagged"
    for tag in ("a", "b", "c"):
        res = client.push(
            target=f"{server.host}/{name}:{tag}", files=[str(f)], disable_path_validation=True, quiet=True
        )
        assert res.status_code == 201, res.text

    assert sorted(client.get_tags(f"{server.host}/{name}")) == ["a", "b", "c"]

    # oras-py resolves the tag with HEAD and deletes the manifest by digest,
    # which removes every tag pointing at it.
    digest = http.get_manifest(name, "a", method="HEAD").headers["Docker-Content-Digest"]
    assert client.delete_tag(f"{server.host}/{name}", "a") is True
    assert_oci_error(http.get_manifest(name, digest), 404, "MANIFEST_UNKNOWN")
    for tag in ("a", "b", "c"):
        assert_status(http.get_manifest(name, tag), 404)


def test_push_pull_over_tls(server, oreg, tmp_path):
    c = Oras(tls_verify=server.cert_path, auth_backend="basic", creds=server.admin_creds)
    data = random_bytes(50 * KiB)
    p = tmp_path / "secure.bin"
    p.write_bytes(data)
    target = f"{server.tls_host}/{oreg}/secure:v1"
    res = c.push(target=target, files=[str(p)], disable_path_validation=True, quiet=True)
    assert res.status_code == 201, res.text
    files = c.pull(target=target, outdir=str(tmp_path / "out"))
    with open(files[0], "rb") as f:
        assert f.read() == data


def test_helm_chart_shaped_artifact(server, http, oreg, client, tmp_path):
    chart_yaml = b"apiVersion: v2\nname: mychart\nversion: 0.1.0\ndescription: berth test chart\n"
    chart = make_tgz({"mychart/Chart.yaml": chart_yaml, "mychart/values.yaml": b"replicaCount: 1\n"})
    config = json.dumps({"name": "mychart", "version": "0.1.0", "apiVersion": "v2"}).encode()
    tgz = tmp_path / "mychart-0.1.0.tgz"
    tgz.write_bytes(chart)
    cfg = tmp_path / "config.json"
    cfg.write_bytes(config)
    name = f"{oreg}/charts/mychart"

    res = client.push(
        target=f"{server.host}/{name}:0.1.0",
        files=[f"{tgz}:{MT_HELM_CHART}"],
        manifest_config=f"{cfg}:{MT_HELM_CONFIG}",
        disable_path_validation=True,
        quiet=True,
    )
    assert res.status_code == 201, res.text

    r = http.get(f"/v2/{name}/manifests/0.1.0", headers={"Accept": MT_OCI_MANIFEST})
    assert_status(r, 200)
    assert r.headers.get("Content-Type") == MT_OCI_MANIFEST
    m = r.json()
    assert m["schemaVersion"] == 2
    assert m["config"]["mediaType"] == MT_HELM_CONFIG
    assert m["config"]["digest"] == sha256_digest(config)
    assert m["config"]["size"] == len(config)
    assert [l["mediaType"] for l in m["layers"]] == [MT_HELM_CHART]
    assert m["layers"][0]["digest"] == sha256_digest(chart)

    c = http.get_blob(name, m["config"]["digest"])
    assert_status(c, 200)
    assert json.loads(c.content) == json.loads(config)

    b = http.get_blob(name, m["layers"][0]["digest"])
    assert_status(b, 200)
    assert b.content == chart
    with tarfile.open(fileobj=io.BytesIO(b.content), mode="r:gz") as tar:
        assert tar.extractfile("mychart/Chart.yaml").read() == chart_yaml

    tags = http.get(f"/v2/{name}/tags/list").json()["tags"]
    assert tags == ["0.1.0"]
