"""Shared helpers for the Berth integration tests.

Everything here is local: content is generated on the fly, and all traffic
goes to the Berth server under test on 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Iterable
from urllib.parse import urljoin, urlsplit

import pytest
import requests

# --------------------------------------------------------------------------
# Media types
# --------------------------------------------------------------------------

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MT_HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
MT_HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

MANIFEST_ACCEPT = ", ".join(
    [
        MT_OCI_MANIFEST,
        MT_OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)

EMPTY_JSON = b"{}"

# Registry pre-created with the offline CLI for the shared session server.
SESSION_REGISTRY = "itest"

# Written by every server at first start (docs/identity.md).
BOOTSTRAP_FILE = "bootstrap-credentials.json"

# Default HTTP timeout for every request made by the tests (seconds). Generous
# because the machine running the suite may be small and busy.
HTTP_TIMEOUT = 30

KiB = 1024
MiB = 1024 * 1024


# --------------------------------------------------------------------------
# Digests and content
# --------------------------------------------------------------------------


def self_signed(cert, key, name: str, days: int = 2, san: str | None = None) -> None:
    """Writes a P-256 self-signed certificate for CN=`name` and its key with openssl."""
    extra = ["-addext", f"subjectAltName={san}"] if san else []
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", f"/CN={name}", *extra],
                   check=True, capture_output=True)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def anon_bytes(pid: int) -> int:
    """A process's anonymous memory (heap and stacks, `RssAnon`): what buffered bodies grow, unlike code pages."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"RssAnon:\s+(\d+) kB", status.read()).group(1)) * 1024


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def unique(prefix: str = "t") -> str:
    """A short lowercase alphanumeric name that is valid as a registry name,
    an image path component and a tag."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def canonical_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    d = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    d.update(extra)
    return d


@dataclass
class Image:
    """An image (or artifact) built in memory: blobs plus manifest bytes."""

    config: bytes
    layers: list[bytes]
    manifest: bytes
    config_media_type: str = MT_OCI_CONFIG
    layer_media_type: str = MT_OCI_LAYER_GZIP
    media_type: str = MT_OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]

    @property
    def manifest_json(self) -> dict:
        return json.loads(self.manifest)

    def descriptor(self) -> dict:
        return descriptor(self.media_type, self.manifest)


def make_layer(size: int, name: str = "payload.bin") -> bytes:
    """A genuine gzip-compressed tar archive holding one file of `size`
    random bytes (random data does not compress, so the layer is a little
    larger than `size`). Real gzip matters: skopeo sniffs layer compression
    and would otherwise re-compress the layer and change its digest."""
    return make_tgz({name: random_bytes(size)})


def diff_id(layer: bytes) -> str:
    """Digest of the uncompressed layer (falls back to the raw bytes for
    layers that are not gzip)."""
    try:
        return sha256_digest(gzip.decompress(layer))
    except (OSError, EOFError):
        return sha256_digest(layer)


def image_config(arch: str = "amd64", os_name: str = "linux", layers: Iterable[bytes] = ()) -> bytes:
    cfg = {
        "architecture": arch,
        "os": os_name,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [diff_id(l) for l in layers],
        },
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "berth integration test"}],
    }
    return canonical_json(cfg)


def make_image(
    n_layers: int = 2,
    layer_size: int = 64 * KiB,
    arch: str = "amd64",
    os_name: str = "linux",
    annotations: dict | None = None,
    subject: dict | None = None,
    artifact_type: str | None = None,
    config: bytes | None = None,
    config_media_type: str = MT_OCI_CONFIG,
    layers: list[bytes] | None = None,
    layer_media_type: str = MT_OCI_LAYER_GZIP,
) -> Image:
    if layers is None:
        layers = [make_layer(layer_size, f"layer{i}.bin") for i in range(n_layers)]
    if config is None:
        config = image_config(arch, os_name, layers)
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(config_media_type, config),
        "layers": [descriptor(layer_media_type, l) for l in layers],
    }
    if artifact_type:
        manifest["artifactType"] = artifact_type
    if subject:
        manifest["subject"] = subject
    if annotations:
        manifest["annotations"] = annotations
    return Image(
        config=config,
        layers=layers,
        manifest=json.dumps(manifest, indent=2).encode(),
        config_media_type=config_media_type,
        layer_media_type=layer_media_type,
    )


def small_image(**kw):
    """An image with one 1 KiB layer (make_image's other arguments pass through)."""
    kw.setdefault("n_layers", 1)
    kw.setdefault("layer_size", KiB)
    return make_image(**kw)


def make_artifact(
    artifact_type: str | None,
    subject: dict | None,
    payload: bytes | None = None,
    annotations: dict | None = None,
    config_media_type: str = MT_OCI_EMPTY,
    payload_media_type: str = "application/octet-stream",
) -> Image:
    """An OCI 1.1 artifact manifest: empty config (unless told otherwise),
    one payload layer, optional subject."""
    payload = payload if payload is not None else random_bytes(2 * KiB)
    return make_image(
        config=EMPTY_JSON,
        config_media_type=config_media_type,
        layers=[payload],
        layer_media_type=payload_media_type,
        artifact_type=artifact_type,
        subject=subject,
        annotations=annotations,
    )


def make_index(manifests: list[tuple[Image, dict | None]], annotations: dict | None = None) -> bytes:
    idx: dict = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [],
    }
    for img, platform in manifests:
        d = img.descriptor()
        if platform:
            d["platform"] = platform
        idx["manifests"].append(d)
    if annotations:
        idx["annotations"] = annotations
    return json.dumps(idx, indent=2).encode()


def make_tgz(files: dict[str, bytes]) -> bytes:
    """A real tar.gz archive (deterministic mtime) with the given files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------
# OCI image layouts on disk (for skopeo)
# --------------------------------------------------------------------------


@dataclass
class Layout:
    path: str
    tag: str
    manifest_digest: str  # digest of the top-level manifest (or index)
    media_type: str
    blob_digests: set[str] = field(default_factory=set)  # every blob file incl. manifests
    platform_manifests: dict[str, str] = field(default_factory=dict)  # arch -> digest
    layer_digests: list[str] = field(default_factory=list)
    config_digest: str | None = None


def _write_blob(layout_dir: str, data: bytes) -> str:
    d = sha256_digest(data)
    p = os.path.join(layout_dir, "blobs", "sha256", d.split(":", 1)[1])
    with open(p, "wb") as f:
        f.write(data)
    return d


def _init_layout(layout_dir: str) -> None:
    os.makedirs(os.path.join(layout_dir, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout_dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def _write_index_json(layout_dir: str, desc: dict, tag: str) -> None:
    desc = dict(desc)
    desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(layout_dir, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [desc]}, f)


def write_oci_layout(
    layout_dir: str, tag: str = "latest", n_layers: int = 3, layer_size: int = 128 * KiB, arch: str = "amd64"
) -> Layout:
    """Write an OCI image layout with one image of `n_layers` random layers."""
    _init_layout(layout_dir)
    img = make_image(n_layers=n_layers, layer_size=layer_size, arch=arch)
    blobs = {_write_blob(layout_dir, b) for b in img.blobs}
    md = _write_blob(layout_dir, img.manifest)
    _write_index_json(layout_dir, img.descriptor(), tag)
    return Layout(
        path=layout_dir,
        tag=tag,
        manifest_digest=md,
        media_type=MT_OCI_MANIFEST,
        blob_digests=blobs | {md},
        platform_manifests={arch: md},
        layer_digests=[sha256_digest(l) for l in img.layers],
        config_digest=sha256_digest(img.config),
    )


def write_multiarch_layout(layout_dir: str, tag: str = "latest", layer_size: int = 64 * KiB) -> Layout:
    """Write an OCI layout whose tag points at an index of linux/amd64 and
    linux/arm64 image manifests."""
    _init_layout(layout_dir)
    blobs: set[str] = set()
    entries = []
    per_arch = {}
    for arch in ("amd64", "arm64"):
        img = make_image(n_layers=2, layer_size=layer_size, arch=arch)
        blobs |= {_write_blob(layout_dir, b) for b in img.blobs}
        md = _write_blob(layout_dir, img.manifest)
        blobs.add(md)
        per_arch[arch] = md
        entries.append((img, {"architecture": arch, "os": "linux"}))
    index = make_index(entries)
    idx_digest = _write_blob(layout_dir, index)
    blobs.add(idx_digest)
    _write_index_json(layout_dir, descriptor(MT_OCI_INDEX, index), tag)
    return Layout(
        path=layout_dir,
        tag=tag,
        manifest_digest=idx_digest,
        media_type=MT_OCI_INDEX,
        blob_digests=blobs,
        platform_manifests=per_arch,
    )


def read_layout(layout_dir: str) -> dict:
    """Read back an OCI layout written by skopeo: returns {"index": ...,
    "blobs": {digest: path}, "refs": {tag: descriptor}}; every blob file is
    verified against its name."""
    with open(os.path.join(layout_dir, "index.json")) as f:
        index = json.load(f)
    blobs = {}
    base = os.path.join(layout_dir, "blobs", "sha256")
    for name in os.listdir(base):
        p = os.path.join(base, name)
        actual = file_digest(p)
        assert actual == "sha256:" + name, f"blob file {p} has content digest {actual}"
        blobs[actual] = p
    refs = {}
    for d in index.get("manifests", []):
        ref = (d.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if ref:
            refs[ref] = d
    return {"index": index, "blobs": blobs, "refs": refs}


def read_blob(layout_dir: str, digest: str) -> bytes:
    with open(os.path.join(layout_dir, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


# --------------------------------------------------------------------------
# Subprocesses
# --------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = 120, check: bool = True, text: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on failure raise with all output."""
    p = subprocess.run(cmd, capture_output=True, text=text, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(
            f"command failed with exit code {p.returncode}: {' '.join(cmd)}\n"
            f"--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"
        )
    return p


def skopeo(*args: str, timeout: float = 120, check: bool = True, text: bool = True) -> subprocess.CompletedProcess:
    # --insecure-policy: no dependency on the host's /etc/containers/policy.json.
    return run(["skopeo", "--insecure-policy", *args], timeout=timeout, check=check, text=text)


# --------------------------------------------------------------------------
# HTTP helpers (OCI distribution API)
# --------------------------------------------------------------------------


def oci_errors(resp: requests.Response) -> list[dict]:
    try:
        body = resp.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    errs = body.get("errors")
    return errs if isinstance(errs, list) else []


def oci_error_codes(resp: requests.Response) -> list[str]:
    return [e.get("code") for e in oci_errors(resp) if isinstance(e, dict)]


def describe(resp: requests.Response) -> str:
    body = resp.content[:2000]
    return (
        f"{resp.request.method} {resp.request.url} -> {resp.status_code}\n"
        f"headers: {dict(resp.headers)}\nbody: {body!r}"
    )


def assert_status(resp: requests.Response, *statuses: int) -> None:
    assert resp.status_code in statuses, f"expected status {statuses}, got:\n{describe(resp)}"


def assert_oci_error(resp: requests.Response, statuses, code: str) -> dict:
    """Assert an OCI error response with the given status(es) and error code;
    returns the matching error object."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    assert_status(resp, *statuses)
    errs = oci_errors(resp)
    matching = [e for e in errs if isinstance(e, dict) and e.get("code") == code]
    assert matching, f"expected OCI error code {code}, got:\n{describe(resp)}"
    err = matching[0]
    assert isinstance(err.get("message", ""), str)
    return err


def with_query(url: str, **params: str) -> str:
    from urllib.parse import urlencode

    sep = "&" if "?" in url else "?"
    return url + sep + urlencode(params)


# --------------------------------------------------------------------------
# Credentials and tokens (docs/identity.md)
# --------------------------------------------------------------------------

Creds = tuple[str, str]  # (access key id, secret)


def read_bootstrap_creds(data_dir) -> Creds:
    """The admin key a server wrote to <data-dir>/bootstrap-credentials.json."""
    with open(os.path.join(str(data_dir), BOOTSTRAP_FILE)) as f:
        body = json.load(f)
    return body["access_key"], body["secret_key"]


def basic_header(creds: Creds) -> dict:
    raw = f"{creds[0]}:{creds[1]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_decode(token: str) -> tuple[dict, dict]:
    """(header, payload) of a JWT, without verifying the signature."""
    parts = token.split(".")
    assert len(parts) == 3, f"not a JWS compact token: {token!r}"
    return json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))


_AUTH_TOKEN = r"[A-Za-z][A-Za-z0-9_.-]*"
_CHALLENGE_PARAM_RE = re.compile(r'\s*(' + _AUTH_TOKEN + r')="([^"]*)"\s*(?:,|$)')
_CHALLENGE_SCHEME_RE = re.compile(r"\s*(" + _AUTH_TOKEN + r")(?:\s+|$)")


def parse_challenges(value: str | None) -> dict[str, dict]:
    """Parse a WWW-Authenticate value (RFC 7235: one or more challenges,
    `Scheme k="v",k="v", Scheme2 k="v"`) strictly into {scheme: {k: v}};
    every byte of the header must belong to a scheme or a parameter."""
    assert value, "no WWW-Authenticate header"
    out: dict[str, dict] = {}
    current = None
    pos = 0
    while pos < len(value):
        m = _CHALLENGE_PARAM_RE.match(value, pos)
        if m and current is not None:
            assert m.group(1) not in out[current], f"parameter {m.group(1)} twice in {value!r}"
            out[current][m.group(1)] = m.group(2)
            pos = m.end()
            continue
        m = _CHALLENGE_SCHEME_RE.match(value, pos)
        assert m and m.end() > pos, f"malformed WWW-Authenticate {value!r} at {value[pos:]!r}"
        current = m.group(1)
        assert current not in out, f"challenge {current} twice in {value!r}"
        out[current] = {}
        pos = m.end()
    return out


def parse_challenge(value: str | None, also_allowed: tuple[str, ...] = ()) -> tuple[str, dict]:
    """The Bearer challenge of a WWW-Authenticate value, as ("Bearer",
    params); any other challenge in the header fails unless its scheme is in
    `also_allowed`."""
    challenges = parse_challenges(value)
    assert "Bearer" in challenges, f"no Bearer challenge in {value!r}"
    extra = set(challenges) - {"Bearer", *also_allowed}
    assert not extra, f"unexpected challenges {sorted(extra)} in {value!r}"
    return "Bearer", challenges["Bearer"]


PROBLEM_JSON = "application/problem+json"


def assert_problem(resp: requests.Response, status: int, code: str | None = None) -> dict:
    """An /api/v1 problem+json answer with the given status (and code)."""
    assert_status(resp, status)
    assert resp.headers.get("Content-Type", "").startswith(PROBLEM_JSON), describe(resp)
    body = resp.json()
    if code is not None:
        assert body.get("code") == code, f"expected problem code {code}:\n{describe(resp)}"
    return body


class Registry:
    """Thin raw-HTTP client for one Berth endpoint (plain or TLS).

    creds=(access key, secret) sends Basic auth on every request, token=...
    sends `Authorization: Bearer`; neither makes an anonymous client."""

    def __init__(self, base_url: str, verify=True, creds: Creds | None = None, token: str | None = None):
        self.base = base_url.rstrip("/")
        self.verify = verify
        self.creds = creds
        self.token = token
        self.session = requests.Session()
        # Never pick up proxies or CA bundles from the environment: all
        # traffic is loopback and TLS is verified against the server's cert.
        # (trust_env=False also keeps ~/.netrc out of the Authorization header.)
        self.session.trust_env = False
        self.session.verify = verify
        self.session.headers.update(self.auth_headers())

    def auth_headers(self) -> dict:
        """The Authorization header this client sends (for raw sockets, curl)."""
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        if self.creds is not None:
            return basic_header(self.creds)
        return {}

    def with_creds(self, creds: Creds | None) -> "Registry":
        return Registry(self.base, verify=self.verify, creds=creds)

    def with_token(self, token: str) -> "Registry":
        return Registry(self.base, verify=self.verify, token=token)

    def anonymous(self) -> "Registry":
        return Registry(self.base, verify=self.verify)

    def fetch_token(self, *scopes: str, creds: Creds | None | bool = True, service: str = "berth") -> requests.Response:
        """GET /auth/token with repeated `scope`; creds=True means this
        client's own key, None/False no credentials."""
        if creds is True:
            creds = self.creds
        params = [("service", service)] + [("scope", s) for s in scopes]
        headers = basic_header(creds) if creds else {}
        with requests.Session() as s:
            s.trust_env = False
            return s.get(self.url("/auth/token"), params=params, headers=headers, timeout=HTTP_TIMEOUT,
                         verify=self.verify, allow_redirects=False)

    def token_for(self, *scopes: str, creds: Creds | None | bool = True) -> str:
        r = self.fetch_token(*scopes, creds=creds)
        assert_status(r, 200)
        return r.json()["token"]

    # -- generic ---------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path_or_url: str, **kw) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else self.url(path_or_url)
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw.setdefault("allow_redirects", False)
        kw.setdefault("verify", self.verify)
        return self.session.request(method, url, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def abs_location(self, resp: requests.Response) -> str:
        loc = resp.headers.get("Location")
        assert loc, f"response has no Location header:\n{describe(resp)}"
        return urljoin(self.base + "/", loc)

    # -- blobs -----------------------------------------------------------
    def start_upload(self, name: str, **params) -> requests.Response:
        path = f"/v2/{name}/blobs/uploads/"
        if params:
            path = with_query(path, **params)
        return self.post(path, headers={"Content-Length": "0"})

    def upload_blob(self, name: str, data: bytes) -> str:
        """POST + PUT monolithic upload; asserts success; returns digest."""
        digest = sha256_digest(data)
        r = self.start_upload(name)
        assert_status(r, 202)
        loc = self.abs_location(r)
        r = self.put(
            with_query(loc, digest=digest),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert_status(r, 201)
        assert r.headers.get("Docker-Content-Digest") == digest, describe(r)
        return digest

    def upload_blobs(self, name: str, blobs: Iterable[bytes]) -> None:
        for b in blobs:
            self.upload_blob(name, b)

    def get_blob(self, name: str, digest: str, **kw) -> requests.Response:
        return self.get(f"/v2/{name}/blobs/{digest}", **kw)

    def head_blob(self, name: str, digest: str) -> requests.Response:
        return self.head(f"/v2/{name}/blobs/{digest}")

    # -- manifests -------------------------------------------------------
    def put_manifest(self, name: str, ref: str, body: bytes, media_type: str = MT_OCI_MANIFEST) -> requests.Response:
        return self.put(f"/v2/{name}/manifests/{ref}", data=body, headers={"Content-Type": media_type})

    def get_manifest(self, name: str, ref: str, method: str = "GET") -> requests.Response:
        return self.request(method, f"/v2/{name}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})

    def push_image(self, name: str, img: Image, ref: str | None = None) -> requests.Response:
        """Upload all blobs, then PUT the manifest by `ref` (tag) or digest.
        Asserts 201 and the digest header; returns the PUT response."""
        for b in img.blobs:
            if self.head_blob(name, sha256_digest(b)).status_code != 200:
                self.upload_blob(name, b)
        r = self.put_manifest(name, ref or img.digest, img.manifest, img.media_type)
        assert_status(r, 201)
        assert r.headers.get("Docker-Content-Digest") == img.digest, describe(r)
        return r

    # -- listing ---------------------------------------------------------
    def paginate(self, first_path: str, key: str) -> tuple[list[str], int]:
        """Follow Link rel="next" headers; returns (all items, page count)."""
        items: list[str] = []
        path = first_path
        pages = 0
        while path:
            r = self.get(path)
            assert_status(r, 200)
            pages += 1
            assert pages < 1000, "pagination does not terminate"
            items.extend(r.json().get(key) or [])
            link = r.headers.get("Link")
            path = parse_next_link(link) if link else None
            if path and not path.startswith("/"):
                sp = urlsplit(path)
                path = sp.path + (("?" + sp.query) if sp.query else "")
        return items, pages

    # -- Berth management API ---------------------------------------------
    def create_registry(self, name: str) -> requests.Response:
        return self.post("/api/v1/registries", json={"name": name})

    def system_usage(self) -> dict:
        r = self.get("/api/v1/system/usage")
        assert_status(r, 200)
        return r.json()

    def registry_info(self, name: str) -> dict:
        r = self.get(f"/api/v1/registries/{name}")
        assert_status(r, 200)
        return r.json()


def create_registry(client: Registry, prefix: str = "r") -> str:
    """Create a uniquely named registry through the API; returns its name."""
    name = unique(prefix)
    r = client.create_registry(name)
    assert_status(r, 201)
    return name


_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def parse_next_link(link: str) -> str | None:
    m = _LINK_RE.search(link)
    return m.group(1) if m else None


# --------------------------------------------------------------------------
# Raw sockets (for partial uploads / disconnects)
# --------------------------------------------------------------------------


def split_host(host: str) -> tuple[str, int]:
    h, p = host.rsplit(":", 1)
    return h, int(p)


def partial_request(host: str, method: str, path: str, headers: dict, body_part: bytes, linger: float = 0.2) -> None:
    """Open a raw TCP connection, send the request headers (with whatever
    Content-Length the caller gave) and only `body_part`, then close the
    connection abruptly without waiting for a response."""
    h, p = split_host(host)
    s = socket.create_connection((h, p), timeout=10)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if body_part:
            s.sendall(body_part)
        time.sleep(linger)
    finally:
        s.close()


def open_partial_request(host: str, method: str, path: str, headers: dict, body_part: bytes) -> socket.socket:
    """Like partial_request, but leaves the connection open and returns the
    socket so the caller can do something (e.g. kill the server) while the
    request is still in flight."""
    h, p = split_host(host)
    s = socket.create_connection((h, p), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    if body_part:
        s.sendall(body_part)
    return s


def path_of(url: str) -> str:
    sp = urlsplit(url)
    return sp.path + (("?" + sp.query) if sp.query else "")


def wait_until(pred, timeout: float, interval: float = 0.25, message: str = "condition"):
    """Poll `pred` until it returns a truthy value; returns that value or
    raises AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


def copytree(src: str, dst: str) -> None:
    shutil.copytree(src, dst)


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


# --------------------------------------------------------------------------
# Users, keys and role bindings through the admin API (docs/identity.md)
# --------------------------------------------------------------------------

AK_RE = re.compile(r"^AK[A-Z2-7]{20}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9]{40}$")


def api_create_user(admin: Registry, name: str | None = None) -> str:
    name = name or unique("u")
    r = admin.post("/api/v1/users", json={"name": name})
    assert_status(r, 201)
    return name


def api_create_key(admin: Registry, user: str) -> Creds:
    r = admin.post(f"/api/v1/users/{user}/access-keys")
    assert_status(r, 201)
    body = r.json()
    return body["access_key"], body["secret_key"]


def api_bind(admin: Registry, user: str, role: str, registry: str | None = None) -> dict:
    body = {"role": role}
    if registry is not None:
        body["registry"] = registry
    r = admin.post(f"/api/v1/users/{user}/roles", json=body)
    assert_status(r, 201)
    return r.json()


def new_principal(admin: Registry, role: str | None, registry: str | None = None, prefix: str = "u") -> tuple[str, Creds]:
    """A new user with one key and (unless role is None) one binding."""
    user = api_create_user(admin, unique(prefix))
    if role:
        api_bind(admin, user, role, registry)
    return user, api_create_key(admin, user)


# The principals of the registry-scoped permission tests.
VIEWER, UPLOADER, RADMIN, OADMIN, ANON = "viewer", "uploader", "radmin", "oadmin", "anonymous"
READERS = (VIEWER, UPLOADER, RADMIN)


def scoped_clients(server, admin: Registry, reg: str, other: str) -> dict:
    """A client per principal: viewer, uploader and admin of `reg`, admin of
    `other`, and anonymous."""
    clients = {}
    for principal, role, scope in ((VIEWER, "viewer", reg), (UPLOADER, "uploader", reg), (RADMIN, "admin", reg), (OADMIN, "admin", other)):
        _, creds = new_principal(admin, role, scope, prefix=principal[:2])
        clients[principal] = server.client(creds=creds)
    clients[ANON] = server.anon_client()
    return clients


def assert_refused(r, principal: str) -> None:
    """401 for the anonymous caller, 403 for an authenticated one."""
    if principal == ANON:
        assert_problem(r, 401, "UNAUTHORIZED")
    else:
        assert_problem(r, 403, "FORBIDDEN")


def wrong_secret(creds: Creds) -> Creds:
    """The same key id with a well-formed but wrong secret."""
    secret = creds[1]
    flipped = ("b" if secret[0] == "a" else "a") + secret[1:]
    return creds[0], flipped


def rfc3339(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> float:
    from datetime import datetime

    assert isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------
# Images, artifacts and tags through the admin API (docs/admin-api.md)
# --------------------------------------------------------------------------


def api_image_path(registry: str, image: str | None = None, rest: str = "") -> str:
    """`/api/v1/registries/{registry}/images[/{image}]{rest}`: the image name
    is one path segment, every reserved character percent-encoded
    (`team/app` -> `team%2Fapp`)."""
    from urllib.parse import quote

    path = f"/api/v1/registries/{registry}/images"
    if image is not None:
        path += "/" + quote(image, safe="")
    return path + rest


def api_list_all(client: Registry, path: str, params: dict | None = None, limit: int | None = None) -> tuple[list[dict], int]:
    """Every item of an /api/v1 listing, following `next_cursor` until it is
    null; returns (items, pages). Asserts the `{"items", "next_cursor"}`
    shape, that no page exceeds `limit` and that a page announcing more is
    not empty."""
    items: list[dict] = []
    cursor = None
    for pages in range(1, 10_000):
        q = dict(params or {})
        if limit is not None:
            q["limit"] = str(limit)
        if cursor is not None:
            q["cursor"] = cursor
        r = client.get(path, params=q)
        assert_status(r, 200)
        body = r.json()
        assert isinstance(body, dict) and "items" in body and "next_cursor" in body, describe(r)
        assert isinstance(body["items"], list), describe(r)
        if limit is not None:
            assert len(body["items"]) <= limit, describe(r)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert isinstance(cursor, str) and cursor, describe(r)
        assert body["items"], f"a page with a next_cursor must not be empty:\n{describe(r)}"
    raise AssertionError(f"listing {path} does not terminate")


def api_get_json(client: Registry, path: str, **params) -> dict:
    r = client.get(path, params=params or None)
    assert_status(r, 200)
    return r.json()


def push_tags(client: Registry, name: str, img: Image, *tags: str) -> None:
    """Push `img` to `name` (blobs and manifest), under each of `tags` (or by
    digest only when no tag is given)."""
    client.push_image(name, img, tags[0] if tags else None)
    for t in tags[1:]:
        r = client.put_manifest(name, t, img.manifest, img.media_type)
        assert_status(r, 201)


def push_index(client: Registry, name: str, children: list[tuple[Image, dict]], tag: str | None = None) -> bytes:
    """Push each child image by digest, then the index over them (by `tag`,
    or by digest); returns the index bytes."""
    for img, _ in children:
        client.push_image(name, img)
    index = make_index(children)
    r = client.put_manifest(name, tag or sha256_digest(index), index, MT_OCI_INDEX)
    assert_status(r, 201)
    return index


# --------------------------------------------------------------------------
# Lifecycle: protection and cleanup policies, cleanup runs, old tags
# (docs/lifecycle.md)
# --------------------------------------------------------------------------


def api_registry_path(registry: str, rest: str = "") -> str:
    """`/api/v1/registries/{registry}{rest}`."""
    return f"/api/v1/registries/{registry}{rest}"


def create_protection_policy(
    client: Registry, registry: str, image_pattern: str, tag_pattern: str | None = None, enabled: bool | None = None
) -> dict:
    """POST a protection policy (omitted fields take their defaults);
    asserts 201 and returns the policy."""
    body: dict = {"image_pattern": image_pattern}
    if tag_pattern is not None:
        body["tag_pattern"] = tag_pattern
    if enabled is not None:
        body["enabled"] = enabled
    r = client.post(api_registry_path(registry, "/protection-policies"), json=body)
    assert_status(r, 201)
    return r.json()


def create_cleanup_policy(
    client: Registry,
    registry: str,
    image_pattern: str,
    rule: str,
    value: int | None = None,
    tag_pattern: str | None = None,
    enabled: bool | None = None,
) -> dict:
    """POST a cleanup policy (`value` only sent when given); asserts 201 and
    returns the policy."""
    body: dict = {"image_pattern": image_pattern, "rule": rule}
    if value is not None:
        body["value"] = value
    if tag_pattern is not None:
        body["tag_pattern"] = tag_pattern
    if enabled is not None:
        body["enabled"] = enabled
    r = client.post(api_registry_path(registry, "/cleanup-policies"), json=body)
    assert_status(r, 201)
    return r.json()


def start_cleanup_run(client: Registry, registry: str, dry_run: bool = False) -> dict:
    """POST /cleanup/runs; asserts 202 and returns the Run."""
    r = client.post(api_registry_path(registry, "/cleanup/runs"), json={"dry_run": dry_run})
    assert_status(r, 202)
    return r.json()


def wait_cleanup_run(client: Registry, registry: str, run_id, timeout: float = 30) -> dict:
    """Poll GET /cleanup/runs/{id} until its status is no longer `running`;
    returns the finished Run."""

    def finished():
        r = client.get(api_registry_path(registry, f"/cleanup/runs/{run_id}"))
        assert_status(r, 200)
        body = r.json()
        return body if body.get("status") != "running" else None

    return wait_until(finished, timeout, interval=0.1, message=f"cleanup run {run_id} of {registry} to finish")


def run_cleanup(client: Registry, registry: str, dry_run: bool = False, timeout: float = 30) -> dict:
    """Start a cleanup run, wait for it, assert it succeeded; returns the Run."""
    run = start_cleanup_run(client, registry, dry_run)
    done = wait_cleanup_run(client, registry, run["id"], timeout)
    assert done["status"] == "succeeded" and done.get("error") is None, done
    return done


def cleanup_run_details(client: Registry, registry: str, run_id, limit: int | None = None) -> list[dict]:
    """Every Detail of a cleanup run (all pages)."""
    items, _ = api_list_all(client, api_registry_path(registry, f"/cleanup/runs/{run_id}/details"), limit=limit)
    return items


def list_old_tags(client: Registry, registry: str, before: str, limit: int | None = None, **params) -> list[dict]:
    """Every item of GET /old-tags?before=... (all pages)."""
    q = {"before": before, **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}}
    items, _ = api_list_all(client, api_registry_path(registry, "/old-tags"), q, limit=limit)
    return items


def push_series(client: Registry, name: str, tags: list[str], gap: float = 0.02, **image_kw) -> list[Image]:
    """Push one small image of distinct content per tag, in order, `gap`
    seconds apart (so that their push times differ); returns the images."""
    image_kw.setdefault("n_layers", 1)
    image_kw.setdefault("layer_size", KiB)
    images = []
    for i, tag in enumerate(tags):
        if i:
            time.sleep(gap)
        img = make_image(**image_kw)
        push_tags(client, name, img, tag)
        images.append(img)
    return images


# --------------------------------------------------------------------------
# Lifecycle: garbage collection, schedules and the event log
# (docs/lifecycle.md)
# --------------------------------------------------------------------------

GC_RUNS = "/api/v1/system/gc/runs"
GC_SCHEDULE = "/api/v1/system/gc/schedule"
EVENTS = "/api/v1/events"


def gc_args(grace: int, after_delete: int = 0, schedule: str = "off") -> list[str]:
    """Server flags for the GC settings (`--gc-grace`, `--gc-after-delete`,
    `--gc-schedule`); by default no scheduled and no after-delete runs, so
    that only the runs a test starts happen."""
    return ["--gc-grace", str(grace), "--gc-after-delete", str(after_delete), "--gc-schedule", schedule]


def start_gc_run(client: Registry, timeout: float = 30) -> dict:
    """POST /system/gc/runs; while another GC runs (409 `JOB_RUNNING`) try
    again until `timeout`. Asserts 202 and returns the Run."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.post(GC_RUNS)
        if r.status_code != 409 or time.monotonic() > deadline:
            break
        assert_problem(r, 409, "JOB_RUNNING")
        time.sleep(0.1)
    assert_status(r, 202)
    return r.json()


def wait_gc_run(client: Registry, run_id, timeout: float = 60) -> dict:
    """Poll GET /system/gc/runs/{id} until its status is no longer
    `running`; returns the finished Run."""

    def finished():
        r = client.get(f"{GC_RUNS}/{run_id}")
        assert_status(r, 200)
        body = r.json()
        return body if body.get("status") != "running" else None

    return wait_until(finished, timeout, interval=0.1, message=f"GC run {run_id} to finish")


def run_gc(client: Registry, timeout: float = 60) -> dict:
    """Start a GC run, wait for it, assert it succeeded; returns the Run."""
    run = start_gc_run(client, timeout)
    done = wait_gc_run(client, run["id"], timeout)
    assert done["status"] == "succeeded" and done.get("error") is None, done
    return done


def gc_run_details(client: Registry, run_id, limit: int | None = None) -> list[dict]:
    """Every Detail of a GC run (all pages)."""
    items, _ = api_list_all(client, f"{GC_RUNS}/{run_id}/details", limit=limit)
    return items


def list_events(client: Registry, limit: int = 1000, after: str | None = None, **filters) -> list[dict]:
    """Every event of GET /api/v1/events visible to `client` (with the given
    `registry`/`type` filters), following `next_cursor` as `after=` until it
    is null. Asserts the page shape and that `next_cursor` is the id of the
    page's last item."""
    items: list[dict] = []
    for _ in range(100_000):
        params = {**filters, "limit": str(limit)}
        if after is not None:
            params["after"] = after
        r = client.get(EVENTS, params=params)
        assert_status(r, 200)
        body = r.json()
        assert isinstance(body, dict) and isinstance(body.get("items"), list) and "next_cursor" in body, describe(r)
        page = body["items"]
        assert len(page) <= limit, describe(r)
        items += page
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert page and cursor == page[-1]["id"], f"next_cursor must be the id of the page's last item:\n{describe(r)}"
        after = cursor
    raise AssertionError("the event listing does not terminate")


def event_run_id(detail) -> str | None:
    """The run id a `gc.run`/`cleanup.run` event's `detail` holds (the
    contract says "the run id" without naming the key: `run_id`, `id` or a
    nested `run` object are accepted)."""
    if not isinstance(detail, dict):
        return None
    for key in ("run_id", "id"):
        if detail.get(key) is not None:
            return str(detail[key])
    run = detail.get("run")
    if isinstance(run, dict) and run.get("id") is not None:
        return str(run["id"])
    if isinstance(run, (str, int)):
        return str(run)
    return None


def registry_artifacts(client: Registry, registry: str) -> list[tuple[str, dict]]:
    """(image name inside the registry, artifact item) for every artifact of
    every image of the registry, through the admin API (not pulls)."""
    out = []
    images, _ = api_list_all(client, api_image_path(registry))
    for img in images:
        arts, _ = api_list_all(client, api_image_path(registry, img["name"], "/artifacts"))
        out += [(img["name"], a) for a in arts]
    return out


def referenced_blobs(client: Registry, registry: str) -> dict[str, int]:
    """{digest: size} of the distinct blobs (configs and layers) referenced
    by the manifests the registry holds now, read through the admin API."""
    blobs: dict[str, int] = {}
    for image, art in registry_artifacts(client, registry):
        detail = api_get_json(client, api_image_path(registry, image, f"/artifacts/{art['digest']}"))
        manifest = detail["manifest"]
        for d in ([manifest["config"]] if manifest.get("config") else []) + list(manifest.get("layers") or []):
            blobs[d["digest"]] = d["size"]
    return blobs


# --------------------------------------------------------------------------
# A server whose wall clock the test steps (libfaketime)
# --------------------------------------------------------------------------

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"  # Debian's libfaketime (install-deps --test)


class SteppedClock:
    """Runs a server under libfaketime with an offset the test changes
    (`step`); its monotonic clock is left alone. Pass `env` and `launcher` to
    make_server. Skips the test when libfaketime is not installed."""

    def __init__(self, tmp_path):
        if not os.path.exists(FAKETIME_LIB):
            pytest.skip("libfaketime is not installed (apt-get install faketime; Tests/run does)")
        self.offset = tmp_path / "faketime"
        self.offset.write_text("+0\n")
        self.env = {
            "LD_PRELOAD": FAKETIME_LIB,
            "FAKETIME_TIMESTAMP_FILE": str(self.offset),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        # Through `env`: libfaketime's constructor sets FAKETIME_SHARED when it is
        # not set yet, and that setenv moves `environ` off the stack, where the
        # Swift runtime looks for argv; berth would start with no arguments. `env`,
        # preloaded too, sets it before it execs berth (same pid, same shm).
        self.launcher = ["/usr/bin/env"]

    def step(self, client: "Registry", offset: str) -> None:
        """Moves the server's wall clock to `offset` ("+2h") from the real one,
        and waits until the server shows it (its Date header, refreshed every second)."""
        self.offset.write_text(offset + "\n")
        hours = float(offset.strip("+h")) if offset.endswith("h") else 0
        wait_until(
            lambda: parsedate_to_datetime(client.get("/v2/").headers["Date"]).timestamp() > time.time() + hours * 3600 - 60,
            timeout=3, interval=0.1, message="the server's wall clock did not jump: is libfaketime working?")
