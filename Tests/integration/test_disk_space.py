"""Uploads leave `min_free_space` available on the data directory's file
system for the store's own records (docs/architecture.md, "Disk space"):
below it an upload is refused with 507 and changes nothing, while pulls,
manifest and tag writes, deletes and GC go on, and the server stops and
starts cleanly. The last test fills a real file system (a small tmpfs, where
this machine lets a test mount one): the server used to abort there, at its
next stop and at every start."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import BerthServer
from helpers import (
    KiB,
    MiB,
    assert_oci_error,
    assert_status,
    gc_args,
    make_image,
    make_layer,
    push_tags,
    random_bytes,
    run_gc,
    sha256_digest,
    small_image,
    with_query,
)

REG = "space"
NO_FILE_SYSTEM_HAS_THIS = str(1 << 60)


def assert_storage_full(resp) -> None:
    error = assert_oci_error(resp, 507, "UNSUPPORTED")
    assert "storage is full" in error["message"], error


def test_uploads_are_refused_below_the_reserve_and_change_nothing(make_server):
    srv = make_server(registries=[REG], extra_args=gc_args(grace=0))
    c = srv.client()
    kept = small_image()
    push_tags(c, f"{REG}/app", kept, "v1")
    # An upload under way: 1 MiB and a bit (a full chunk in its file, a tail in RocksDB).
    first = random_bytes(MiB + 5 * KiB)
    rest = random_bytes(3 * KiB)
    started = c.start_upload(f"{REG}/app")
    assert_status(started, 202)
    location = c.abs_location(started)
    r = c.patch(location, data=first, headers={"Content-Type": "application/octet-stream"})
    assert_status(r, 202)
    # And one whose bytes are all sent: its final PUT writes nothing and commits below the reserve.
    whole = random_bytes(MiB + 7)
    sent = c.start_upload(f"{REG}/app")
    assert_status(sent, 202)
    sent_location = c.abs_location(sent)
    assert_status(c.patch(sent_location, data=whole, headers={"Content-Type": "application/octet-stream"}), 202)

    srv.terminate()
    srv.extra_args += ["--min-free-space", NO_FILE_SYSTEM_HAS_THIS]
    srv.start()
    c = srv.client()

    assert_storage_full(c.start_upload(f"{REG}/app"))
    data = random_bytes(2 * KiB)
    assert_storage_full(c.post(f"/v2/{REG}/app/blobs/uploads/?digest={sha256_digest(data)}", data=data))
    assert_storage_full(c.patch(location, data=rest, headers={"Content-Type": "application/octet-stream"}))
    status = c.get(location)
    assert_status(status, 204)
    assert status.headers["Range"] == f"0-{len(first) - 1}", "the refused PATCH changed the upload"

    assert_status(c.put(with_query(sent_location, digest=sha256_digest(whole))), 201)
    assert c.get_blob(f"{REG}/app", sha256_digest(whole)).content == whole

    # Reads, manifest and tag writes, deletes and GC go on.
    assert c.get_manifest(f"{REG}/app", "v1").content == kept.manifest
    for blob in kept.blobs:
        assert c.get_blob(f"{REG}/app", sha256_digest(blob)).content == blob
    assert_status(c.put_manifest(f"{REG}/app", "v2", kept.manifest, kept.media_type), 201)
    assert_status(c.delete(f"/v2/{REG}/app/manifests/v1"), 202)
    run_gc(c)

    # With the reserve back to its default, the upload goes on where it was.
    srv.terminate()
    srv.extra_args = srv.extra_args[:-2]
    srv.start()
    c = srv.client()
    r = c.put(with_query(location, digest=sha256_digest(first + rest)), data=rest)
    assert_status(r, 201)
    assert c.get_blob(f"{REG}/app", sha256_digest(first + rest)).content == first + rest


@pytest.fixture
def small_file_system(tmp_path):
    """A 128 MiB tmpfs (the reserve's default there: its 64 MiB floor)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_file_system_refuses_uploads_and_the_server_lives_on(berth_bin, small_file_system):
    srv = BerthServer(berth_bin, small_file_system / "berth", registries=[REG], extra_args=gc_args(grace=0))
    try:
        srv.start()
        c = srv.client()
        pushed = []
        # 6 MiB images until the reserve refuses one: about ten fit.
        for index in range(40):
            img = make_image(layers=[make_layer(6 * MiB, name=f"layer{index}")])
            config, layer = img.blobs[0], img.blobs[-1]
            c.upload_blob(f"{REG}/app", config)
            started = c.start_upload(f"{REG}/app")
            if started.status_code == 507:
                break
            assert_status(started, 202)
            r = c.put(with_query(c.abs_location(started), digest=sha256_digest(layer)), data=layer)
            if r.status_code == 507:
                assert_storage_full(r)
                break
            assert_status(r, 201)
            assert_status(c.put_manifest(f"{REG}/app", f"v{index}", img.manifest, img.media_type), 201)
            pushed.append((f"v{index}", img))
        else:
            pytest.fail("40 images of 6 MiB fit in 128 MiB")
        assert len(pushed) >= 5, pushed

        # Full: what is stored reads back, and the server stops cleanly and starts again.
        for tag, img in pushed:
            assert c.get_manifest(f"{REG}/app", tag).content == img.manifest
        srv.restart()
        c = srv.client()
        tag, img = pushed[-1]
        assert c.get_blob(f"{REG}/app", sha256_digest(img.blobs[-1])).content == img.blobs[-1]

        # Deleting images and running GC makes room again.
        for _, img in pushed[:3]:
            assert_status(c.delete(f"/v2/{REG}/app/manifests/{img.digest}"), 202)
        run_gc(c)
        again = make_image(layers=[make_layer(6 * MiB, name="again")])
        push_tags(c, f"{REG}/app", again, "again")
        assert c.get_manifest(f"{REG}/app", "again").content == again.manifest
        srv.terminate()

        # Filled by someone else to under what a start needs: a clear refusal, not an abort.
        stats = os.statvfs(small_file_system)
        with open(small_file_system / "filler", "wb") as filler:
            filler.write(b"\0" * (stats.f_bavail * stats.f_frsize - 8 * MiB))
        with pytest.raises(RuntimeError, match="exited with code 1 during startup") as refused:
            srv.start()
        assert "opening the store needs at least" in str(refused.value), refused.value
    finally:
        srv.stop_quietly()
