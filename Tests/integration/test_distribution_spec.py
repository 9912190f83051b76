"""OCI Distribution Spec v1.1 conformance of Berth, over raw HTTP.

Most tests share the session server (`http`) and one registry per module
(`reg`); each test uses its own image names. Tests needing server flags
(--max-blob-size, --upload-timeout) use the module-scoped `limited` server.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from urllib.parse import urljoin

import pytest
import requests

from helpers import (
    SteppedClock,
    KiB,
    MANIFEST_ACCEPT,
    MT_OCI_EMPTY,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MiB,
    Registry,
    assert_oci_error,
    assert_status,
    describe,
    have_tool,
    make_artifact,
    make_image,
    make_index,
    oci_error_codes,
    parse_next_link,
    partial_request,
    path_of,
    random_bytes,
    sha256_digest,
    unique,
    wait_until,
    with_query,
)

OCTET = {"Content-Type": "application/octet-stream"}


def img_name(reg: str, prefix: str = "img") -> str:
    return f"{reg}/{unique(prefix)}"


def patch_chunk(http: Registry, loc: str, chunk: bytes, start: int | None) -> requests.Response:
    headers = dict(OCTET)
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
    return http.patch(loc, data=chunk, headers=headers)


# ===========================================================================
# Base endpoint and transport
# ===========================================================================


def test_v2_base_plain_http(http):
    r = http.get("/v2/")
    assert_status(r, 200)
    assert r.headers.get("Docker-Distribution-API-Version") == "registry/2.0", describe(r)


def test_v2_base_tls(tls):
    r = tls.get("/v2/")
    assert_status(r, 200)
    assert r.headers.get("Docker-Distribution-API-Version") == "registry/2.0", describe(r)


def test_tls_certificate_and_alpn(server):
    """The TLS port presents the self-signed cert from DATA/tls/cert.pem
    (SANs localhost and 127.0.0.1) and negotiates h2 via ALPN, falling back
    to http/1.1 for clients that do not offer h2."""
    ctx = ssl.create_default_context(cafile=server.cert_path)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as ss:
            assert ss.selected_alpn_protocol() == "h2"
            sans = ss.getpeercert().get("subjectAltName", ())
    assert ("DNS", "localhost") in sans, sans
    assert ("IP Address", "127.0.0.1") in sans, sans

    ctx11 = ssl.create_default_context(cafile=server.cert_path)
    ctx11.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as s:
        with ctx11.wrap_socket(s, server_hostname="localhost") as ss:
            assert ss.selected_alpn_protocol() == "http/1.1"


def _curl_h2(server, *args: str, body: bytes | None = None) -> tuple[str, dict, bytes]:
    """One request with curl over TLS, HTTP/2 required (no fallback).
    Returns (http_version, headers, body)."""
    cmd = [
        "curl", "--http2", "--silent", "--show-error", "--noproxy", "*", "--proto", "=https",
        "--cacert", server.cert_path, "--dump-header", "-", "--output", "-", "--max-time", "60",
        "--user", server.admin_arg, *args,
    ]
    if body is not None:
        cmd += ["--data-binary", "@-", "-H", "Content-Type: application/octet-stream"]
    p = subprocess.run(cmd, input=body, capture_output=True, timeout=90)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    head, _, payload = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version = lines[0].split(" ", 1)[0]
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    headers[":status"] = status
    return version, headers, payload


@pytest.mark.skipif(not have_tool("curl"), reason="curl not installed")
def test_http2_push_and_pull_with_curl(server, reg):
    """The TLS port serves real HTTP/2 requests, including request bodies
    larger than the HTTP/2 flow-control window."""
    base = server.tls_url
    name = img_name(reg, "h2")
    version, h, _ = _curl_h2(server, f"{base}/v2/")
    assert version == "HTTP/2" and h[":status"] == 200, h

    # Monolithic POST?digest= with a 3 MiB body.
    big = random_bytes(3 * MiB)
    d_big = sha256_digest(big)
    version, h, _ = _curl_h2(server, "-X", "POST", f"{base}/v2/{name}/blobs/uploads/?digest={d_big}", body=big)
    assert version == "HTTP/2" and h[":status"] == 201, h
    assert h.get("docker-content-digest") == d_big

    # Chunked: POST, two PATCHes, PUT.
    data = random_bytes(700 * KiB)
    digest = sha256_digest(data)
    _, h, _ = _curl_h2(server, "-X", "POST", "-H", "Content-Length: 0", f"{base}/v2/{name}/blobs/uploads/")
    assert h[":status"] == 202, h
    loc = urljoin(base + "/", h["location"])
    half = len(data) // 2
    for start, chunk in ((0, data[:half]), (half, data[half:])):
        _, h, _ = _curl_h2(server, "-X", "PATCH", "-H", f"Content-Range: {start}-{start + len(chunk) - 1}", loc, body=chunk)
        assert h[":status"] == 202, h
        assert h.get("range") == f"0-{start + len(chunk) - 1}", h
        loc = urljoin(base + "/", h["location"])
    _, h, _ = _curl_h2(server, "-X", "PUT", "-H", "Content-Length: 0", with_query(loc, digest=digest))
    assert h[":status"] == 201, h

    version, h, payload = _curl_h2(server, f"{base}/v2/{name}/blobs/{d_big}")
    assert version == "HTTP/2" and h[":status"] == 200
    assert payload == big
    _, h, payload = _curl_h2(server, "-H", "Range: bytes=1000-1999", f"{base}/v2/{name}/blobs/{digest}")
    assert h[":status"] == 206, h
    assert payload == data[1000:2000]


# ===========================================================================
# Blob uploads
# ===========================================================================


@pytest.mark.skipif(not have_tool("curl"), reason="curl not installed")
def test_methods_clients_invent_share_one_metrics_label(server):
    """HTTP/1.1's parser knows a fixed list of methods; over HTTP/2 any token
    is one. Each must not add a series to the metrics."""
    for method in ("FROB1", "FROB2"):
        version, headers, _ = _curl_h2(server, "-X", method, f"{server.tls_url}/v2/")
        assert version == "HTTP/2" and headers[":status"] in (404, 405), headers
    text = server.client().get("/metrics").text
    assert "FROB" not in text
    assert 'method="other"' in text


def test_monolithic_post_then_put(http, reg):
    name = img_name(reg)
    data = random_bytes(100 * KiB + 7)
    digest = sha256_digest(data)

    r = http.start_upload(name)
    assert_status(r, 202)
    assert r.headers.get("Location"), describe(r)
    assert r.headers.get("Docker-Upload-UUID"), describe(r)
    assert r.headers.get("Range") == "0-0", describe(r)
    loc = http.abs_location(r)

    r = http.put(with_query(loc, digest=digest), data=data, headers=OCTET)
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == digest, describe(r)
    blob_url = http.abs_location(r)

    for url in (blob_url, f"/v2/{name}/blobs/{digest}"):
        g = http.get(url)
        assert_status(g, 200)
        assert g.content == data
        assert g.headers.get("Docker-Content-Digest") == digest


def test_monolithic_post_with_digest(http, reg):
    name = img_name(reg)
    data = random_bytes(64 * KiB)
    digest = sha256_digest(data)
    r = http.post(f"/v2/{name}/blobs/uploads/?digest={digest}", data=data, headers=OCTET)
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == digest, describe(r)
    assert r.headers.get("Location"), describe(r)
    g = http.get_blob(name, digest)
    assert_status(g, 200)
    assert g.content == data


def _split(data: bytes, parts: int) -> list[bytes]:
    step = -(-len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize(
    "mode",
    [
        "three_patches_then_empty_put",  # PATCH x3 with Content-Range, PUT without body
        "two_patches_then_put_with_last_chunk",  # final chunk in the PUT body
        "streamed_patch_without_content_range",  # what Docker/containers-image clients do
    ],
)
def test_chunked_upload(http, reg, mode):
    name = img_name(reg)
    data = random_bytes(150 * KiB + 13)
    digest = sha256_digest(data)

    r = http.start_upload(name)
    assert_status(r, 202)
    # Each PATCH rewrites the upload's partial last chunk (1 MiB): smaller chunks cost that rewrite each.
    assert r.headers.get("OCI-Chunk-Min-Length") == str(1 << 20), describe(r)
    upload_uuid = r.headers.get("Docker-Upload-UUID")
    loc = http.abs_location(r)

    if mode == "streamed_patch_without_content_range":
        chunks, put_body = [data], b""
    elif mode == "three_patches_then_empty_put":
        chunks, put_body = _split(data, 3), b""
        assert len(chunks) == 3
    else:
        parts = _split(data, 3)
        chunks, put_body = parts[:2], parts[2]

    offset = 0
    for chunk in chunks:
        use_range = mode != "streamed_patch_without_content_range"
        r = patch_chunk(http, loc, chunk, offset if use_range else None)
        assert_status(r, 202)
        offset += len(chunk)
        assert r.headers.get("Range") == f"0-{offset - 1}", describe(r)
        if upload_uuid and r.headers.get("Docker-Upload-UUID"):
            assert r.headers["Docker-Upload-UUID"] == upload_uuid
        loc = http.abs_location(r)

    r = http.put(with_query(loc, digest=digest), data=put_body, headers=OCTET)
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == digest, describe(r)

    g = http.get_blob(name, digest)
    assert_status(g, 200)
    assert g.content == data
    h = http.head_blob(name, digest)
    assert_status(h, 200)
    assert int(h.headers["Content-Length"]) == len(data)


def test_out_of_order_patch_is_416_and_session_survives(http, reg):
    name = img_name(reg)
    data = random_bytes(300)
    r = http.start_upload(name)
    assert_status(r, 202)
    loc = http.abs_location(r)

    r = patch_chunk(http, loc, data[0:100], 0)
    assert_status(r, 202)
    assert r.headers.get("Range") == "0-99", describe(r)
    loc = http.abs_location(r)

    # A gap: start (200) != current size (100).
    bad = patch_chunk(http, loc, data[200:300], 200)
    assert_status(bad, 416)

    # An overlap: start (50) != current size (100).
    bad = patch_chunk(http, loc, data[50:150], 50)
    assert_status(bad, 416)

    # A Content-Range that does not parse: 416 too, with where to resume.
    bad = http.patch(loc, data=data[100:200], headers={**OCTET, "Content-Range": "100-one hundred ninety-nine"})
    assert_status(bad, 416)
    assert bad.headers.get("Range") == "0-99", describe(bad)

    # A chunk longer than its Content-Range, sent without a Content-Length
    # (chunked transfer encoding): refused, and nothing of it is kept.
    bad = http.patch(loc, data=iter([data[100:150], data[150:250]]), headers={**OCTET, "Content-Range": "100-149"})
    assert_status(bad, 400)
    assert bad.json()["errors"][0]["code"] == "SIZE_INVALID", describe(bad)
    # And one shorter than it.
    bad = http.patch(loc, data=iter([data[100:120]]), headers={**OCTET, "Content-Range": "100-149"})
    assert_status(bad, 400)
    assert bad.json()["errors"][0]["code"] == "SIZE_INVALID", describe(bad)

    # The session is unharmed and still at 100 bytes.
    st = http.get(loc)
    assert_status(st, 204)
    assert st.headers.get("Range") == "0-99", describe(st)

    r = patch_chunk(http, loc, data[100:200], 100)
    assert_status(r, 202)
    assert r.headers.get("Range") == "0-199", describe(r)
    loc = http.abs_location(r)
    r = patch_chunk(http, loc, data[200:300], 200)
    assert_status(r, 202)
    loc = http.abs_location(r)

    digest = sha256_digest(data)
    r = http.put(with_query(loc, digest=digest), headers=OCTET)
    assert_status(r, 201)
    g = http.get_blob(name, digest)
    assert_status(g, 200)
    assert g.content == data


def test_upload_status(http, reg):
    name = img_name(reg)
    r = http.start_upload(name)
    assert_status(r, 202)
    loc = http.abs_location(r)
    upload_uuid = r.headers.get("Docker-Upload-UUID")

    r = patch_chunk(http, loc, random_bytes(1000), 0)
    assert_status(r, 202)
    loc = http.abs_location(r)

    st = http.get(loc)
    assert_status(st, 204)
    assert st.headers.get("Range") == "0-999", describe(st)
    assert st.headers.get("Location"), describe(st)
    assert st.headers.get("Docker-Upload-UUID") == upload_uuid, describe(st)
    # HEAD answers the same, as Distribution's does.
    st = http.head(loc)
    assert_status(st, 204)
    assert st.headers.get("Range") == "0-999" and st.headers.get("Docker-Upload-UUID") == upload_uuid, describe(st)


def test_cancel_upload(http, reg):
    name = img_name(reg)
    data = random_bytes(1000)
    r = http.start_upload(name)
    assert_status(r, 202)
    loc = http.abs_location(r)
    r = patch_chunk(http, loc, data, 0)
    assert_status(r, 202)
    loc = http.abs_location(r)

    d = http.delete(loc)
    assert_status(d, 204)

    assert_oci_error(http.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(patch_chunk(http, loc, data, 1000), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(
        http.put(with_query(loc, digest=sha256_digest(data)), headers=OCTET), 404, "BLOB_UPLOAD_UNKNOWN"
    )
    assert_status(http.head_blob(name, sha256_digest(data)), 404)


def test_unknown_upload_session(http, reg):
    name = img_name(reg)
    assert_oci_error(http.get(f"/v2/{name}/blobs/uploads/{uuid.uuid4()}"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(
        http.patch(f"/v2/{name}/blobs/uploads/{uuid.uuid4()}", data=b"x", headers=OCTET), 404, "BLOB_UPLOAD_UNKNOWN"
    )


@pytest.mark.parametrize("mode", ["post_with_digest", "put_with_body", "put_after_patch"])
def test_digest_mismatch_rejected_and_not_visible(http, reg, mode):
    name = img_name(reg)
    data = random_bytes(10 * KiB)
    actual = sha256_digest(data)
    claimed = sha256_digest(data + b"different")

    if mode == "post_with_digest":
        r = http.post(f"/v2/{name}/blobs/uploads/?digest={claimed}", data=data, headers=OCTET)
    else:
        s = http.start_upload(name)
        assert_status(s, 202)
        loc = http.abs_location(s)
        if mode == "put_with_body":
            r = http.put(with_query(loc, digest=claimed), data=data, headers=OCTET)
        else:
            p = patch_chunk(http, loc, data, 0)
            assert_status(p, 202)
            r = http.put(with_query(http.abs_location(p), digest=claimed), headers=OCTET)

    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert_status(http.head_blob(name, claimed), 404)
    assert_status(http.head_blob(name, actual), 404)


# ===========================================================================
# Blob reads
# ===========================================================================


@pytest.fixture(scope="module")
def range_blob(http, reg):
    name = f"{reg}/ranges"
    data = random_bytes(1000)
    digest = http.upload_blob(name, data)
    return name, digest, data


@pytest.mark.parametrize(
    "range_header,start,end",
    [
        ("bytes=0-9", 0, 9),  # first bytes
        ("bytes=100-199", 100, 199),  # middle
        ("bytes=990-", 990, 999),  # open-ended
        ("bytes=995-5000", 995, 999),  # end beyond size is clamped
        ("bytes=0-999", 0, 999),  # whole blob as a range
    ],
)
def test_range_get(http, range_blob, range_header, start, end):
    name, digest, data = range_blob
    r = http.get_blob(name, digest, headers={"Range": range_header})
    assert_status(r, 206)
    assert r.headers.get("Content-Range") == f"bytes {start}-{end}/1000", describe(r)
    assert r.content == data[start : end + 1]
    assert int(r.headers["Content-Length"]) == end - start + 1


@pytest.mark.parametrize("range_header", ["bytes=1000-1010", "bytes=5000-", "bytes=2000-3000"])
def test_range_beyond_size_is_416(http, range_blob, range_header):
    name, digest, _ = range_blob
    r = http.get_blob(name, digest, headers={"Range": range_header})
    assert_status(r, 416)


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-9,100-199",  # several ranges (containers/image's partial pulls): RFC 9110 lets the server ignore them
        "items=0-5",  # a unit the server does not know: ignored (RFC 9110 §14.2)
    ],
)
def test_ranges_the_server_ignores_get_the_whole_blob(http, range_blob, range_header):
    name, digest, data = range_blob
    r = http.get_blob(name, digest, headers={"Range": range_header})
    assert_status(r, 200)
    assert "Content-Range" not in r.headers, describe(r)
    assert r.content == data


def test_head_ignores_range(http, range_blob):
    name, digest, data = range_blob
    h = http.head(f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=0-9"})
    assert_status(h, 200)
    assert int(h.headers["Content-Length"]) == len(data)
    assert "Content-Range" not in h.headers, describe(h)


def test_largest_numbers_in_range_headers_are_answered(server, http, range_blob, reg):
    """Numbers at Int64's limit once trapped on overflow and killed the server."""
    name, digest, data = range_blob
    r = http.get_blob(name, digest, headers={"Range": "bytes=0-9223372036854775807"})
    assert_status(r, 206)
    assert r.headers.get("Content-Range") == "bytes 0-999/1000", describe(r)
    assert r.content == data

    s = http.start_upload(f"{reg}/overflow")
    assert_status(s, 202)
    loc = http.abs_location(s)
    r = http.patch(loc, data=b"abc", headers={**OCTET, "Content-Range": "0-9223372036854775807"})
    assert r.status_code in (400, 416), describe(r)

    # A declared length at Int64's limit on an upload that already holds bytes:
    # sent raw, since an HTTP library would send the body's real length.
    r = http.patch(loc, data=b"abc", headers=OCTET)
    assert_status(r, 202)
    path = path_of(http.abs_location(r))
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {http.auth_headers()['Authorization']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: 9223372036854775807\r\n\r\nxyz".encode()
        )
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert_status(http.get("/v2/"), 200)


def test_head_and_get_blob(http, range_blob):
    name, digest, data = range_blob
    h = http.head_blob(name, digest)
    assert_status(h, 200)
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers.get("Docker-Content-Digest") == digest
    assert h.content == b""

    g = http.get_blob(name, digest)
    assert_status(g, 200)
    assert g.content == data
    assert g.headers.get("Docker-Content-Digest") == digest


def test_valid_references_berth_never_stores_are_unknown_not_invalid(http, range_blob):
    """The distribution-spec's grammar allows capitals in tags and sha512
    digests: a read of one is a miss (404), not a bad request."""
    name, _, _ = range_blob
    sha512 = "sha512:" + "ab" * 64
    for method in ("GET", "HEAD"):
        r = http.request(method, f"/v2/{name}/manifests/Latest", headers={"Accept": MANIFEST_ACCEPT})
        assert_status(r, 404)
        r = http.request(method, f"/v2/{name}/blobs/{sha512}")
        assert_status(r, 404)
    assert_oci_error(http.get(f"/v2/{name}/manifests/Latest"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.get(f"/v2/{name}/manifests/{sha512}"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.get(f"/v2/{name}/blobs/{sha512}"), 404, "BLOB_UNKNOWN")
    assert_oci_error(http.delete(f"/v2/{name}/manifests/V1"), 404, "MANIFEST_UNKNOWN")
    r = http.get(f"/v2/{name}/referrers/{sha512}")
    assert_status(r, 200)
    assert r.json()["manifests"] == []
    # A malformed digest stays a bad request; a reference outside the tag
    # grammar names no manifest (404, as the OCI conformance suite expects).
    assert_oci_error(http.get(f"/v2/{name}/blobs/sha512:abc"), 400, "DIGEST_INVALID")
    for bad in ("-bad", ".INVALID_MANIFEST_NAME"):
        assert_oci_error(http.get(f"/v2/{name}/manifests/{bad}"), 404, "MANIFEST_UNKNOWN")
        assert_status(http.head(f"/v2/{name}/manifests/{bad}"), 404)
        assert_oci_error(http.delete(f"/v2/{name}/manifests/{bad}"), 404, "MANIFEST_UNKNOWN")


def test_unknown_endpoints_are_404_and_wrong_methods_405_with_allow(http, range_blob):
    name, digest, _ = range_blob
    for path in ("/v2/foo", f"/v2/{name}/blobs/", f"/v2/{name}/manifests/", f"/v2/{name}/nothing/here"):
        assert_oci_error(http.get(path), 404, "UNSUPPORTED")
    r = http.put(f"/v2/{name}/blobs/{digest}", data=b"x")
    assert_oci_error(r, 405, "UNSUPPORTED")
    assert r.headers.get("Allow") == "GET, HEAD, DELETE", describe(r)
    r = http.post("/v2/_catalog")
    assert_status(r, 405)
    assert r.headers.get("Allow") == "GET, HEAD", describe(r)


def test_unknown_blob(http, range_blob):
    name, _, _ = range_blob
    missing = sha256_digest(b"never uploaded " + random_bytes(8))
    assert_status(http.head_blob(name, missing), 404)
    assert_oci_error(http.get_blob(name, missing), 404, "BLOB_UNKNOWN")


# ===========================================================================
# Cross-repository mount
# ===========================================================================


@pytest.mark.parametrize("where", ["same_registry", "other_registry"])
def test_cross_repo_mount(http, reg, new_registry, where):
    src = img_name(reg, "src")
    target_reg = reg if where == "same_registry" else new_registry("mt")
    dst = img_name(target_reg, "dst")
    data = random_bytes(32 * KiB)
    digest = http.upload_blob(src, data)

    r = http.post(f"/v2/{dst}/blobs/uploads/?mount={digest}&from={src}", headers={"Content-Length": "0"})
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == digest, describe(r)
    assert r.headers.get("Location"), describe(r)

    g = http.get_blob(dst, digest)
    assert_status(g, 200)
    assert g.content == data
    assert_status(http.head_blob(dst, digest), 200)


def test_mount_unknown_digest_starts_upload_session(http, reg):
    src = img_name(reg, "src")
    dst = img_name(reg, "dst")
    http.upload_blob(src, random_bytes(100))
    data = random_bytes(2000)
    digest = sha256_digest(data)

    r = http.post(f"/v2/{dst}/blobs/uploads/?mount={digest}&from={src}", headers={"Content-Length": "0"})
    assert_status(r, 202)
    loc = http.abs_location(r)
    # The 202 is a normal, usable upload session.
    r = http.put(with_query(loc, digest=digest), data=data, headers=OCTET)
    assert_status(r, 201)
    assert http.get_blob(dst, digest).content == data


def test_mount_from_registry_without_the_blob_does_not_leak(http, new_registry):
    """A blob that only exists in registry A must not become readable in
    registry B by naming some unrelated registry C as the mount source."""
    reg_a, reg_b, reg_c = new_registry("la"), new_registry("lb"), new_registry("lc")
    data = random_bytes(4 * KiB)
    digest = http.upload_blob(f"{reg_a}/secret", data)
    http.upload_blob(f"{reg_c}/other", random_bytes(10))

    r = http.post(f"/v2/{reg_b}/x/blobs/uploads/?mount={digest}&from={reg_c}/other", headers={"Content-Length": "0"})
    assert_status(r, 202)
    assert_status(http.head_blob(f"{reg_b}/x", digest), 404)


# ===========================================================================
# Manifests
# ===========================================================================


def test_manifest_put_get_by_tag_and_digest(http, reg):
    name = img_name(reg)
    img = make_image(n_layers=2, layer_size=4 * KiB)
    http.upload_blobs(name, img.blobs)

    r = http.put_manifest(name, "v1", img.manifest)
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == img.digest, describe(r)
    assert r.headers.get("Location"), describe(r)
    assert "OCI-Subject" not in r.headers

    for ref in ("v1", img.digest):
        g = http.get_manifest(name, ref)
        assert_status(g, 200)
        assert g.content == img.manifest, "manifest bytes must be returned exactly as pushed"
        assert g.headers.get("Content-Type") == MT_OCI_MANIFEST, describe(g)
        assert g.headers.get("Docker-Content-Digest") == img.digest

        h = http.get_manifest(name, ref, method="HEAD")
        assert_status(h, 200)
        assert int(h.headers["Content-Length"]) == len(img.manifest)
        assert h.headers.get("Docker-Content-Digest") == img.digest
        assert h.headers.get("Content-Type") == MT_OCI_MANIFEST

    loc = http.abs_location(r)
    assert http.get(loc, headers={"Accept": MT_OCI_MANIFEST}).content == img.manifest


def test_image_index_put_get(http, reg):
    name = img_name(reg)
    amd = make_image(n_layers=1, layer_size=2 * KiB, arch="amd64")
    arm = make_image(n_layers=1, layer_size=2 * KiB, arch="arm64")
    http.push_image(name, amd)
    http.push_image(name, arm)
    index = make_index([(amd, {"architecture": "amd64", "os": "linux"}), (arm, {"architecture": "arm64", "os": "linux"})])
    r = http.put_manifest(name, "multi", index, MT_OCI_INDEX)
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == sha256_digest(index)

    g = http.get_manifest(name, "multi")
    assert_status(g, 200)
    assert g.content == index
    assert g.headers.get("Content-Type") == MT_OCI_INDEX
    for child in (amd, arm):
        c = http.get_manifest(name, child.digest)
        assert_status(c, 200)
        assert c.content == child.manifest


MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def test_docker_schema2_manifest_and_list(http, reg):
    """Docker v2 schema 2 manifests and manifest lists keep their media type."""
    name = img_name(reg, "docker")
    children = []
    for arch in ("amd64", "arm64"):
        img = make_image(n_layers=1, layer_size=2 * KiB, arch=arch, config_media_type=MT_DOCKER_CONFIG,
                         layer_media_type=MT_DOCKER_LAYER)
        m = img.manifest_json
        m["mediaType"] = MT_DOCKER_MANIFEST
        body = json.dumps(m, indent=3).encode()
        http.upload_blobs(name, img.blobs)
        r = http.put_manifest(name, f"{arch}-only", body, MT_DOCKER_MANIFEST)
        assert_status(r, 201)
        assert r.headers.get("Docker-Content-Digest") == sha256_digest(body)
        g = http.get_manifest(name, f"{arch}-only")
        assert_status(g, 200)
        assert g.headers.get("Content-Type") == MT_DOCKER_MANIFEST
        assert g.content == body
        children.append({"mediaType": MT_DOCKER_MANIFEST, "digest": sha256_digest(body), "size": len(body),
                         "platform": {"architecture": arch, "os": "linux"}})
    lst = json.dumps({"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": children}).encode()
    r = http.put_manifest(name, "multi", lst, MT_DOCKER_LIST)
    assert_status(r, 201)
    g = http.get_manifest(name, "multi")
    assert_status(g, 200)
    assert g.headers.get("Content-Type") == MT_DOCKER_LIST
    assert g.content == lst


def test_index_referencing_missing_manifest_is_rejected(http, reg):
    name = img_name(reg)
    ghost = make_image(n_layers=1, layer_size=100)  # never pushed
    index = make_index([(ghost, {"architecture": "amd64", "os": "linux"})])
    r = http.put_manifest(name, "ghost", index, MT_OCI_INDEX)
    assert_oci_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


MT_BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


def test_index_listing_blobs_is_a_buildkit_cache(http, reg):
    """`docker buildx build --cache-to type=registry` pushes an index whose
    entries are the cache's layers and its cache config, blobs rather than
    manifests. They must be in the registry at their sizes, and they stay
    linked (undeletable, kept by GC) while the index exists."""
    name = img_name(reg, "cache")
    layer, config = random_bytes(3000), b'{"layers":[],"records":[]}'
    entries = [
        {"mediaType": MT_DOCKER_LAYER, "digest": sha256_digest(layer), "size": len(layer)},
        {"mediaType": MT_BUILDKIT_CACHE_CONFIG, "digest": sha256_digest(config), "size": len(config)},
    ]
    index = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}).encode()
    assert_oci_error(http.put_manifest(name, "cache", index, MT_OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")
    http.upload_blobs(name, [layer, config])
    lying = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                        "manifests": [dict(entries[0], size=len(layer) + 1), entries[1]]}).encode()
    assert_oci_error(http.put_manifest(name, "cache", lying, MT_OCI_INDEX), 400, "MANIFEST_INVALID")
    r = http.put_manifest(name, "cache", index, MT_OCI_INDEX)
    assert_status(r, 201)
    g = http.get_manifest(name, "cache")
    assert_status(g, 200)
    assert g.content == index
    # Linked while the index lives: a blob delete is refused with the spec's
    # 405 (not 403, which clients read as a credentials problem), saying why.
    refused = http.delete(f"/v2/{name}/blobs/{sha256_digest(layer)}")
    error = assert_oci_error(refused, 405, "UNSUPPORTED")
    assert "is used by 1 manifest(s)" in error["message"] and refused.headers["Allow"] == "GET, HEAD", describe(refused)
    assert_status(http.delete(f"/v2/{name}/manifests/{sha256_digest(index)}"), 202)
    assert_status(http.delete(f"/v2/{name}/blobs/{sha256_digest(layer)}"), 202)


def test_manifest_put_by_digest(http, reg):
    name = img_name(reg)
    img = make_image(n_layers=1, layer_size=1 * KiB)
    http.upload_blobs(name, img.blobs)
    r = http.put_manifest(name, img.digest, img.manifest)
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == img.digest
    g = http.get_manifest(name, img.digest)
    assert_status(g, 200)
    assert g.content == img.manifest


def test_manifest_put_with_mismatched_digest_reference(http, reg):
    name = img_name(reg)
    img = make_image(n_layers=1, layer_size=1 * KiB)
    http.upload_blobs(name, img.blobs)
    wrong = sha256_digest(img.manifest + b" ")
    assert_oci_error(http.put_manifest(name, wrong, img.manifest), 400, "DIGEST_INVALID")
    assert_status(http.get_manifest(name, wrong), 404)
    assert_status(http.get_manifest(name, img.digest), 404)


def test_unknown_manifest(http, reg):
    name = img_name(reg)
    http.push_image(name, make_image(n_layers=1, layer_size=100), "exists")
    assert_oci_error(http.get_manifest(name, "does-not-exist"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.get_manifest(name, sha256_digest(random_bytes(16))), 404, "MANIFEST_UNKNOWN")
    assert_status(http.get_manifest(name, "does-not-exist", method="HEAD"), 404)
    # A well-formed digest of an algorithm not stored here names nothing, on every method.
    sha512 = "sha512:" + "ab" * 64
    assert_oci_error(http.get_manifest(name, sha512), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.delete(f"/v2/{name}/manifests/{sha512}"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("missing", ["layer", "config"])
def test_manifest_blob_unknown(http, reg, missing):
    name = img_name(reg)
    img = make_image(n_layers=2, layer_size=1 * KiB)
    present = img.layers if missing == "config" else [img.config, img.layers[0]]
    http.upload_blobs(name, present)
    r = http.put_manifest(name, "broken", img.manifest)
    assert_oci_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_status(http.get_manifest(name, "broken"), 404)


@pytest.mark.parametrize("lie", ["config", "layer", "huge", "index-child"])
def test_descriptor_size_must_match_content(http, reg, lie):
    """A descriptor's size must match its content (image-spec): a lying size
    made every pull fail its size check, and Int64.max in one made the admin
    API's size sums trap. Nothing is stored."""
    name = img_name(reg)
    img = make_image(n_layers=1, layer_size=1 * KiB)
    http.upload_blobs(name, img.blobs)
    doc = json.loads(img.manifest)
    if lie == "config":
        doc["config"]["size"] += 1
    elif lie == "layer":
        doc["layers"][0]["size"] -= 1
    elif lie == "huge":
        doc["config"]["size"] = 2**63 - 1
    if lie == "index-child":
        assert_status(http.put_manifest(name, "child", img.manifest), 201)
        index = json.loads(make_index([(img, {"os": "linux", "architecture": "amd64"})]))
        index["manifests"][0]["size"] += 7
        body, media_type = json.dumps(index).encode(), MT_OCI_INDEX
    else:
        body, media_type = json.dumps(doc).encode(), MT_OCI_MANIFEST
    r = http.put_manifest(name, "liar", body, media_type=media_type)
    assert_oci_error(r, 400, "MANIFEST_INVALID")
    assert "bytes" in r.json()["errors"][0]["message"]
    assert_status(http.get_manifest(name, "liar"), 404)
    assert_status(http.get_manifest(name, sha256_digest(body)), 404)


@pytest.mark.parametrize(
    "body,codes",
    [
        (b"this is not json", {"MANIFEST_INVALID"}),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": ', {"MANIFEST_INVALID"}),
        (b"[]", {"MANIFEST_INVALID"}),
        (b"", {"MANIFEST_INVALID"}),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": "nope", "layers": []}',
            {"MANIFEST_INVALID"},
        ),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
            b'"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:zz", "size": 2}, "layers": []}',
            {"MANIFEST_INVALID", "DIGEST_INVALID"},
        ),
        (b"\xff\xfe\x00garbage", {"MANIFEST_INVALID"}),
    ],
    ids=["text", "truncated", "array", "empty", "config-not-object", "bad-descriptor-digest", "binary"],
)
def test_manifest_invalid(http, reg, body, codes):
    name = img_name(reg)
    r = http.put_manifest(name, "bad", body)
    assert_status(r, 400)
    assert set(oci_error_codes(r)) & codes, describe(r)
    assert_status(http.get_manifest(name, "bad"), 404)


def _padded_manifest(img, total_size: int) -> bytes:
    m = img.manifest_json
    m["annotations"] = {"org.example.pad": ""}
    base = len(json.dumps(m).encode())
    m["annotations"]["org.example.pad"] = "x" * (total_size - base)
    body = json.dumps(m).encode()
    assert len(body) == total_size
    return body


def test_manifest_over_4mib_rejected(http, reg):
    name = img_name(reg)
    img = make_image(n_layers=1, layer_size=100)
    http.upload_blobs(name, img.blobs)
    body = _padded_manifest(img, 4 * MiB + 1024)
    try:
        r = http.put_manifest(name, "huge", body)
    except requests.ConnectionError as e:
        pytest.fail(f"server dropped the connection instead of answering 400/413: {e}")
    # "SHOULD respond ... with a response code 413 Payload Too Large" (distribution-spec, "Pushing Manifests").
    assert_oci_error(r, 413, "MANIFEST_INVALID")
    assert_status(http.get_manifest(name, "huge"), 404)
    assert_status(http.get_manifest(name, sha256_digest(body)), 404)


def test_manifest_just_under_4mib_accepted(http, reg):
    name = img_name(reg)
    img = make_image(n_layers=1, layer_size=100)
    http.upload_blobs(name, img.blobs)
    body = _padded_manifest(img, 4 * MiB - 4 * KiB)
    r = http.put_manifest(name, "big", body)
    assert_status(r, 201)
    g = http.get_manifest(name, "big")
    assert_status(g, 200)
    assert g.content == body


# ===========================================================================
# Name, tag and digest validation
# ===========================================================================


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v2/REG/UPPER/manifests/x"),
        ("GET", "/v2/{reg}/UPPER/manifests/latest"),
        ("GET", "/v2/{reg}/app/Web/manifests/latest"),
        ("GET", "/v2/{reg}/a..b/manifests/latest"),
        ("GET", "/v2/{reg}/-lead/manifests/latest"),
        ("GET", "/v2/{reg}/trail-/manifests/latest"),
        ("GET", "/v2/{reg}/UPPER/tags/list"),
        ("GET", "/v2/{reg}/UPPER/blobs/sha256:" + "a" * 64),
        ("POST", "/v2/{reg}/UPPER/blobs/uploads/"),
    ],
)
def test_name_invalid(http, reg, method, path):
    r = http.request(method, path.format(reg=reg), headers={"Content-Length": "0"})
    assert_oci_error(r, 400, "NAME_INVALID")


@pytest.fixture(scope="module")
def pushable(http, reg):
    """An image whose blobs are present in `reg/tags`, ready for manifest PUTs."""
    name = f"{reg}/tags"
    img = make_image(n_layers=1, layer_size=100)
    http.upload_blobs(name, img.blobs)
    return name, img


# A Content-Type without a media type in it once killed the server (the
# first part of an empty split); it counts as no Content-Type now.
@pytest.mark.parametrize("content_type", ["", ";", "; charset=utf-8"], ids=["empty", "semicolon", "parameters-only"])
def test_manifest_content_type_without_media_type(http, pushable, content_type):
    name, img = pushable
    assert_status(http.put_manifest(name, "no-type", img.manifest, media_type=content_type), 201)
    g = http.get_manifest(name, "no-type")
    assert_status(g, 200)
    assert g.headers.get("Content-Type") == MT_OCI_MANIFEST


@pytest.mark.parametrize(
    "tag",
    [".dot-first", "-dash-first", "a" * 129, "bad%21tag", "has%20space", "semi%3Bcolon", "Uppercase"],
    ids=["dot-first", "dash-first", "129-chars", "bang", "space", "semicolon", "uppercase"],
)
def test_tag_invalid(http, pushable, tag):
    name, img = pushable
    r = http.put_manifest(name, tag, img.manifest)
    assert_oci_error(r, 400, "TAG_INVALID")


# DESIGN §1: tags are `^[a-z0-9_][a-z0-9._-]{0,127}$` (lowercase only, unlike
# the OCI grammar, which also allows uppercase).
@pytest.mark.parametrize("tag", ["a" * 128, "_underscore-first", "v1.2.3-rc.1_x", "0", "a--b..c__d"])
def test_tag_valid_edge_cases(http, pushable, tag):
    name, img = pushable
    assert_status(http.put_manifest(name, tag, img.manifest), 201)
    g = http.get_manifest(name, tag)
    assert_status(g, 200)
    assert g.content == img.manifest


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v2/{name}/blobs/sha256:zz"),
        ("GET", "/v2/{name}/blobs/sha256:" + "a" * 63),
        ("GET", "/v2/{name}/blobs/sha256:" + "A" * 64),
        ("GET", "/v2/{name}/blobs/sha256:" + "g" * 64),
        ("GET", "/v2/{name}/blobs/notadigest"),
        ("HEAD", "/v2/{name}/blobs/sha256:" + "a" * 65),
        ("DELETE", "/v2/{name}/blobs/sha256:zz"),
        ("GET", "/v2/{name}/manifests/sha256:zz"),
        ("GET", "/v2/{name}/referrers/sha256:zz"),
        ("GET", "/v2/{name}/referrers/notadigest"),
        ("POST", "/v2/{name}/blobs/uploads/?digest=sha256:abc"),
        ("POST", "/v2/{name}/blobs/uploads/?digest=nocolon"),
    ],
)
def test_digest_invalid(http, pushable, method, path):
    name, _ = pushable
    r = http.request(method, path.format(name=name), data=b"hello" if method == "POST" else None, headers=OCTET)
    if method == "HEAD":
        assert_status(r, 400)
    else:
        assert_oci_error(r, 400, "DIGEST_INVALID")


def test_digest_invalid_on_upload_put(http, reg):
    name = img_name(reg)
    s = http.start_upload(name)
    assert_status(s, 202)
    loc = http.abs_location(s)
    assert_oci_error(http.put(with_query(loc, digest="sha256:abc"), data=b"hello", headers=OCTET), 400, "DIGEST_INVALID")


@pytest.mark.parametrize("bad", ["sha256:abc", "sha512:" + "a" * 128, "nocolon"])
def test_malformed_digest_on_upload_put_keeps_the_upload(http, reg, bad):
    """A final PUT whose digest does not parse changes nothing: neither its
    body nor the chunks already acknowledged are lost or added to."""
    name = img_name(reg)
    data, tail = random_bytes(3000), random_bytes(500)
    s = http.start_upload(name)
    p = patch_chunk(http, http.abs_location(s), data, 0)
    assert_status(p, 202)
    loc = http.abs_location(p)
    assert_oci_error(http.put(with_query(loc, digest=bad), data=tail, headers=OCTET), 400, "DIGEST_INVALID")
    status = http.get(loc)
    assert_status(status, 204)
    assert status.headers["Range"] == f"0-{len(data) - 1}", describe(status)
    done = http.put(with_query(loc, digest=sha256_digest(data + tail)), data=tail, headers=OCTET)
    assert_status(done, 201)
    assert http.get(f"/v2/{name}/blobs/{sha256_digest(data + tail)}").content == data + tail


def test_upload_put_without_digest_is_rejected(http, reg):
    name = img_name(reg)
    s = http.start_upload(name)
    assert_status(s, 202)
    r = http.put(http.abs_location(s), data=b"hello", headers=OCTET)
    assert_oci_error(r, 400, "DIGEST_INVALID")


# ===========================================================================
# Tag listing and catalog
# ===========================================================================

TAGS = [f"t{i:02d}" for i in range(25)]


@pytest.fixture(scope="module")
def tagged_repo(http, reg):
    name = f"{reg}/many-tags"
    img = make_image(n_layers=1, layer_size=100)
    http.upload_blobs(name, img.blobs)
    for t in TAGS:
        assert_status(http.put_manifest(name, t, img.manifest), 201)
    return name


def test_tags_list_all(http, tagged_repo):
    r = http.get(f"/v2/{tagged_repo}/tags/list")
    assert_status(r, 200)
    body = r.json()
    assert body["name"] == tagged_repo
    assert body["tags"] == TAGS


@pytest.mark.parametrize("path", ["/v2/{repo}/tags/list?n=3", "/v2/_catalog?n=3"])
def test_head_of_a_listing_is_its_get_without_the_body(http, tagged_repo, path):
    """The listings answer HEAD, as their 405's `Allow` says."""
    path = path.format(repo=tagged_repo)
    g = http.get(path)
    h = http.head(path)
    assert_status(h, 200)
    assert h.content == b""
    assert h.headers["Content-Length"] == str(len(g.content)) == g.headers["Content-Length"]
    assert h.headers.get("Link") == g.headers.get("Link"), describe(h)
    assert "tags/list" not in path or h.headers.get("Link"), describe(h)  # 25 tags: more pages


@pytest.mark.parametrize("n", [1, 7, 10, 25, 100])
def test_tags_pagination(http, tagged_repo, n):
    r = http.get(f"/v2/{tagged_repo}/tags/list?n={n}")
    assert_status(r, 200)
    first = r.json()["tags"]
    assert first == TAGS[:n]
    if n < len(TAGS):
        link = r.headers.get("Link")
        assert link, f"page of {n} out of {len(TAGS)} tags must carry a Link header:\n{describe(r)}"
        nxt = parse_next_link(link)
        assert nxt and nxt.startswith(f"/v2/{tagged_repo}/tags/list?"), link
        assert f"last={TAGS[n - 1]}" in nxt and f"n={n}" in nxt, link

    items, pages = http.paginate(f"/v2/{tagged_repo}/tags/list?n={n}", "tags")
    assert items == TAGS
    full_pages = -(-len(TAGS) // n)
    assert pages in (full_pages, full_pages + 1)  # a final empty page is tolerated


@pytest.mark.parametrize(
    "query,expected",
    [
        ("last=t10", TAGS[11:]),
        ("n=5&last=t10", TAGS[11:16]),
        ("n=5&last=t24", []),
        ("last=t105", TAGS[11:]),  # `last` need not be an existing tag
        ("n=3&last=a", TAGS[:3]),
    ],
)
def test_tags_last(http, tagged_repo, query, expected):
    r = http.get(f"/v2/{tagged_repo}/tags/list?{query}")
    assert_status(r, 200)
    assert (r.json().get("tags") or []) == expected


def test_tags_list_unknown_repository(http, reg):
    assert_oci_error(http.get(f"/v2/{reg}/never-pushed-{unique()}/tags/list"), 404, "NAME_UNKNOWN")
    assert_oci_error(http.get(f"/v2/{reg}/never-pushed-{unique()}/tags/list?last=a&n=5"), 404, "NAME_UNKNOWN")


def test_catalog_pagination(http, new_registry):
    creg = new_registry("cat")
    repos = [f"{creg}/app{i}" for i in range(5)]
    img = make_image(n_layers=1, layer_size=100)
    for repo in repos:
        http.push_image(repo, img, "v1")

    r = http.get("/v2/_catalog")
    assert_status(r, 200)
    assert set(repos) <= set(r.json()["repositories"])

    items, pages = http.paginate("/v2/_catalog?n=2", "repositories")
    assert len(items) == len(set(items)), "catalog pagination returned duplicates"
    assert items == sorted(items), "catalog must be in lexical order"
    assert set(repos) <= set(items)
    assert pages >= 3

    r = http.get("/v2/_catalog?n=2")
    assert_status(r, 200)
    assert len(r.json()["repositories"]) == 2
    assert parse_next_link(r.headers.get("Link", "")), describe(r)

    r = http.get(f"/v2/_catalog?n=2&last={creg}/app1")
    assert_status(r, 200)
    assert r.json()["repositories"] == [f"{creg}/app2", f"{creg}/app3"]


def test_catalog_of_a_scoped_caller_pages_its_registries_only(server, http, new_registry):
    """A caller with roles on some registries reads only those registries'
    images, in the full catalog's order and with its cursors: registry
    `<x>-b` sorts before `<x>` (`-` < `/`), a role may name a registry not
    created yet, and a page may end at a registry's last image."""
    from helpers import api_bind, new_principal

    base = new_registry("cs")
    assert_status(http.create_registry(base + "-b"), 201)
    hidden = new_registry("cs")
    img = make_image(n_layers=1, layer_size=64)
    expected = sorted([f"{base}/app{i}" for i in range(3)] + [f"{base}-b/app{i}" for i in range(2)])
    for repo in expected + [f"{hidden}/app"]:
        http.push_image(repo, img, "v1")
    user, creds = new_principal(http, "viewer", base)
    api_bind(http, user, "uploader", base + "-b")
    api_bind(http, user, "viewer", base + "-later")
    viewer = server.client(creds=creds)

    r = viewer.get("/v2/_catalog")
    assert_status(r, 200)
    assert r.json()["repositories"] == expected
    assert "Link" not in r.headers, describe(r)
    for n in range(1, len(expected) + 1):
        items, pages = viewer.paginate(f"/v2/_catalog?n={n}", "repositories")
        assert items == expected, f"n={n}"
        assert pages == -(-len(expected) // n), f"n={n}: a full last page links to nothing"
    # The page that ends at the last image of `<x>-b` still links on to `<x>`.
    r = viewer.get("/v2/_catalog?n=2")
    assert r.json()["repositories"] == expected[:2]
    assert parse_next_link(r.headers.get("Link", "")), describe(r)
    r = viewer.get(f"/v2/_catalog?n=2&last={expected[1]}")
    assert r.json()["repositories"] == expected[2:4]
    # A cursor in a registry the caller cannot see, before and after theirs.
    assert viewer.get("/v2/_catalog?last=a").json()["repositories"] == expected
    assert viewer.get(f"/v2/_catalog?last={hidden}/zzz").json()["repositories"] == [
        e for e in expected if e > f"{hidden}/zzz"
    ]


# ===========================================================================
# Referrers
# ===========================================================================

SBOM = "application/vnd.example.sbom.v1+json"
SIG_CONFIG = "application/vnd.example.signature.config.v1+json"


@pytest.fixture(scope="module")
def referrers_setup(http, reg):
    name = f"{reg}/refs"
    subject_img = make_image(n_layers=1, layer_size=1 * KiB)
    http.push_image(name, subject_img, "v1")
    subj = subject_img.descriptor()

    sbom = make_artifact(SBOM, subj, annotations={"org.example.kind": "sbom"})
    # No artifactType field: the referrers API must report the config mediaType.
    sig = make_artifact(None, subj, config_media_type=SIG_CONFIG)
    responses = {}
    for art in (sbom, sig):
        http.upload_blobs(name, art.blobs)
        r = http.put_manifest(name, art.digest, art.manifest)
        assert_status(r, 201)
        responses[art.digest] = r
    return name, subject_img, sbom, sig, responses


def test_manifest_with_subject_returns_oci_subject(referrers_setup):
    _, subject_img, sbom, sig, responses = referrers_setup
    for art in (sbom, sig):
        assert responses[art.digest].headers.get("OCI-Subject") == subject_img.digest, describe(responses[art.digest])


def test_referrers_lists_all(http, referrers_setup):
    name, subject_img, sbom, sig, _ = referrers_setup
    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}")
    assert_status(r, 200)
    assert r.headers.get("Content-Type", "").startswith(MT_OCI_INDEX), describe(r)
    body = r.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == MT_OCI_INDEX
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert set(by_digest) == {sbom.digest, sig.digest}

    d = by_digest[sbom.digest]
    assert d["mediaType"] == MT_OCI_MANIFEST
    assert d["size"] == len(sbom.manifest)
    assert d["artifactType"] == SBOM
    assert d.get("annotations") == {"org.example.kind": "sbom"}

    d = by_digest[sig.digest]
    assert d["size"] == len(sig.manifest)
    assert d["artifactType"] == SIG_CONFIG
    # HEAD answers as GET does, without the body.
    h = http.head(f"/v2/{name}/referrers/{subject_img.digest}")
    assert_status(h, 200)
    assert h.content == b"" and h.headers["Content-Length"] == str(len(r.content)), describe(h)
    assert h.headers["Content-Type"] == r.headers["Content-Type"]


def test_referrers_filter(http, referrers_setup):
    name, subject_img, sbom, _, _ = referrers_setup
    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}?artifactType={SBOM}")
    assert_status(r, 200)
    assert r.headers.get("OCI-Filters-Applied") == "artifactType", describe(r)
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom.digest]

    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}?artifactType=application/vnd.example.none")
    assert_status(r, 200)
    assert r.headers.get("OCI-Filters-Applied") == "artifactType", describe(r)
    assert r.json()["manifests"] == []

    # An empty artifactType is no filter (a pushed manifest's empty one is stored as none).
    everything = http.get(f"/v2/{name}/referrers/{subject_img.digest}").json()["manifests"]
    assert len(everything) == 2
    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}?artifactType=")
    assert_status(r, 200)
    assert "OCI-Filters-Applied" not in r.headers, describe(r)
    assert r.json()["manifests"] == everything


@pytest.mark.parametrize("which", ["existing_without_referrers", "unknown_digest"])
def test_referrers_empty(http, referrers_setup, which):
    name, _, sbom, _, _ = referrers_setup
    digest = sbom.digest if which == "existing_without_referrers" else sha256_digest(random_bytes(16))
    r = http.get(f"/v2/{name}/referrers/{digest}")
    assert_status(r, 200)
    assert r.headers.get("Content-Type", "").startswith(MT_OCI_INDEX), describe(r)
    body = r.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == MT_OCI_INDEX
    assert body["manifests"] == []
    assert "OCI-Filters-Applied" not in r.headers


def test_referrers_follow_deletion(http, reg):
    name = img_name(reg, "refdel")
    subject_img = make_image(n_layers=1, layer_size=100)
    http.push_image(name, subject_img, "v1")
    a = make_artifact(SBOM, subject_img.descriptor())
    b = make_artifact("application/vnd.example.other", subject_img.descriptor())
    for art in (a, b):
        http.push_image(name, art)
    assert_status(http.delete(f"/v2/{name}/manifests/{a.digest}"), 202)
    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}")
    assert_status(r, 200)
    assert [d["digest"] for d in r.json()["manifests"]] == [b.digest]


def test_referrers_are_paged_by_size(http, reg):
    """Each descriptor carries its manifest's annotations, so a page ends at
    4 MiB of them with a Link to the next, which an artifactType filter keeps."""
    name = img_name(reg, "refpages")
    subject_img = make_image(n_layers=1, layer_size=100)
    http.push_image(name, subject_img, "v1")
    big = "x" * (1100 * KiB)  # four of these pass 4 MiB
    sboms = [make_artifact(SBOM, subject_img.descriptor(), annotations={"org.example.note": big, "org.example.i": str(i)})
             for i in range(5)]
    others = [make_artifact("application/vnd.example.other", subject_img.descriptor()) for _ in range(3)]
    for art in sboms + others:
        http.push_image(name, art)

    def pages(query: str) -> list[list[str]]:
        url, seen = f"/v2/{name}/referrers/{subject_img.digest}{query}", []
        while url:
            r = http.get(url)
            assert_status(r, 200)
            seen.append([d["digest"] for d in r.json()["manifests"]])
            link = r.headers.get("Link")
            url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
            assert len(seen) < 10, seen
        return seen

    every = sorted(a.digest for a in sboms + others)
    big_ones = sorted(a.digest for a in sboms)
    cut = every.index(big_ones[3]) + 1  # the page ends with the fourth large descriptor
    assert pages("") == [every[:cut], every[cut:]]
    assert pages(f"?artifactType={SBOM}") == [big_ones[:4], big_ones[4:]]

    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}?last=notadigest")
    assert_status(r, 400)
    assert r.json()["errors"][0]["code"] == "DIGEST_INVALID", describe(r)


def test_referrer_pushed_before_subject(http, reg):
    """OCI 1.1: a manifest whose subject does not exist (yet) is accepted."""
    name = img_name(reg, "early")
    subject_img = make_image(n_layers=1, layer_size=100)
    art = make_artifact(SBOM, subject_img.descriptor())
    r = http.push_image(name, art)
    assert r.headers.get("OCI-Subject") == subject_img.digest
    http.push_image(name, subject_img, "v1")
    r = http.get(f"/v2/{name}/referrers/{subject_img.digest}")
    assert_status(r, 200)
    assert [d["digest"] for d in r.json()["manifests"]] == [art.digest]


def test_cosign_style_tag(http, reg):
    name = img_name(reg, "cosign")
    target = make_image(n_layers=1, layer_size=100)
    http.push_image(name, target, "v1")
    sig = make_artifact(None, None, config_media_type=MT_OCI_EMPTY, payload=b'{"critical":{}}',
                        payload_media_type="application/vnd.dev.cosign.simplesigning.v1+json")
    tag = "sha256-" + target.digest.split(":", 1)[1] + ".sig"
    http.upload_blobs(name, sig.blobs)
    r = http.put_manifest(name, tag, sig.manifest)
    assert_status(r, 201)
    g = http.get_manifest(name, tag)
    assert_status(g, 200)
    assert g.content == sig.manifest
    tags = http.get(f"/v2/{name}/tags/list").json()["tags"]
    assert sorted(tags) == sorted(["v1", tag])


# ===========================================================================
# Deletion
# ===========================================================================


def test_delete_manifest_by_digest(http, reg):
    name = img_name(reg, "del")
    img = make_image(n_layers=1, layer_size=100)
    http.push_image(name, img, "a")
    assert_status(http.put_manifest(name, "b", img.manifest), 201)
    keep = make_image(n_layers=1, layer_size=100)
    http.push_image(name, keep, "keep")

    r = http.delete(f"/v2/{name}/manifests/{img.digest}")
    assert_status(r, 202)
    assert_oci_error(http.get_manifest(name, img.digest), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.get_manifest(name, "a"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(http.get_manifest(name, "b"), 404, "MANIFEST_UNKNOWN")
    t = http.get(f"/v2/{name}/tags/list")
    assert_status(t, 200)
    assert t.json()["tags"] == ["keep"]
    assert_oci_error(http.delete(f"/v2/{name}/manifests/{img.digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_tag_removes_only_the_tag(http, reg):
    name = img_name(reg, "deltag")
    img = make_image(n_layers=1, layer_size=100)
    http.push_image(name, img, "t1")
    assert_status(http.put_manifest(name, "t2", img.manifest), 201)

    assert_status(http.delete(f"/v2/{name}/manifests/t1"), 202)
    assert_oci_error(http.get_manifest(name, "t1"), 404, "MANIFEST_UNKNOWN")
    g = http.get_manifest(name, "t2")
    assert_status(g, 200)
    assert g.content == img.manifest
    assert_status(http.get_manifest(name, img.digest), 200)
    assert http.get(f"/v2/{name}/tags/list").json()["tags"] == ["t2"]
    assert_oci_error(http.delete(f"/v2/{name}/manifests/t1"), 404, "MANIFEST_UNKNOWN")


def test_delete_blob(http, reg):
    name = img_name(reg, "delblob")
    data = random_bytes(3000)
    digest = http.upload_blob(name, data)
    assert_status(http.delete(f"/v2/{name}/blobs/{digest}"), 202)
    assert_status(http.head_blob(name, digest), 404)
    assert_oci_error(http.get_blob(name, digest), 404, "BLOB_UNKNOWN")
    assert_oci_error(http.delete(f"/v2/{name}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    # It can be pushed again afterwards.
    assert http.upload_blob(name, data) == digest
    assert http.get_blob(name, digest).content == data


# ===========================================================================
# Registries that do not exist
# ===========================================================================


def test_push_into_unknown_registry(http):
    missing = unique("nosuch")
    name = f"{missing}/app"
    data = random_bytes(100)
    img = make_image(n_layers=1, layer_size=100)
    cases = [
        http.start_upload(name),
        http.post(f"/v2/{name}/blobs/uploads/?digest={sha256_digest(data)}", data=data, headers=OCTET),
        http.put_manifest(name, "v1", img.manifest),
        http.get_manifest(name, "v1"),
        http.get(f"/v2/{name}/tags/list"),
    ]
    for r in cases:
        err = assert_oci_error(r, 404, "NAME_UNKNOWN")
        text = json.dumps(err)
        assert missing in text, f"error should name the missing registry {missing!r}: {text}"
    assert missing not in [x["name"] for x in http.get("/api/v1/registries").json()["items"]]


# ===========================================================================
# Malformed input never causes a 5xx
# ===========================================================================


@pytest.mark.parametrize(
    "method,path,headers,body,expected",
    [
        # {upload} is a fresh upload session URL path; {upload_q} is the same
        # ending in "?" or "&" so that query parameters can be appended.
        ("PATCH", "{upload}", {"Content-Range": "garbage"}, b"abc", range(400, 417)),
        ("PATCH", "{upload}", {"Content-Range": "5-2"}, b"abc", range(400, 417)),
        ("PATCH", "{upload}", {"Content-Range": "0-99"}, b"abc", range(400, 417)),  # length mismatch
        ("PUT", "{upload_q}digest=", {}, b"abc", {400}),
        ("PUT", "{upload_q}digest=sha256:", {}, b"abc", {400}),
        ("PUT", "{upload_q}digest=sha256:{some}", {}, b"abc", {400}),  # "sha256:sha256:..."
        ("POST", "/v2/{name}/blobs/uploads/?mount=", {}, b"", {202, 400}),
        ("POST", "/v2/{name}/blobs/uploads/?mount=sha256:zz&from={name}", {}, b"", {202, 400}),
        ("POST", "/v2/{name}/blobs/uploads/?mount={some}&from=..%2F..%2Fetc", {}, b"", {202, 400}),
        ("POST", "/v2/{name}/blobs/uploads/?mount={some}&from=UPPER%2Fcase", {}, b"", {202, 400}),
        ("PUT", "/v2/{name}/manifests/nocontenttype", {"Content-Type": None}, b"{}", {400, 415}),
        ("PUT", "/v2/{name}/manifests/weirdtype", {"Content-Type": "text/plain"}, b"{}", {400, 415}),
        ("GET", "/v2/{name}/blobs/uploads/%00", {}, None, {400, 404}),
        ("GET", "/v2/{name}/blobs/uploads/..%2F..%2F..%2Fetc%2Fpasswd", {}, None, {400, 404}),
        ("GET", "/v2/{reg}/%2e%2e/%2e%2e/manifests/x", {}, None, {400, 404}),
        ("GET", "/v2/{reg}/x%2F..%2F..%2Fy/manifests/x", {}, None, {400, 404}),
        ("GET", "/v2/{name}/blobs/{some}", {"Range": "bytes=abc"}, None, {200, 400, 416}),
        ("GET", "/v2/{name}/blobs/{some}", {"Range": "bytes=5-2"}, None, {200, 400, 416}),
        ("GET", "/v2/{name}/blobs/{some}", {"Range": "bytes=0-1,5-6"}, None, {200, 206, 400, 416}),
        ("GET", "/v2/{name}/tags/list?n=-1", {}, None, {200, 400}),
        ("GET", "/v2/{name}/tags/list?n=abc", {}, None, {200, 400}),
        ("GET", "/v2/_catalog?n=abc", {}, None, {200, 400}),
        ("GET", "/v2/{reg}/" + "a" * 300 + "/manifests/x", {}, None, {400, 404}),
        ("GET", "/v2/{name}/manifests/", {}, None, {400, 404, 405}),
        ("PUT", "/v2/{name}/blobs/{some}", {}, b"x", {400, 404, 405}),
        ("BREW", "/v2/", {}, None, {400, 404, 405, 501}),
        ("POST", "/api/v1/registries", {"Content-Type": "application/json"}, b"{not json", {400}),
        ("POST", "/api/v1/registries", {"Content-Type": "application/json"}, b'{"name": 5}', {400}),
        ("POST", "/api/v1/registries", {"Content-Type": "application/json"}, b"[]", {400}),
        ("POST", "/api/v1/registries", {"Content-Type": "application/json"}, b"{}", {400}),
    ],
)
def test_malformed_requests_are_4xx(http, pushable, method, path, headers, body, expected):
    name, img = pushable
    fmt = {"name": name, "reg": name.split("/")[0], "some": sha256_digest(img.config)}
    if "{upload" in path:
        s = http.start_upload(name)
        assert_status(s, 202)
        loc = path_of(http.abs_location(s))
        fmt["upload"] = loc
        fmt["upload_q"] = loc + ("&" if "?" in loc else "?")
    url = path.format(**fmt)
    h = {"Content-Type": "application/octet-stream"}
    h.update(headers)  # a None value removes the header
    try:
        r = http.request(method, url, headers=h, data=body)
    except requests.ConnectionError as e:
        pytest.fail(f"{method} {url}: server dropped the connection: {e}")
    assert r.status_code < 500, describe(r)
    assert r.status_code in expected, describe(r)


# ===========================================================================
# Concurrency and accounting
# ===========================================================================


@pytest.mark.parametrize("layout", ["same_repo", "two_repos"])
def test_concurrent_identical_layer_pushes_dedupe(http, server, new_registry, layout):
    creg = new_registry("cc")
    names = [f"{creg}/app", f"{creg}/app"] if layout == "same_repo" else [f"{creg}/app1", f"{creg}/app2"]
    data = random_bytes(5 * MiB)
    digest = sha256_digest(data)

    sessions = []
    for n in names:
        r = http.start_upload(n)
        assert_status(r, 202)
        sessions.append(http.abs_location(r))

    barrier = threading.Barrier(len(names))
    results: list = [None] * len(names)

    def push(i: int) -> None:
        c = server.client()  # separate connection per thread
        barrier.wait(timeout=10)
        try:
            results[i] = c.put(with_query(sessions[i], digest=digest), data=data, headers=OCTET)
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in results:
        assert isinstance(r, requests.Response), f"push failed: {r!r}"
        assert_status(r, 201)
        assert r.headers.get("Docker-Content-Digest") == digest

    for n in names:
        g = http.get_blob(n, digest)
        assert_status(g, 200)
        assert g.content == data

    usage = http.registry_info(creg)["usage"]
    assert usage["blobs"] == 1, usage
    assert usage["logical_bytes"] == 5 * MiB, usage


def test_registry_usage_counts_distinct_blobs(http, new_registry):
    creg = new_registry("us")
    a, b = random_bytes(1000), random_bytes(3000)
    http.upload_blob(f"{creg}/x", a)
    http.upload_blob(f"{creg}/x", b)
    http.upload_blob(f"{creg}/x", a)  # same content again
    usage = http.registry_info(creg)["usage"]
    assert usage["logical_bytes"] == 4000 and usage["blobs"] == 2, usage


# ===========================================================================
# Size limits, disconnects and abandoned uploads (server with flags)
# ===========================================================================

LIMIT = 1 * MiB


@pytest.fixture(scope="module")
def limited(spawn_server):
    srv = spawn_server("limited", registries=["lim"], extra_args=["--max-blob-size", str(LIMIT), "--upload-timeout", "2"])
    yield srv
    srv.stop_quietly()


@pytest.fixture
def lim(limited):
    """(client, fresh registry name) on the limited server."""
    c = limited.client()
    name = unique("l")
    assert_status(c.create_registry(name), 201)
    return c, name


def _uploads_drained(c: Registry):
    u = c.system_usage()
    return u if (u["open_uploads"] == 0 and u["upload_bytes"] == 0) else None


@pytest.mark.parametrize("mode", ["post_with_digest", "put_monolithic", "chunked_patches"])
def test_max_blob_size_enforced(lim, mode):
    c, creg = lim
    name = f"{creg}/big"
    data = random_bytes(LIMIT + 512 * KiB)
    digest = sha256_digest(data)

    try:
        if mode == "post_with_digest":
            r = c.post(f"/v2/{name}/blobs/uploads/?digest={digest}", data=data, headers=OCTET)
        elif mode == "put_monolithic":
            s = c.start_upload(name)
            assert_status(s, 202)
            r = c.put(with_query(c.abs_location(s), digest=digest), data=data, headers=OCTET)
        else:
            s = c.start_upload(name)
            assert_status(s, 202)
            loc = c.abs_location(s)
            half = len(data) // 2
            r = patch_chunk(c, loc, data[:half], 0)
            assert_status(r, 202)
            r = patch_chunk(c, c.abs_location(r), data[half:], half)
            if r.status_code == 202:  # limit may be enforced at PUT time instead
                r = c.put(with_query(c.abs_location(r), digest=digest), headers=OCTET)
    except requests.ConnectionError as e:
        pytest.fail(f"server dropped the connection instead of answering 413/400: {e}")

    assert_oci_error(r, (400, 413), "SIZE_INVALID")
    assert_status(c.head_blob(name, digest), 404)
    usage = c.registry_info(creg)["usage"]
    assert usage["blobs"] == 0 and usage["logical_bytes"] == 0, usage


@pytest.mark.parametrize("size", [512 * KiB, LIMIT])
def test_blob_at_or_under_limit_accepted(lim, size):
    c, creg = lim
    data = random_bytes(size)
    digest = c.upload_blob(f"{creg}/ok", data)
    assert c.get_blob(f"{creg}/ok", digest).content == data


@pytest.mark.parametrize("mode", ["post_with_digest", "put_session", "patch_session"])
def test_client_disconnect_mid_upload_leaves_nothing(limited, lim, mode):
    c, creg = lim
    name = f"{creg}/cut"
    data = random_bytes(600 * KiB)
    digest = sha256_digest(data)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}

    if mode == "post_with_digest":
        method, path = "POST", f"/v2/{name}/blobs/uploads/?digest={digest}"
    else:
        s = c.start_upload(name)
        assert_status(s, 202)
        loc = path_of(c.abs_location(s))
        if mode == "put_session":
            method, path = "PUT", with_query(loc, digest=digest)
        else:
            method, path = "PATCH", loc
            headers["Content-Range"] = f"0-{len(data) - 1}"

    partial_request(limited.host, method, path, {**headers, **c.auth_headers()}, data[: len(data) // 2])

    assert_status(c.head_blob(name, digest), 404)
    wait_until(lambda: _uploads_drained(c), timeout=20, message="open_uploads and upload_bytes back to 0")
    assert_status(c.head_blob(name, digest), 404)
    usage = c.registry_info(creg)["usage"]
    assert usage["blobs"] == 0 and usage["logical_bytes"] == 0, usage

    # The same content can still be pushed normally afterwards.
    assert c.upload_blob(name, data) == digest
    assert c.get_blob(name, digest).content == data


def test_a_wall_clock_jump_does_not_expire_an_upload_in_progress(make_server, tmp_path):
    """Idle uploads expire on the monotonic clock too: when the server's wall
    clock jumps two hours ahead between two chunks of a push (an NTP step, a
    VM resumed), the push goes on; an upload really left idle still expires."""
    clock = SteppedClock(tmp_path)
    srv = make_server(
        registries=["clk"], extra_args=["--upload-timeout", "10"], env=clock.env, launcher=clock.launcher, label="upload-clock")
    c = srv.client()
    first, second = random_bytes(64 * KiB), random_bytes(32 * KiB)
    s = c.start_upload("clk/app")
    assert_status(s, 202)
    r = patch_chunk(c, c.abs_location(s), first, 0)
    assert_status(r, 202)
    loc = c.abs_location(r)

    clock.step(c, "+2h")
    time.sleep(5.5)  # maintenance runs every 5 s here: it has looked at the upload since the jump
    r = patch_chunk(c, loc, second, len(first))
    assert_status(r, 202)
    digest = sha256_digest(first + second)
    assert_status(c.put(with_query(path_of(c.abs_location(r)), digest=digest)), 201)
    assert c.get_blob("clk/app", digest).content == first + second

    # One left idle for the timeout, on both clocks, goes.
    s = c.start_upload("clk/app")
    assert_status(s, 202)
    r = patch_chunk(c, c.abs_location(s), first, 0)
    assert_status(r, 202)
    wait_until(lambda: _uploads_drained(c), timeout=40, message="the idle upload to expire")
    assert_oci_error(c.get(c.abs_location(r)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_abandoned_upload_session_expires(lim):
    c, creg = lim
    name = f"{creg}/idle"
    s = c.start_upload(name)
    assert_status(s, 202)
    loc = c.abs_location(s)
    r = patch_chunk(c, loc, random_bytes(100 * KiB), 0)
    assert_status(r, 202)
    loc = c.abs_location(r)

    u = c.system_usage()
    assert u["open_uploads"] >= 1, u
    assert u["upload_bytes"] >= 100 * KiB, u

    wait_until(lambda: _uploads_drained(c), timeout=20, message="abandoned upload to expire")
    assert_oci_error(c.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
