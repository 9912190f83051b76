"""End-to-end tests with Docker (Debian's docker.io: dockerd does the pushes
and pulls, the CLI the rest): `docker login` with an access key over TLS
and over plain HTTP, push of a two-layer
image and a pull into a daemon that no longer has it, a push to a second
registry that mounts the layers instead of sending them, a manifest list
made with `docker manifest` and pulled for one platform, a viewer's push
refused, a wrong secret, and the errors a pull of nothing shows.

The test runs a dockerd of its own, as root, with vfs storage, no bridge
and no iptables, under a directory of its own. dockerd takes any registry on
127.0.0.0/8 as insecure: it speaks TLS to the TLS listener but checks no
certificate, so these tests cover the TLS path, not certificate trust
(skopeo's and podman's tests do, with --cert-dir)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from helpers import assert_status, create_registry, new_principal, random_bytes, unique

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

# The daemon's own client; a newer CLI elsewhere on PATH would also do.
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")

pytestmark = [
    pytest.mark.skipif(shutil.which("dockerd") is None or DOCKER is None, reason="docker.io not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="dockerd is run as root"),
]


class Dockerd:
    """A dockerd of the test's own: data, state and socket under one directory."""

    def __init__(self) -> None:
        # containerd's socket lives under the exec root: keep its path short.
        self.root = Path(tempfile.mkdtemp(prefix="berth-docker-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.log = self.root / "dockerd.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.root / "dockerd.pid"), "-H", f"unix://{self.socket}",
                 "--bridge=none", "--iptables=false", "--ip6tables=false", "--storage-driver=vfs"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run([DOCKER, "-H", f"unix://{self.socket}", "version"], capture_output=True)
            if out.returncode == 0:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"dockerd did not start:\n{self.log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class Docker:
    """The docker CLI, talking to the test's dockerd, with a config directory
    (credentials) of its own."""

    def __init__(self, daemon: Dockerd, home: Path):
        self.daemon = daemon
        self.config = home / "docker-config"
        self.config.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None, timeout: float = 180):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.config.parent),
               "DOCKER_CONFIG": str(self.config), "DOCKER_HOST": f"unix://{self.daemon.socket}"}
        cmd = [DOCKER, *args]
        out = subprocess.run(cmd, env=env, input=stdin, capture_output=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {out.returncode}:\n"
                                 f"{out.stdout.decode(errors='replace')}{out.stderr.decode(errors='replace')}")
        return out

    def login(self, host: str, creds, check: bool = True):
        return self.run("login", "--username", creds[0], "--password-stdin", host, stdin=creds[1].encode(), check=check)

    def auths(self) -> dict:
        path = self.config / "config.json"
        return json.loads(path.read_text()).get("auths", {}) if path.exists() else {}

    def load(self, tag: str, layers: list[dict[str, bytes]], arch: str = "amd64") -> str:
        """Loads an image of `layers` (each a set of files) as `tag`; returns its id (the config's digest)."""
        tars = [_tar(files) for files in layers]
        config = json.dumps({
            "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["/hello"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(t) for t in tars]},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"berth test layer {i}"} for i in range(len(tars))],
        }).encode()
        config_name = _digest(config).split(":", 1)[1] + ".json"
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            members = {config_name: config}
            for i, t in enumerate(tars):
                members[f"layer{i}/layer.tar"] = t
            members["manifest.json"] = json.dumps(
                [{"Config": config_name, "RepoTags": [tag], "Layers": [f"layer{i}/layer.tar" for i in range(len(tars))]}]).encode()
            for name, data in members.items():
                _add(tar, name, data)
        self.run("load", stdin=archive.getvalue())
        return _digest(config)

    def image(self, ref: str) -> dict | None:
        out = self.run("image", "inspect", ref, check=False)
        return json.loads(out.stdout)[0] if out.returncode == 0 else None

    def layer_files(self, ref: str) -> dict[str, bytes]:
        """The files of `ref`'s layers, read from `docker save`'s archive."""
        saved = tarfile.open(fileobj=io.BytesIO(self.run("save", ref).stdout))
        manifest = json.loads(saved.extractfile("manifest.json").read())
        files: dict[str, bytes] = {}
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(saved.extractfile(layer).read())) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        files[member.name] = tar.extractfile(member).read()
        return files

    def forget(self, image_id: str) -> None:
        """Removes the image and every tag of it from the daemon."""
        self.run("rmi", "--force", image_id)
        assert self.image(image_id) is None


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def dockerd():
    daemon = Dockerd()
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture()
def dockers(dockerd, tmp_path):
    """Makes docker clients, each with credentials of its own."""
    return lambda name: Docker(dockerd, tmp_path / name)


@pytest.fixture()
def docker(dockers) -> Docker:
    return dockers("docker")


@pytest.fixture(scope="module")
def dreg(http) -> str:
    return create_registry(http, "dk")


def test_login_push_and_pull_into_empty_storage_over_tls(server, http, dreg, docker):
    layers = [{"hello": b"#!/bin/sh\necho hello from berth\n"}, {"data/blob.bin": random_bytes(3 << 20)}]
    image_id = docker.load("berth-test/app:src", layers)
    out = docker.login(server.tls_host, server.admin_creds)
    assert b"Login Succeeded" in out.stdout, out
    assert server.tls_host in docker.auths()

    ref = f"{server.tls_host}/{dreg}/app/web:1.0"
    docker.run("tag", "berth-test/app:src", ref)
    since = server.log_size()
    docker.run("push", ref)
    log = server.log_text(since)
    # dockerd took the Bearer challenge and asked /auth/token with the key.
    assert '"route":"auth.token","status":200' in log, server.log_tail(since)

    r = http.get_manifest(f"{dreg}/app/web", "1.0")
    assert_status(r, 200)
    assert r.headers["Content-Type"] == MT_DOCKER_MANIFEST, r.headers
    manifest = r.json()
    # The image id is the config's digest; the layers went up gzipped.
    assert manifest["config"]["digest"] == image_id, manifest
    assert len(manifest["layers"]) == 2, manifest
    for layer in manifest["layers"]:
        assert_status(http.head(f"/v2/{dreg}/app/web/blobs/{layer['digest']}"), 200)

    # The daemon forgets the image, then pulls it back from Berth.
    docker.forget(image_id)
    docker.run("pull", ref)
    pulled = docker.image(ref)
    assert pulled["Id"] == image_id, pulled
    assert pulled["RepoDigests"] == [f"{server.tls_host}/{dreg}/app/web@{r.headers['Docker-Content-Digest']}"], pulled
    files = docker.layer_files(ref)
    assert files == {name: data for layer in layers for name, data in layer.items()}

    # By digest too.
    docker.forget(image_id)
    docker.run("pull", f"{server.tls_host}/{dreg}/app/web@{r.headers['Docker-Content-Digest']}")
    assert docker.image(image_id) is not None


def test_a_push_to_a_second_registry_mounts_the_layers(server, http, dreg, docker):
    other = create_registry(http, "dkm")
    layer = {"big.bin": random_bytes(2 << 20)}
    image_id = docker.load("berth-test/mount:src", [layer])
    docker.login(server.tls_host, server.admin_creds)
    first, second = f"{server.tls_host}/{dreg}/mount:1", f"{server.tls_host}/{other}/mount:1"
    docker.run("tag", "berth-test/mount:src", first)
    docker.run("tag", "berth-test/mount:src", second)
    docker.run("push", first)

    since = server.log_size()
    out = docker.run("push", second)
    assert b"Mounted from" in out.stdout, out.stdout
    log = server.log_text(since)
    # The layer came across by a mount (a POST answered 201), not in a PATCH.
    mounts = [line for line in log.splitlines()
              if '"method":"POST"' in line and '"route":"v2.uploads","status":201' in line]
    assert len(mounts) == 1, server.log_tail(since)
    layer_digest = http.get_manifest(f"{other}/mount", "1").json()["layers"][0]["digest"]
    patches = [line for line in log.splitlines() if '"method":"PATCH"' in line]
    # Only the config (a few hundred bytes) may have been uploaded; the 2 MiB layer was mounted.
    assert len(patches) <= 1, patches
    assert_status(http.head(f"/v2/{other}/mount/blobs/{layer_digest}"), 200)

    docker.forget(image_id)
    docker.run("pull", second)
    assert docker.layer_files(second) == layer


def test_manifest_list_with_docker_manifest_and_a_platform_pull(server, http, dreg, docker):
    """`docker manifest` (the CLI's own registry client, over plain HTTP with
    --insecure) builds a list of two images that dockerd pushed; a pull for
    one platform gets that one."""
    docker.login(server.host, server.admin_creds)
    ids = {}
    for arch in ("amd64", "arm64"):
        ids[arch] = docker.load(f"berth-test/multi:{arch}", [{"arch": f"{arch}\n".encode()}], arch=arch)
        docker.run("tag", f"berth-test/multi:{arch}", f"{server.host}/{dreg}/multi:{arch}")
        docker.run("push", f"{server.host}/{dreg}/multi:{arch}")
    ref = f"{server.host}/{dreg}/multi:1.0"
    docker.run("manifest", "create", "--insecure", ref, *(f"{server.host}/{dreg}/multi:{a}" for a in ids))
    docker.run("manifest", "push", "--insecure", "--purge", ref)

    r = http.get_manifest(f"{dreg}/multi", "1.0")
    assert_status(r, 200)
    assert r.headers["Content-Type"] == MT_DOCKER_LIST, r.headers
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in r.json()["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}, r.json()
    inspected = json.loads(docker.run("manifest", "inspect", "--insecure", ref).stdout)
    assert inspected["mediaType"] == MT_DOCKER_LIST, inspected

    for image_id in ids.values():
        docker.forget(image_id)
    docker.run("pull", "--platform", "linux/arm64", ref)
    assert docker.image(ref)["Id"] == ids["arm64"]
    assert docker.layer_files(ref) == {"arch": b"arm64\n"}


def test_a_viewer_pulls_but_cannot_push(server, http, dreg, docker, dockers):
    image_id = docker.load("berth-test/view:src", [{"f": b"viewer\n"}])
    docker.login(server.tls_host, server.admin_creds)
    ref = f"{server.tls_host}/{dreg}/view:1"
    docker.run("tag", "berth-test/view:src", ref)
    docker.run("push", ref)
    docker.forget(image_id)

    _, creds = new_principal(http, "viewer", registry=dreg, prefix="dv")
    viewer = dockers("viewer")
    viewer.login(server.tls_host, creds)
    viewer.run("pull", ref)
    assert viewer.image(ref)["Id"] == image_id
    viewer.run("tag", ref, f"{server.tls_host}/{dreg}/view:2")
    out = viewer.run("push", f"{server.tls_host}/{dreg}/view:2", check=False)
    assert out.returncode != 0
    err = (out.stdout + out.stderr).decode(errors="replace").lower()
    assert "denied" in err or "unauthorized" in err, err
    assert_status(http.get_manifest(f"{dreg}/view", "2"), 404)


def test_a_wrong_secret_fails_and_logout_forgets(server, docker):
    out = docker.login(server.tls_host, (server.admin_creds[0], "x" * 40), check=False)
    assert out.returncode != 0
    assert b"unauthorized" in out.stderr.lower(), out.stderr
    assert server.tls_host not in docker.auths()
    docker.login(server.tls_host, server.admin_creds)
    docker.run("logout", server.tls_host)
    assert server.tls_host not in docker.auths()


def test_pulls_of_nothing_say_what_is_missing(server, dreg, docker):
    docker.login(server.tls_host, server.admin_creds)
    out = docker.run("pull", f"{server.tls_host}/{dreg}/app/web:no-such-tag", check=False)
    assert out.returncode != 0
    assert b"manifest unknown" in out.stderr, out.stderr
    out = docker.run("pull", f"{server.tls_host}/{unique('nosuch')}/app:1", check=False)
    assert out.returncode != 0
    assert b"name unknown" in out.stderr and b"does not exist" in out.stderr, out.stderr
