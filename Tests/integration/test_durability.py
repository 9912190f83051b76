"""Crash safety: whatever Berth acknowledged must survive `kill -9`, and
anything it did not acknowledge must not become visible."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import pytest
import requests

from helpers import (
    KiB,
    MT_OCI_MANIFEST,
    assert_oci_error,
    assert_status,
    have_tool,
    make_image,
    open_partial_request,
    path_of,
    random_bytes,
    read_layout,
    sha256_digest,
    skopeo,
    wait_until,
    with_query,
    write_oci_layout,
)

REG = "dur"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def dsrv(make_server):
    """A fresh server per test; registry `dur` is created offline via the CLI."""
    return make_server(registries=[REG], label="durability")


def _push_blobs_three_ways(c, name, blobs):
    """Upload blobs alternating monolithic POST?digest, POST+PUT and
    POST+PATCH+PUT, so each upload path is covered by the crash test."""
    for i, b in enumerate(blobs):
        d = sha256_digest(b)
        if i % 3 == 0:
            r = c.post(f"/v2/{name}/blobs/uploads/?digest={d}", data=b, headers=OCTET)
        elif i % 3 == 1:
            s = c.start_upload(name)
            assert_status(s, 202)
            r = c.put(with_query(c.abs_location(s), digest=d), data=b, headers=OCTET)
        else:
            s = c.start_upload(name)
            assert_status(s, 202)
            p = c.patch(c.abs_location(s), data=b, headers={**OCTET, "Content-Range": f"0-{len(b) - 1}"})
            assert_status(p, 202)
            r = c.put(with_query(c.abs_location(p), digest=d), headers=OCTET)
        assert_status(r, 201)
        assert r.headers.get("Docker-Content-Digest") == d


def test_raw_push_survives_kill9_right_after_201(dsrv):
    c = dsrv.client()
    name = f"{REG}/app"
    # 2.5 MiB layers span several 1 MiB chunks, so the full chunks written to
    # extent files (and the sync that makes them durable) are part of what is tested.
    img = make_image(n_layers=3, layer_size=2560 * KiB)
    _push_blobs_three_ways(c, name, img.blobs)
    r = c.put_manifest(name, "v1", img.manifest)
    assert_status(r, 201)
    dsrv.kill9()  # no grace period at all after the acknowledgement

    dsrv.start()
    c = dsrv.client()
    for ref in ("v1", img.digest):
        g = c.get_manifest(name, ref)
        assert_status(g, 200)
        assert g.content == img.manifest
        assert g.headers.get("Docker-Content-Digest") == img.digest
        assert g.headers.get("Content-Type") == MT_OCI_MANIFEST
    for b in img.blobs:
        g = c.get_blob(name, sha256_digest(b))
        assert_status(g, 200)
        assert g.content == b
    assert c.get(f"/v2/{name}/tags/list").json()["tags"] == ["v1"]
    assert c.registry_info(REG)["usage"]["blobs"] == len(img.blobs)


def test_blob_acknowledged_then_kill9(dsrv):
    c = dsrv.client()
    data = random_bytes(300 * KiB)
    digest = c.upload_blob(f"{REG}/blobonly", data)
    dsrv.kill9()
    dsrv.start()
    g = dsrv.client().get_blob(f"{REG}/blobonly", digest)
    assert_status(g, 200)
    assert g.content == data


@pytest.mark.skipif(not have_tool("skopeo"), reason="skopeo not installed")
def test_skopeo_push_survives_kill9(dsrv, tmp_path):
    src = write_oci_layout(str(tmp_path / "src"), tag="v1", n_layers=3, layer_size=128 * KiB)
    ref = f"docker://{dsrv.host}/{REG}/skopeo:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", dsrv.admin_arg, f"oci:{src.path}:v1", ref)
    dsrv.kill9()

    dsrv.start()
    dst = str(tmp_path / "dst")
    skopeo("copy", "--src-tls-verify=false", "--src-creds", dsrv.admin_arg, ref, f"oci:{dst}:v1")
    out = read_layout(dst)
    assert out["refs"]["v1"]["digest"] == src.manifest_digest
    assert set(out["blobs"]) == src.blob_digests


def test_registry_created_over_api_survives_kill9(dsrv):
    c = dsrv.client()
    assert_status(c.create_registry("viaapi"), 201)
    dsrv.kill9()
    dsrv.start()
    c = dsrv.client()
    for name in (REG, "viaapi"):
        info = c.registry_info(name)
        assert info["name"] == name
    names = [x["name"] for x in c.get("/api/v1/registries").json()["items"]]
    assert {REG, "viaapi"} <= set(names)


def test_deletes_survive_kill9(dsrv):
    c = dsrv.client()
    name = f"{REG}/gone"
    img = make_image(n_layers=1, layer_size=8 * KiB)
    c.push_image(name, img, "v1")
    keep = make_image(n_layers=1, layer_size=8 * KiB)
    c.push_image(name, keep, "keep")
    extra = c.upload_blob(name, random_bytes(4 * KiB))

    assert_status(c.delete(f"/v2/{name}/manifests/{img.digest}"), 202)
    assert_status(c.delete(f"/v2/{name}/blobs/{extra}"), 202)
    dsrv.kill9()
    dsrv.start()
    c = dsrv.client()
    assert_oci_error(c.get_manifest(name, img.digest), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(c.get_manifest(name, "v1"), 404, "MANIFEST_UNKNOWN")
    assert_status(c.head_blob(name, extra), 404)
    assert c.get_manifest(name, "keep").content == keep.manifest


def test_registry_delete_cut_by_kill9_is_finished(make_server):
    """A forced registry delete removes the catalog first, then the bucket one
    blob at a time; a kill in between must neither leak the blobs for good nor
    let a new registry of the same name see them."""
    srv = make_server(registries=[REG], extra_args=["--upload-timeout", "2"], label="registry-delete-kill9")
    c = srv.client()
    assert_status(c.create_registry("doomed"), 201)
    blobs = [random_bytes(64) for _ in range(3000)]

    def push(chunk):
        mine = srv.client()
        for b in chunk:
            assert_status(mine.post(f"/v2/doomed/app/blobs/uploads/?digest={sha256_digest(b)}", data=b, headers=OCTET), 201)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(push, [blobs[i::8] for i in range(8)]))
    kept = c.upload_blob(f"{REG}/kept", random_bytes(1000))
    assert any(r["name"] == "doomed" and r["blobs"] == 3000 for r in c.system_usage()["registries"])

    def delete_registry():
        try:
            srv.client().delete("/api/v1/registries/doomed?force=true")
        except requests.ConnectionError:
            pass  # the kill cuts it short

    deleter = threading.Thread(target=delete_registry, daemon=True)
    deleter.start()
    time.sleep(0.3)
    srv.kill9()
    srv.start()
    c = srv.client()
    assert_status(c.get("/api/v1/registries/doomed"), 404)
    # The maintenance job (every second here) empties the bucket no registry owns.
    wait_until(lambda: c.system_usage()["logical_bytes"] == 1000, timeout=60, message="the cut-short delete to finish")
    assert_status(c.create_registry("doomed"), 201)
    for b in blobs[:20]:
        assert_status(c.head_blob("doomed/app", sha256_digest(b)), 404)
    assert any(r["name"] == "doomed" and r["blobs"] == 0 for r in c.system_usage()["registries"])
    assert_status(c.head_blob(f"{REG}/kept", kept), 200)


def test_patch_interrupted_by_kill9_leaves_no_blob(dsrv):
    c = dsrv.client()
    name = f"{REG}/partial"
    first = random_bytes(256 * KiB)
    second = random_bytes(512 * KiB)
    full = first + second

    s = c.start_upload(name)
    assert_status(s, 202)
    p = c.patch(c.abs_location(s), data=first, headers={**OCTET, "Content-Range": f"0-{len(first) - 1}"})
    assert_status(p, 202)
    loc = c.abs_location(p)

    sent = len(second) // 4
    sock = open_partial_request(
        dsrv.host,
        "PATCH",
        path_of(loc),
        {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(second)),
            "Content-Range": f"{len(first)}-{len(full) - 1}",
            **c.auth_headers(),
        },
        second[:sent],
    )
    try:
        time.sleep(0.3)  # let the server start writing the chunk
        dsrv.kill9()
    finally:
        sock.close()

    dsrv.start()
    c = dsrv.client()
    for candidate in (full, first, first + second[:sent]):
        assert_status(c.head_blob(name, sha256_digest(candidate)), 404)

    st = c.get(loc)
    if st.status_code == 404:
        assert_oci_error(st, 404, "BLOB_UPLOAD_UNKNOWN")
    else:
        # A resumable session may survive; it must not claim bytes that were
        # never acknowledged beyond what was actually received.
        assert_status(st, 204)
        m = re.fullmatch(r"0-(\d+)", st.headers.get("Range", ""))
        assert m, st.headers
        assert int(m.group(1)) + 1 <= len(first) + sent

    # A fresh push of the full content works and yields the right bytes.
    assert c.upload_blob(name, full) == sha256_digest(full)
    assert c.get_blob(name, sha256_digest(full)).content == full


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_upload_session_across_restart_resumes_or_is_gone(dsrv, how):
    """DESIGN §3: after a restart an upload session either resumes from what
    is stored (the status GET tells the client where) or is cleanly gone."""
    c = dsrv.client()
    name = f"{REG}/resume"
    data = random_bytes(3 * 1024 * KiB)
    acked = 2560 * KiB  # spans full chunks in the extent file and a partial last chunk in RocksDB
    s = c.start_upload(name)
    assert_status(s, 202)
    p = c.patch(c.abs_location(s), data=data[:acked], headers={**OCTET, "Content-Range": f"0-{acked - 1}"})
    assert_status(p, 202)
    loc = c.abs_location(p)
    dsrv.restart(kill=(how == "kill9"))

    c = dsrv.client()
    st = c.get(loc)
    # The 202 acknowledged `acked` bytes: they must all be there, after a
    # clean stop and after kill -9 alike.
    assert_status(st, 204)
    assert st.headers.get("Range") == f"0-{acked - 1}", st.headers
    loc = c.abs_location(st)
    r = c.patch(loc, data=data[acked:], headers={**OCTET, "Content-Range": f"{acked}-{len(data) - 1}"})
    assert_status(r, 202)
    digest = sha256_digest(data)
    r = c.put(with_query(c.abs_location(r), digest=digest), headers=OCTET)
    assert_status(r, 201)
    g = c.get_blob(name, digest)
    assert_status(g, 200)
    assert g.content == data


def test_sigterm_exits_zero_and_state_persists(dsrv):
    c = dsrv.client()
    name = f"{REG}/graceful"
    img = make_image(n_layers=2, layer_size=32 * KiB)
    c.push_image(name, img, "v1")
    cert_before = open(dsrv.cert_path, "rb").read()
    key_before = open(dsrv.key_path, "rb").read()

    assert dsrv.terminate() == 0
    dsrv.start()

    assert open(dsrv.cert_path, "rb").read() == cert_before, "certificate must be reused across restarts"
    assert open(dsrv.key_path, "rb").read() == key_before
    c = dsrv.client()
    assert c.get_manifest(name, "v1").content == img.manifest
    assert dsrv.tls_client().get_manifest(name, "v1").content == img.manifest


def test_listening_lines_on_stdout(dsrv):
    """`berth serve` announces both listeners on stdout (and flushes, since
    stdout is a file here, not a terminal)."""
    expected = [f"listening on http://{dsrv.host}", f"listening on https://{dsrv.tls_host}"]
    text = wait_until(
        lambda: (t := dsrv.log_text()) and all(e in t for e in expected) and t,
        timeout=5,
        message=f"{expected} in the server output",
    )
    for e in expected:
        assert re.search(re.escape(e) + r"\s*$", text, re.M), text
