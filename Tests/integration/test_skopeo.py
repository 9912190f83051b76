"""End-to-end tests with skopeo (containers/image, Go): push OCI layouts into
Berth over plain HTTP and over TLS (where Go negotiates HTTP/2), pull them
back out, inspect, list tags, delete, and copy multi-arch indexes."""

from __future__ import annotations

import json

import pytest

from helpers import (
    KiB,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    assert_oci_error,
    assert_status,
    create_registry,
    have_tool,
    read_blob,
    read_layout,
    skopeo,
    unique,
    write_multiarch_layout,
    write_oci_layout,
)

pytestmark = pytest.mark.skipif(not have_tool("skopeo"), reason="skopeo not installed")

# Plain-HTTP options with the bootstrap admin key: skopeo pings /v2/, gets
# the Bearer challenge and fetches a token for each repository with the key.


def push(srv) -> tuple[str, ...]:
    return ("--dest-tls-verify=false", "--dest-creds", srv.admin_arg)


def pull(srv) -> tuple[str, ...]:
    return ("--src-tls-verify=false", "--src-creds", srv.admin_arg)


def read(srv) -> tuple[str, ...]:
    return ("--tls-verify=false", "--creds", srv.admin_arg)


@pytest.fixture(scope="module")
def sreg(http) -> str:
    """Registry for this module, created through the API."""
    return create_registry(http, "sk")


def assert_layout_roundtrip(src, dst_dir: str, tag: str) -> dict:
    """The pulled layout has the same top-level digest and exactly the same
    set of blobs (every blob file verified against its digest)."""
    out = read_layout(dst_dir)
    assert tag in out["refs"], f"tag {tag} missing from {dst_dir}/index.json: {out['index']}"
    assert out["refs"][tag]["digest"] == src.manifest_digest
    assert out["refs"][tag]["mediaType"] == src.media_type
    assert set(out["blobs"]) == src.blob_digests
    for d in src.blob_digests:
        assert read_blob(dst_dir, d) == read_blob(src.path, d)
    return out


def test_copy_roundtrip_plain_http(server, http, sreg, tmp_path):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=3, layer_size=256 * KiB)
    ref = f"docker://{server.host}/{sreg}/app/web:1.0"

    skopeo("copy", *push(server), f"oci:{src.path}:v1", ref)

    # What the registry now serves is byte-identical to the source.
    r = http.get_manifest(f"{sreg}/app/web", "1.0")
    assert_status(r, 200)
    assert r.headers.get("Docker-Content-Digest") == src.manifest_digest
    assert r.headers.get("Content-Type") == MT_OCI_MANIFEST
    for d in src.layer_digests + [src.config_digest]:
        b = http.get_blob(f"{sreg}/app/web", d)
        assert_status(b, 200)
        assert b.content == read_blob(src.path, d)

    dst = str(tmp_path / "dst")
    skopeo("copy", *pull(server), ref, f"oci:{dst}:v1")
    assert_layout_roundtrip(src, dst, "v1")


def test_copy_roundtrip_tls_http2(server, tls, sreg, tmp_path):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=3, layer_size=256 * KiB)
    ref = f"docker://{server.tls_host}/{sreg}/secure:1.0"

    skopeo("copy", "--dest-cert-dir", server.cert_dir, "--dest-creds", server.admin_arg, f"oci:{src.path}:v1", ref)

    r = tls.get_manifest(f"{sreg}/secure", "1.0")
    assert_status(r, 200)
    assert r.headers.get("Docker-Content-Digest") == src.manifest_digest

    dst = str(tmp_path / "dst")
    skopeo("copy", "--src-cert-dir", server.cert_dir, "--src-creds", server.admin_arg, ref, f"oci:{dst}:v1")
    assert_layout_roundtrip(src, dst, "v1")

    out = json.loads(skopeo("inspect", "--cert-dir", server.cert_dir, "--creds", server.admin_arg, ref).stdout)
    assert out["Digest"] == src.manifest_digest


def test_tls_rejects_unknown_ca(server, sreg, tmp_path):
    """Without the server certificate as a CA, verification must fail (the
    certificate is self-signed, not signed by a public CA)."""
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=1, layer_size=KiB)
    empty = tmp_path / "empty-certs"
    empty.mkdir()
    p = skopeo(
        "copy", "--dest-cert-dir", str(empty), "--dest-creds", server.admin_arg, f"oci:{src.path}:v1",
        f"docker://{server.tls_host}/{sreg}/untrusted:1", check=False, timeout=60,
    )
    assert p.returncode != 0
    assert "certificate" in (p.stderr + p.stdout).lower()


@pytest.fixture(scope="module")
def pushed(server, sreg, tmp_path_factory):
    """One image pushed with skopeo under three tags."""
    src = write_oci_layout(str(tmp_path_factory.mktemp("layout") / "src"), tag="v1", n_layers=2, layer_size=64 * KiB)
    repo = f"{server.host}/{sreg}/inspectme"
    skopeo("copy", *push(server), f"oci:{src.path}:v1", f"docker://{repo}:v1")
    for t in ("v2", "latest"):
        skopeo("copy", *pull(server), *push(server), f"docker://{repo}:v1", f"docker://{repo}:{t}")
    return repo, src


def test_inspect_raw(server, pushed):
    repo, src = pushed
    raw = skopeo("inspect", *read(server), "--raw", f"docker://{repo}:v1", text=False).stdout
    assert raw == read_blob(src.path, src.manifest_digest)

    cfg = skopeo("inspect", *read(server), "--raw", "--config", f"docker://{repo}:v1", text=False).stdout
    assert cfg == read_blob(src.path, src.config_digest)


def test_inspect(server, pushed):
    repo, src = pushed
    out = json.loads(skopeo("inspect", *read(server), f"docker://{repo}:v1").stdout)
    assert out["Digest"] == src.manifest_digest
    assert out["Name"] == repo
    assert out["Architecture"] == "amd64"
    assert out["Os"] == "linux"
    assert out["Layers"] == src.layer_digests
    assert sorted(out["RepoTags"]) == ["latest", "v1", "v2"]


def test_list_tags(server, pushed):
    repo, _ = pushed
    out = json.loads(skopeo("list-tags", *read(server), f"docker://{repo}").stdout)
    assert sorted(out["Tags"]) == ["latest", "v1", "v2"]


def test_delete(server, http, sreg, tmp_path):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=1, layer_size=16 * KiB)
    name = f"{sreg}/deleteme"
    ref = f"docker://{server.host}/{name}:v1"
    skopeo("copy", *push(server), f"oci:{src.path}:v1", ref)
    assert_status(http.get_manifest(name, "v1"), 200)

    skopeo("delete", *read(server), ref)

    assert_oci_error(http.get_manifest(name, src.manifest_digest), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.get_manifest(name, "v1"), 404, "MANIFEST_UNKNOWN")
    p = skopeo("inspect", *read(server), ref, check=False, timeout=60)
    assert p.returncode != 0


def _layers_of(layout_dir: str, manifest_digest: str) -> list[str]:
    m = json.loads(read_blob(layout_dir, manifest_digest))
    return [l["digest"] for l in m["layers"]]


def test_multiarch_copy_all(server, http, sreg, tmp_path):
    src = write_multiarch_layout(str(tmp_path / "src"), tag="multi")
    name = f"{sreg}/multi"
    ref = f"docker://{server.host}/{name}:1"

    skopeo("copy", "--all", *push(server), f"oci:{src.path}:multi", ref)

    r = http.get_manifest(name, "1")
    assert_status(r, 200)
    assert r.headers.get("Content-Type") == MT_OCI_INDEX
    assert r.headers.get("Docker-Content-Digest") == src.manifest_digest
    children = {m["platform"]["architecture"]: m["digest"] for m in r.json()["manifests"]}
    assert children == src.platform_manifests
    for d in children.values():
        c = http.get_manifest(name, d)
        assert_status(c, 200)
        assert c.headers.get("Content-Type") == MT_OCI_MANIFEST

    for arch in ("amd64", "arm64"):
        out = json.loads(
            skopeo("--override-arch", arch, "--override-os", "linux", "inspect", *read(server), ref).stdout
        )
        assert out["Architecture"] == arch
        assert out["Layers"] == _layers_of(src.path, src.platform_manifests[arch])

    dst = str(tmp_path / "dst")
    skopeo("copy", "--all", *pull(server), ref, f"oci:{dst}:multi")
    out = assert_layout_roundtrip(src, dst, "multi")
    for d in src.platform_manifests.values():
        assert d in out["blobs"]


def test_copy_between_registries(server, http, sreg, new_registry, tmp_path):
    """docker:// -> docker:// between two Berth registries on one host; skopeo
    may use cross-repository mounts here."""
    other = new_registry("sk2")
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=2, layer_size=64 * KiB)
    a = f"docker://{server.host}/{sreg}/origin:v1"
    b = f"docker://{server.host}/{other}/copy:v1"
    skopeo("copy", *push(server), f"oci:{src.path}:v1", a)
    skopeo("copy", *pull(server), *push(server), a, b)

    r = http.get_manifest(f"{other}/copy", "v1")
    assert_status(r, 200)
    assert r.headers.get("Docker-Content-Digest") == src.manifest_digest
    for d in src.layer_digests:
        assert http.get_blob(f"{other}/copy", d).content == read_blob(src.path, d)


def test_push_to_missing_registry_fails(server, tmp_path):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=1, layer_size=KiB)
    missing = unique("nosuch")
    p = skopeo("copy", *push(server), f"oci:{src.path}:v1", f"docker://{server.host}/{missing}/app:v1", check=False, timeout=60)
    assert p.returncode != 0
    err = p.stderr.lower()
    assert "name unknown" in err or "name_unknown" in err, p.stderr
    assert missing in p.stderr, "the error message should name the missing registry"
