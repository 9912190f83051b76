"""Real clients authenticating against the TLS listener: skopeo (login with
an auth file, --creds/--src-creds/--dest-creds, the Docker token flow) and
oras-py (Basic on challenge, and its token flow), with users that are not
the bootstrap admin."""

from __future__ import annotations

import json
import os

import pytest

from helpers import (
    KiB,
    assert_status,
    create_registry,
    have_tool,
    new_principal,
    random_bytes,
    read_blob,
    read_layout,
    skopeo,
    wrong_secret,
    write_oci_layout,
)


@pytest.fixture(scope="module")
def areg(http) -> str:
    return create_registry(http, "ac")


@pytest.fixture(scope="module")
def uploader(http, areg):
    """A key of a user who may push to `areg` only."""
    return new_principal(http, "uploader", areg, prefix="acu")[1]


@pytest.fixture(scope="module")
def viewer(http, areg):
    return new_principal(http, "viewer", areg, prefix="acv")[1]


def _arg(creds) -> str:
    return "%s:%s" % creds


# ---------------------------------------------------------------------------
# skopeo
# ---------------------------------------------------------------------------

needs_skopeo = pytest.mark.skipif(not have_tool("skopeo"), reason="skopeo not installed")


@needs_skopeo
def test_skopeo_login_then_copy_over_tls(server, tls, areg, uploader, tmp_path):
    authfile = str(tmp_path / "auth.json")
    p = skopeo("login", "--authfile", authfile, "--cert-dir", server.cert_dir,
               "--username", uploader[0], "--password", uploader[1], server.tls_host)
    assert "succeeded" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
    with open(authfile) as f:
        assert server.tls_host in json.load(f)["auths"]

    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=2, layer_size=64 * KiB)
    ref = f"docker://{server.tls_host}/{areg}/login:v1"
    skopeo("copy", "--authfile", authfile, "--dest-cert-dir", server.cert_dir, f"oci:{src.path}:v1", ref)
    r = tls.get_manifest(f"{areg}/login", "v1")
    assert_status(r, 200)
    assert r.headers.get("Docker-Content-Digest") == src.manifest_digest

    out = json.loads(skopeo("inspect", "--authfile", authfile, "--cert-dir", server.cert_dir, ref).stdout)
    assert out["Digest"] == src.manifest_digest
    skopeo("logout", "--authfile", authfile, server.tls_host)
    p = skopeo("inspect", "--authfile", authfile, "--cert-dir", server.cert_dir, ref, check=False, timeout=60)
    assert p.returncode != 0, "after logout the registry must refuse the anonymous client"


@needs_skopeo
def test_skopeo_login_with_wrong_secret_fails(server, uploader, tmp_path):
    authfile = tmp_path / "auth.json"
    p = skopeo("login", "--authfile", str(authfile), "--cert-dir", server.cert_dir,
               "--username", uploader[0], "--password", wrong_secret(uploader)[1], server.tls_host,
               check=False, timeout=60)
    assert p.returncode != 0
    err = p.stderr.lower()
    assert any(w in err for w in ("invalid username/password", "401", "unauthorized")), p.stderr
    if authfile.exists():
        assert server.tls_host not in json.loads(authfile.read_text() or "{}").get("auths", {})


@needs_skopeo
def test_skopeo_copy_with_creds_over_tls(server, tls, areg, uploader, viewer, tmp_path):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=2, layer_size=64 * KiB)
    ref = f"docker://{server.tls_host}/{areg}/creds:v1"
    skopeo("copy", "--dest-cert-dir", server.cert_dir, "--dest-creds", _arg(uploader), f"oci:{src.path}:v1", ref)
    assert tls.get_manifest(f"{areg}/creds", "v1").headers.get("Docker-Content-Digest") == src.manifest_digest

    # A viewer pulls it back.
    dst = str(tmp_path / "dst")
    skopeo("copy", "--src-cert-dir", server.cert_dir, "--src-creds", _arg(viewer), ref, f"oci:{dst}:v1")
    out = read_layout(dst)
    assert out["refs"]["v1"]["digest"] == src.manifest_digest
    assert set(out["blobs"]) == src.blob_digests
    for d in src.blob_digests:
        assert read_blob(dst, d) == read_blob(src.path, d)


@needs_skopeo
@pytest.mark.parametrize("who", ["wrong-secret", "viewer", "no-creds"])
def test_skopeo_push_refused(server, tls, areg, uploader, viewer, tmp_path, who):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=1, layer_size=4 * KiB)
    repo = f"{areg}/refused-{who}"
    creds = {"wrong-secret": ["--dest-creds", _arg(wrong_secret(uploader))], "viewer": ["--dest-creds", _arg(viewer)],
             "no-creds": ["--dest-authfile", str(tmp_path / "none.json")]}[who]
    p = skopeo("copy", "--dest-cert-dir", server.cert_dir, *creds, f"oci:{src.path}:v1",
               f"docker://{server.tls_host}/{repo}:v1", check=False, timeout=60)
    assert p.returncode != 0
    err = p.stderr.lower()
    assert any(w in err for w in ("401", "403", "unauthorized", "denied", "authentication required")), p.stderr
    assert_status(tls.get_manifest(repo, "v1"), 404)
    assert tls.get(f"/v2/{repo}/tags/list").status_code == 404


# ---------------------------------------------------------------------------
# oras-py
# ---------------------------------------------------------------------------

try:
    from test_oras import Oras  # no retries, no proxies; creds= goes to oras-py's auth backend
except pytest.skip.Exception:  # oras-py not installed
    Oras = None

needs_oras = pytest.mark.skipif(Oras is None, reason="oras-py not installed")


@needs_oras
def test_oras_push_and_pull_with_credentials_over_tls(server, tls, areg, uploader, viewer, tmp_path):
    ca = os.path.join(server.cert_dir, "ca.crt")
    data = random_bytes(80 * KiB)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(data)
    target = f"{server.tls_host}/{areg}/oras:v1"

    # Push: every request that gets the 401 challenge is retried with Basic.
    pusher = Oras(tls_verify=ca, auth_backend="basic", creds=uploader)
    res = pusher.push(target=target, files=[str(payload)], disable_path_validation=True, quiet=True)
    assert res.status_code == 201, res.text
    assert_status(tls.get_manifest(f"{areg}/oras", "v1"), 200)

    # Pull: oras-py's token backend follows the challenge's realm over TLS
    # and fetches a pull token with the viewer's key.
    puller = Oras(tls_verify=ca, creds=viewer)
    files = puller.pull(target=target, outdir=str(tmp_path / "out"))
    assert len(files) == 1
    with open(files[0], "rb") as f:
        assert f.read() == data
    assert puller.auth.token, "the pull should have gone through a Bearer token"


@needs_oras
@pytest.mark.parametrize("who", ["wrong-secret", "none"])
def test_oras_push_without_valid_credentials_fails(server, tls, areg, uploader, tmp_path, who):
    ca = os.path.join(server.cert_dir, "ca.crt")
    payload = tmp_path / "p.bin"
    payload.write_bytes(random_bytes(KiB))
    if who == "wrong-secret":
        c = Oras(tls_verify=ca, auth_backend="basic", creds=wrong_secret(uploader))
    else:  # the token backend without credentials asks for an anonymous token
        c = Oras(tls_verify=ca)
    target = f"{server.tls_host}/{areg}/oras-refused-{who}:v1"
    try:
        res = c.push(target=target, files=[str(payload)], disable_path_validation=True, quiet=True)
    except ValueError:
        pass  # oras-py raises when the upload session is refused
    else:
        assert res.status_code == 401, res.text
    assert_status(tls.get_manifest(f"{areg}/oras-refused-{who}", "v1"), 404)


@needs_oras
def test_oras_anonymous_pull_from_open_registry(server, http, tmp_path):
    """oras-py without credentials: challenge, anonymous token, pull; works
    only while the registry allows anonymous pulls."""
    reg = create_registry(http, "aco")
    ca = os.path.join(server.cert_dir, "ca.crt")
    data = random_bytes(10 * KiB)
    payload = tmp_path / "open.bin"
    payload.write_bytes(data)
    target = f"{server.tls_host}/{reg}/pub:v1"
    res = Oras(tls_verify=ca, auth_backend="basic", creds=server.admin_creds).push(
        target=target, files=[str(payload)], disable_path_validation=True, quiet=True
    )
    assert res.status_code == 201, res.text

    with pytest.raises(ValueError):
        Oras(tls_verify=ca).pull(target=target, outdir=str(tmp_path / "closed"))
    assert_status(http.patch(f"/api/v1/registries/{reg}", json={"anonymous_pull": True}), 200)
    try:
        files = Oras(tls_verify=ca).pull(target=target, outdir=str(tmp_path / "open"))
        with open(files[0], "rb") as f:
            assert f.read() == data
    finally:
        assert_status(http.patch(f"/api/v1/registries/{reg}", json={"anonymous_pull": False}), 200)
