"""End-to-end tests with podman (containers/image and containers/storage, Go):
`podman login` with an access key (Basic, then the Bearer token flow), push
of an image in OCI and Docker v2 schema 2 form, a pull into empty storage,
a manifest list built with `podman manifest`, a push refused for a viewer,
and `podman logout`. podman runs as root on its own vfs storage under the
test's directory, and trusts the server's certificate through `--cert-dir`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from helpers import (
    MT_OCI_MANIFEST,
    assert_status,
    create_registry,
    have_tool,
    new_principal,
    unique,
)

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

pytestmark = [
    pytest.mark.skipif(not have_tool("podman"), reason="podman not installed"),
    # Rootless podman needs a user session (XDG_RUNTIME_DIR, subuids) that CI does not have.
    pytest.mark.skipif(os.geteuid() != 0, reason="podman is driven as root"),
]


class Podman:
    """podman with storage, auth file and configuration of its own."""

    def __init__(self, server, home: Path):
        self.server = server
        self.home = home
        self.auth = home / "auth.json"
        # podman refuses a run root of more than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix="berth-podman-", dir="/tmp"))
        (home / "containers").mkdir(parents=True, exist_ok=True)
        # Short-name lookups and signature policy must not depend on the host's /etc/containers.
        (home / "containers" / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        (home / "containers" / "registries.conf").write_text('unqualified-search-registries = []\n')

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None, timeout: float = 120):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home),
               "CONTAINERS_REGISTRIES_CONF": str(self.home / "containers" / "registries.conf"),
               "REGISTRY_AUTH_FILE": str(self.auth)}
        cmd = ["podman", "--root", str(self.home / "root"), "--runroot", str(self.runroot),
               "--tmpdir", str(self.runroot / "tmp"),
               "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none", *args]
        out = subprocess.run(cmd, env=env, input=stdin, capture_output=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr.decode(errors='replace')}")
        return out

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)

    def tls(self) -> tuple[str, ...]:
        return ("--cert-dir", self.server.cert_dir)

    def login(self, creds, check: bool = True):
        return self.run("login", *self.tls(), "--username", creds[0], "--password-stdin", self.server.tls_host,
                        stdin=creds[1].encode(), check=check)

    def image_from_files(self, tag: str, files: dict[str, bytes], tmp: Path) -> None:
        """A one-layer image holding `files`, imported into local storage as `tag`."""
        archive = tmp / f"{unique('rootfs')}.tar"
        with tarfile.open(archive, "w") as tar:
            for name, data in files.items():
                path = tmp / name
                path.write_bytes(data)
                tar.add(path, arcname=name)
        self.run("import", "--change", "CMD [\"/hello\"]", str(archive), tag)

    def layer_files(self, ref: str, tmp: Path) -> dict[str, bytes]:
        """The files of `ref`'s layers, read from `podman save`'s OCI layout."""
        out = tmp / unique("saved")
        self.run("save", "--format", "oci-dir", "--output", str(out), ref)
        index = json.loads((out / "index.json").read_text())
        manifest = json.loads(_blob(out, index["manifests"][0]["digest"]))
        files: dict[str, bytes] = {}
        for layer in manifest["layers"]:
            path = out / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        files[member.name.lstrip("./")] = tar.extractfile(member).read()
        return files


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


@pytest.fixture(scope="module")
def preg(http) -> str:
    return create_registry(http, "pd")


@pytest.fixture()
def podmen(server, tmp_path):
    """Makes podman instances, each with storage of its own; removes their run roots."""
    made: list[Podman] = []

    def make(name: str) -> Podman:
        made.append(Podman(server, tmp_path / name))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture()
def podman(podmen) -> Podman:
    return podmen("podman")


@pytest.mark.parametrize("form,media_type", [("oci", MT_OCI_MANIFEST), ("v2s2", MT_DOCKER_MANIFEST)])
def test_login_push_and_pull_into_empty_storage(server, http, preg, podman, podmen, tmp_path, form, media_type):
    files = {"hello": b"#!/bin/sh\necho hello from berth\n", "data.bin": bytes(range(256)) * 64}
    podman.image_from_files("localhost/app:src", files, tmp_path)
    out = podman.login(server.admin_creds)
    assert b"Login Succeeded" in out.stdout, out
    # The auth file holds the key as podman keeps it; the server handed out tokens.
    assert server.tls_host in json.loads(podman.auth.read_text())["auths"]

    ref = f"{server.tls_host}/{preg}/app:{form}"
    since = server.log_size()
    podman.run("push", *podman.tls(), "--format", form, "localhost/app:src", ref)
    # podman took the Bearer challenge and asked /auth/token with the key.
    assert '"route":"auth.token","status":200' in server.log_text(since), server.log_tail(since)
    r = http.get_manifest(f"{preg}/app", form)
    assert_status(r, 200)
    assert r.headers["Content-Type"] == media_type, r.headers

    # A second podman, with empty storage, pulls it and finds the same files.
    fresh = podmen("fresh")
    fresh.login(server.admin_creds)
    fresh.run("pull", *fresh.tls(), ref)
    assert fresh.layer_files(ref, tmp_path) == files
    inspected = json.loads(fresh.run("image", "inspect", ref).stdout)[0]
    assert inspected["Config"]["Cmd"] == ["/hello"], inspected["Config"]
    assert inspected["Digest"] == r.headers["Docker-Content-Digest"], (inspected["Digest"], r.headers)


def test_manifest_list_push_and_platform_pull(server, http, preg, podman, podmen, tmp_path):
    """`podman manifest` builds an index of two images; `push --all` sends
    both and the index; a pull picks the machine's platform."""
    podman.login(server.admin_creds)
    podman.image_from_files("localhost/multi:amd64", {"arch": b"amd64\n"}, tmp_path)
    podman.image_from_files("localhost/multi:arm64", {"arch": b"arm64\n"}, tmp_path)
    podman.run("manifest", "create", "localhost/multi:list")
    podman.run("manifest", "add", "--arch", "amd64", "--os", "linux", "localhost/multi:list", "containers-storage:localhost/multi:amd64")
    podman.run("manifest", "add", "--arch", "arm64", "--os", "linux", "localhost/multi:list", "containers-storage:localhost/multi:arm64")
    ref = f"{server.tls_host}/{preg}/multi:1.0"
    podman.run("manifest", "push", *podman.tls(), "--all", "localhost/multi:list", f"docker://{ref}")

    r = http.get_manifest(f"{preg}/multi", "1.0")
    assert_status(r, 200)
    index = r.json()
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}, index
    for m in index["manifests"]:
        assert_status(http.get_manifest(f"{preg}/multi", m["digest"]), 200)

    fresh = podmen("fresh")
    fresh.login(server.admin_creds)
    fresh.run("pull", *fresh.tls(), "--arch", "arm64", ref)
    assert fresh.layer_files(ref, tmp_path) == {"arch": b"arm64\n"}


def test_a_viewer_logs_in_and_pulls_but_cannot_push(server, http, preg, podman, podmen, tmp_path):
    podman.login(server.admin_creds)
    podman.image_from_files("localhost/view:src", {"f": b"viewer\n"}, tmp_path)
    ref = f"{server.tls_host}/{preg}/view:1"
    podman.run("push", *podman.tls(), "localhost/view:src", ref)

    _, creds = new_principal(http, "viewer", registry=preg, prefix="pv")
    viewer = podmen("viewer")
    viewer.login(creds)
    viewer.run("pull", *viewer.tls(), ref)
    viewer.image_from_files("localhost/view:mine", {"f": b"mine\n"}, tmp_path)
    out = viewer.run("push", *viewer.tls(), "localhost/view:mine", f"{server.tls_host}/{preg}/view:2", check=False)
    assert out.returncode != 0
    err = out.stderr.decode(errors="replace").lower()
    assert "denied" in err or "unauthorized" in err, err
    assert_status(http.get_manifest(f"{preg}/view", "2"), 404)


def test_login_with_a_wrong_secret_fails_and_logout_forgets(server, podman):
    out = podman.login((server.admin_creds[0], "x" * 40), check=False)
    assert out.returncode != 0
    assert b"unauthorized" in out.stderr.lower() or b"invalid" in out.stderr.lower(), out.stderr
    podman.login(server.admin_creds)
    podman.run("logout", server.tls_host)
    assert server.tls_host not in json.loads(podman.auth.read_text()).get("auths", {})
