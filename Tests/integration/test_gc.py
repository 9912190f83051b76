"""Garbage collection (docs/lifecycle.md, "Garbage collection" and "Runs,
schedules and details"): runs started by API and after deletes, the grace
period (uploads and reads keep an unreferenced blob), run details and
summaries, runs kept across a restart, who may start or read GC, and a stress
test of pushes, deletes and GC runs going on at the same time.

Every test runs on a server of its own, started with the GC flags it needs
(`helpers.gc_args`): `--gc-grace S`, `--gc-after-delete S` (0 = off) and
`--gc-schedule off` unless a test needs something else, so that only the runs
a test starts happen. The permission test uses the shared server (every GC
call it makes is refused).

Readings of the contract these tests rely on:
- Blobs are the configs and layers of a registry's bucket (manifests are not
  blobs, as in registry usage); a blob whose only referencing image was
  deleted is unreferenced at once.
- "Then the bytes no registry holds any more are freed" happens in the same
  run: a blob held by one registry only frees its extent in the run that
  deletes it (`extents_freed`, `physical_bytes_freed`), and system usage
  `physical_bytes` then counts only what remains.
- A data-plane `DELETE /v2/<name>/manifests/<digest>` is an artifact delete
  (it arms the after-delete run like the admin API does).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
import traceback

import pytest

from helpers import (
    SteppedClock,
    GC_RUNS,
    GC_SCHEDULE,
    KiB,
    api_image_path,
    api_get_json,
    api_list_all,
    assert_oci_error,
    assert_problem,
    assert_status,
    event_run_id,
    gc_args,
    gc_run_details,
    list_events,
    make_image,
    make_layer,
    new_principal,
    parse_rfc3339,
    push_tags,
    random_bytes,
    referenced_blobs,
    registry_artifacts,
    run_gc,
    sha256_digest,
    wait_gc_run,
    wait_until,
)

REG = "gc"
CLOCK_SLACK = 2  # seconds of tolerance on server timestamps (second precision)
RUN_FIELDS = {"id", "kind", "registry", "trigger", "dry_run", "status", "started_at", "finished_at", "error", "summary"}
GC_SUMMARY_FIELDS = {"blobs_deleted", "bytes_deleted", "extents_freed", "physical_bytes_freed", "errors"}


def small_image(*shared: bytes, size: int = 2 * KiB):
    """An image with one unique layer (after the `shared` ones) and its own
    config (unique too: the config lists the layers' diff ids)."""
    return make_image(layers=[*shared, make_layer(size)])


def blob_sizes(*blobs: bytes) -> dict[str, int]:
    return {sha256_digest(b): len(b) for b in blobs}


def assert_blob_served(client, name: str, digest: str, size: int | None = None) -> None:
    h = client.head_blob(name, digest)
    assert_status(h, 200)
    g = client.get_blob(name, digest)
    assert_status(g, 200)
    assert sha256_digest(g.content) == digest, f"{digest}: content has digest {sha256_digest(g.content)}"
    if size is not None:
        assert len(g.content) == size


def assert_blob_gone(client, name: str, digest: str) -> None:
    assert_status(client.head_blob(name, digest), 404)
    assert_oci_error(client.get_blob(name, digest), 404, "BLOB_UNKNOWN")


def assert_run_shape(run: dict, trigger: str) -> None:
    assert RUN_FIELDS <= set(run), run
    assert isinstance(run["id"], str) and run["id"], run
    assert run["kind"] == "gc" and run["registry"] is None and run["dry_run"] is False, run
    assert run["trigger"] == trigger, run
    assert run["status"] in ("running", "succeeded", "failed", "interrupted"), run
    parse_rfc3339(run["started_at"])


def assert_succeeded(run: dict) -> dict:
    assert run["status"] == "succeeded", run
    assert run["error"] is None, run
    assert run["finished_at"] is not None, run
    assert parse_rfc3339(run["finished_at"]) >= parse_rfc3339(run["started_at"]), run
    summary = run["summary"]
    assert GC_SUMMARY_FIELDS <= set(summary), run
    for k in GC_SUMMARY_FIELDS:
        assert isinstance(summary[k], int) and summary[k] >= 0, run
    assert summary["errors"] == 0, run
    return summary


def registry_usage(client, registry: str) -> dict:
    return api_get_json(client, f"/api/v1/registries/{registry}/usage")


def gc_runs(client) -> list[dict]:
    items, _ = api_list_all(client, GC_RUNS)
    return items


# ---------------------------------------------------------------------------
# Runs by API
# ---------------------------------------------------------------------------


def test_api_run_deletes_exactly_the_unreferenced_blobs(make_server):
    srv = make_server(registries=[REG], extra_args=gc_args(grace=0), label="gc-api")
    # Allowed, with a warning: a push's layers arrive before its manifest.
    assert "is shorter than a push may take" in srv.log_text()
    c = srv.client()
    shared = make_layer(3 * KiB, "shared.bin")
    a = small_image(shared, size=2 * KiB)
    b = small_image(shared, size=1 * KiB)
    push_tags(c, f"{REG}/a", a, "v1")
    push_tags(c, f"{REG}/b", b, "v1")
    a_only = blob_sizes(a.config, a.layers[1])
    assert len(a_only) == 2 and not set(a_only) & set(blob_sizes(*b.blobs))

    assert_status(c.delete(api_image_path(REG, "a")), 204)
    # Deleting the image does not delete its blobs: GC does.
    assert registry_usage(c, REG)["blobs"] == 5

    t0 = time.time()
    r = c.post(GC_RUNS)
    assert_status(r, 202)
    started = r.json()
    assert_run_shape(started, "api")
    assert started["status"] in ("running", "succeeded"), started
    assert t0 - CLOCK_SLACK <= parse_rfc3339(started["started_at"]) <= time.time() + CLOCK_SLACK, started

    run = wait_gc_run(c, started["id"], timeout=60)
    assert_run_shape(run, "api")
    assert run["id"] == started["id"]
    summary = assert_succeeded(run)
    assert summary["blobs_deleted"] == len(a_only), run
    assert summary["bytes_deleted"] == sum(a_only.values()), run
    # Held by this registry only: their extents go in the same run.
    assert summary["extents_freed"] == len(a_only), run
    assert summary["physical_bytes_freed"] == sum(a_only.values()), run

    for digest in a_only:
        assert_blob_gone(c, f"{REG}/b", digest)
        assert_blob_gone(c, f"{REG}/a", digest)
    for blob in b.blobs:  # the shared layer, B's layer and config
        assert_blob_served(c, f"{REG}/b", sha256_digest(blob), len(blob))
    g = c.get_manifest(f"{REG}/b", "v1")
    assert_status(g, 200)
    assert g.content == b.manifest

    remaining = referenced_blobs(c, REG)
    assert remaining == blob_sizes(*b.blobs)
    usage = registry_usage(c, REG)
    assert (usage["logical_bytes"], usage["blobs"]) == (sum(remaining.values()), len(remaining)), usage
    system = c.system_usage()
    assert system["logical_bytes"] == sum(remaining.values()), system
    assert system["physical_bytes"] == sum(remaining.values()), system

    runs = gc_runs(c)
    assert runs and runs[0]["id"] == run["id"], runs
    assert runs[0] == run

    details = gc_run_details(c, run["id"])
    assert sorted(d["digest"] for d in details) == sorted(a_only), details
    for d in details:
        assert d["image"] is None and d["tags"] == [] and d["action"] == "deleted", d
        assert isinstance(d["reason"], str) and re.search(r"\d", d["reason"]), f"the reason gives the size: {d}"
    # Details page like every listing.
    paged, pages = api_list_all(c, f"{GC_RUNS}/{run['id']}/details", limit=1)
    assert sorted(d["digest"] for d in paged) == sorted(a_only) and pages >= 2


def test_unknown_run_is_404(make_server):
    srv = make_server(extra_args=gc_args(grace=0), label="gc-404")
    c = srv.client()
    assert_problem(c.get(f"{GC_RUNS}/999999"), 404, "NOT_FOUND")
    assert_problem(c.get(f"{GC_RUNS}/999999/details"), 404, "NOT_FOUND")
    r = c.get(GC_RUNS)
    assert_status(r, 200)
    assert r.json() == {"items": [], "next_cursor": None}, r.text


def test_second_start_while_running_is_job_running(make_server):
    """A second POST right after the first either finds the first still
    running (409 `JOB_RUNNING`) or finished (202, another run)."""
    srv = make_server(registries=[REG], extra_args=gc_args(grace=0), label="gc-409")
    c = srv.client()
    # Something to do, so the first run is not instantaneous.
    for i in range(20):
        c.upload_blob(f"{REG}/junk", random_bytes(4 * KiB))
    first = c.post(GC_RUNS)
    assert_status(first, 202)
    second = c.post(GC_RUNS)
    if second.status_code == 409:
        body = assert_problem(second, 409, "JOB_RUNNING")
        assert first.json()["id"] in body.get("detail", ""), f"the detail names the running run: {body}"
        ids = [first.json()["id"]]
    else:
        assert_status(second, 202)
        assert second.json()["id"] != first.json()["id"]
        ids = [first.json()["id"], second.json()["id"]]
    done = [wait_gc_run(c, i) for i in ids]
    for run in done:
        assert_succeeded(run)
    assert sum(run["summary"]["blobs_deleted"] for run in done) == 20, done
    assert registry_usage(c, REG)["blobs"] == 0


# ---------------------------------------------------------------------------
# Grace period
# ---------------------------------------------------------------------------


def test_blobs_within_the_grace_period_survive(make_server):
    srv = make_server(registries=[REG], extra_args=gc_args(grace=3600), label="gc-grace")
    c = srv.client()
    orphan = random_bytes(5 * KiB)
    orphan_digest = c.upload_blob(f"{REG}/up", orphan)
    img = small_image()
    push_tags(c, f"{REG}/gone", img, "v1")
    assert_status(c.delete(api_image_path(REG, "gone")), 204)

    run = run_gc(c)
    assert_run_shape(run, "api")
    summary = assert_succeeded(run)
    assert summary["blobs_deleted"] == 0 and summary["bytes_deleted"] == 0, run
    assert gc_run_details(c, run["id"]) == []
    assert_blob_served(c, f"{REG}/up", orphan_digest, len(orphan))
    for blob in img.blobs:
        assert_blob_served(c, f"{REG}/x", sha256_digest(blob), len(blob))
    # The blobs are still there, so a manifest can reference them again.
    assert_status(c.put_manifest(f"{REG}/again", "v1", img.manifest), 201)
    assert registry_usage(c, REG)["blobs"] == 1 + len(img.blobs)
    assert "is shorter than a push may take" not in srv.log_text()


def test_orphan_blob_deleted_after_grace_and_a_read_keeps_it(make_server):
    srv = make_server(registries=[REG], extra_args=gc_args(grace=2), label="gc-orphan")
    c = srv.client()
    stale, read = random_bytes(3 * KiB), random_bytes(4 * KiB)
    stale_digest = c.upload_blob(f"{REG}/up", stale)
    read_digest = c.upload_blob(f"{REG}/up", read)
    time.sleep(3)  # both are past the 2 s grace; neither is referenced
    # A read starts the grace period again (only for the blob read).
    assert_status(c.head_blob(f"{REG}/up", read_digest), 200)

    run = run_gc(c)
    summary = assert_succeeded(run)
    assert summary["blobs_deleted"] == 1 and summary["bytes_deleted"] == len(stale), run
    assert [d["digest"] for d in gc_run_details(c, run["id"])] == [stale_digest]
    assert_blob_gone(c, f"{REG}/up", stale_digest)
    assert_blob_served(c, f"{REG}/up", read_digest, len(read))
    usage = registry_usage(c, REG)
    assert (usage["blobs"], usage["logical_bytes"]) == (1, len(read)), usage
    # Deleted content can be pushed again.
    assert c.upload_blob(f"{REG}/up", stale) == stale_digest
    assert_blob_served(c, f"{REG}/up", stale_digest, len(stale))


def test_a_wall_clock_jump_does_not_shorten_the_grace(make_server, tmp_path):
    """The grace period runs on the monotonic clock: when the server's wall
    clock jumps two hours ahead (an NTP step, a VM resumed), a blob uploaded a
    moment before is not collected, nor is the extent of a blob collected a
    moment before (a pull may still read it); both go once the grace has
    really passed."""
    grace = 4
    clock = SteppedClock(tmp_path)
    srv = make_server(
        registries=[REG], extra_args=gc_args(grace=grace), env=clock.env, launcher=clock.launcher, label="gc-clock")
    c = srv.client()
    time.sleep(grace + 0.3)  # past the grace that follows a start
    old = [random_bytes(2 * KiB), random_bytes(3 * KiB)]
    old_digests = [c.upload_blob(f"{REG}/up", b) for b in old]
    time.sleep(grace + 0.3)
    summary = assert_succeeded(run_gc(c))
    assert (summary["blobs_deleted"], summary["extents_freed"]) == (2, 0), summary  # the extents wait a grace

    fresh = random_bytes(4 * KiB)
    fresh_digest = c.upload_blob(f"{REG}/up", fresh)
    clock.step(c, "+2h")
    summary = assert_succeeded(run_gc(c))
    assert (summary["blobs_deleted"], summary["extents_freed"]) == (0, 0), summary
    assert_blob_served(c, f"{REG}/up", fresh_digest, len(fresh))
    for digest in old_digests:
        assert_blob_gone(c, f"{REG}/up", digest)

    time.sleep(grace + 0.3)
    summary = assert_succeeded(run_gc(c))
    assert (summary["blobs_deleted"], summary["extents_freed"]) == (1, 2), summary
    assert_blob_gone(c, f"{REG}/up", fresh_digest)


def test_a_pushed_foreign_layer_is_kept_like_any_layer(make_server):
    """A foreign layer (Windows base layers; `urls` name where it lives) that
    the client pushed anyway (dockerd's and crane's
    allow-nondistributable-artifacts) is what an air-gapped pull gets: GC
    keeps it while a manifest lists it, and takes it once none does."""
    srv = make_server(registries=[REG], extra_args=gc_args(grace=0), label="gc-foreign")
    c = srv.client()
    name = f"{REG}/win"
    config, layer = b'{"architecture":"amd64","os":"windows"}', random_bytes(3 * KiB)
    c.upload_blob(name, config)
    absent = random_bytes(KiB)  # another foreign layer, left to its urls
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": sha256_digest(blob),
             "size": len(blob), "urls": ["https://mcr.microsoft.com/v2/windows/blobs/" + sha256_digest(blob)]}
            for blob in (layer, absent)],
    }).encode()
    # First pushed without the foreign layer's bytes, then again with them.
    assert_status(c.put_manifest(name, "ltsc", manifest, "application/vnd.docker.distribution.manifest.v2+json"), 201)
    c.upload_blob(name, layer)
    assert_status(c.put_manifest(name, "ltsc", manifest, "application/vnd.docker.distribution.manifest.v2+json"), 201)

    assert_succeeded(run_gc(c))
    assert_blob_served(c, name, sha256_digest(layer), len(layer))
    assert_status(c.head_blob(name, sha256_digest(absent)), 404)

    assert_status(c.delete(api_image_path(REG, "win")), 204)
    summary = assert_succeeded(run_gc(c))
    assert summary["blobs_deleted"] == 2, summary  # the config and the pushed foreign layer
    assert_blob_gone(c, name, sha256_digest(layer))


# ---------------------------------------------------------------------------
# Runs after deletes
# ---------------------------------------------------------------------------


def _delete_runs(c) -> list[dict]:
    return [r for r in gc_runs(c) if r["trigger"] == "delete"]


def test_run_after_deletes(make_server):
    srv = make_server(registries=[REG], extra_args=gc_args(grace=0, after_delete=1), label="gc-after-delete")
    c = srv.client()
    x, y, z = small_image(), small_image(), small_image()
    push_tags(c, f"{REG}/x", x, "v1")
    push_tags(c, f"{REG}/y", y, "v1")
    push_tags(c, f"{REG}/z", z, "v1")
    time.sleep(1.5)
    assert gc_runs(c) == [], "pushes start no GC"

    # An image delete and an artifact delete in the same second share one run.
    t0 = time.time()
    assert_status(c.delete(api_image_path(REG, "x")), 204)
    assert_status(c.delete(api_image_path(REG, "y", f"/artifacts/{y.digest}")), 204)
    first = wait_until(lambda: _delete_runs(c), timeout=15, message="a GC run with trigger 'delete'")[0]
    assert_run_shape(first, "delete")
    assert parse_rfc3339(first["started_at"]) >= t0 - CLOCK_SLACK, first
    first = wait_gc_run(c, first["id"])
    summary = assert_succeeded(first)
    gone = blob_sizes(*x.blobs, *y.blobs)
    assert summary["blobs_deleted"] == len(gone) and summary["bytes_deleted"] == sum(gone.values()), first
    time.sleep(2.5)  # longer than gc_after_delete: a second run would have started
    assert [r["id"] for r in _delete_runs(c)] == [first["id"]]
    for digest in gone:
        assert_blob_gone(c, f"{REG}/z", digest)

    # A data-plane delete by digest is an artifact delete too.
    assert_status(c.delete(f"/v2/{REG}/z/manifests/{z.digest}"), 202)
    second = wait_until(
        lambda: [r for r in _delete_runs(c) if r["id"] != first["id"]], timeout=15,
        message="a second GC run with trigger 'delete'",
    )[0]
    second = wait_gc_run(c, second["id"])
    assert second["trigger"] == "delete"
    assert assert_succeeded(second)["blobs_deleted"] == len(z.blobs), second
    assert gc_runs(c)[0]["id"] == second["id"], "newest first"
    assert registry_usage(c, REG)["blobs"] == 0
    # The server started these runs: their events name no user.
    for run in (first, second):
        event = wait_until(
            lambda run=run: [e for e in list_events(c, type="gc.run") if event_run_id(e["detail"]) == run["id"]],
            timeout=5, message=f"the gc.run event of run {run['id']}",
        )[0]
        assert event["actor"] is None and event["detail"]["trigger"] == "delete", event


# ---------------------------------------------------------------------------
# Runs survive a restart
# ---------------------------------------------------------------------------


def test_runs_survive_restart(make_server):
    srv = make_server(registries=[REG], extra_args=gc_args(grace=0), label="gc-restart")
    c = srv.client()
    img = small_image()
    push_tags(c, f"{REG}/app", img, "v1")
    assert_status(c.delete(api_image_path(REG, "app")), 204)
    first = run_gc(c)
    second = run_gc(c)
    assert first["summary"]["blobs_deleted"] == len(img.blobs), first
    assert second["summary"]["blobs_deleted"] == 0, second
    details = gc_run_details(c, first["id"])
    assert len(details) == len(img.blobs)

    srv.restart()
    c = srv.client()
    for run in (first, second):
        assert api_get_json(c, f"{GC_RUNS}/{run['id']}") == run
    runs = gc_runs(c)
    assert [r["id"] for r in runs] == [second["id"], first["id"]], runs
    assert runs == [second, first]
    paged, pages = api_list_all(c, GC_RUNS, limit=1)
    assert paged == runs and pages >= 2
    assert gc_run_details(c, first["id"]) == details
    # New runs get new ids after the restart.
    third = run_gc(c)
    assert third["id"] not in (first["id"], second["id"])
    assert gc_runs(c)[0]["id"] == third["id"]


# ---------------------------------------------------------------------------
# Permissions (shared server: every GC call here is refused)
# ---------------------------------------------------------------------------


def test_permissions(server, http, new_registry):
    reg = new_registry("gcp")
    _, radmin = new_principal(http, "admin", reg, prefix="ra")
    _, viewer = new_principal(http, "viewer", None, prefix="gv")
    _, uploader = new_principal(http, "uploader", None, prefix="gu")
    radmin_c, viewer_c, uploader_c = server.client(creds=radmin), server.client(creds=viewer), server.client(creds=uploader)
    anon = server.anon_client()

    # Global admin reads.
    assert_status(http.get(GC_RUNS), 200)
    before = http.get(GC_SCHEDULE)
    assert_status(before, 200)

    # Global viewer: reads runs and the schedule, changes nothing.
    r = viewer_c.get(GC_RUNS)
    assert_status(r, 200)
    assert set(r.json()) >= {"items", "next_cursor"}
    r = viewer_c.get(GC_SCHEDULE)
    assert_status(r, 200)
    assert r.json() == before.json()
    assert_problem(viewer_c.post(GC_RUNS), 403, "FORBIDDEN")
    assert_problem(viewer_c.put(GC_SCHEDULE, json={"cron": "0 1 * * *"}), 403, "FORBIDDEN")

    # Neither an admin of one registry nor a global uploader may do anything.
    for client in (radmin_c, uploader_c):
        assert_problem(client.post(GC_RUNS), 403, "FORBIDDEN")
        assert_problem(client.get(GC_RUNS), 403, "FORBIDDEN")
        assert_problem(client.get(GC_SCHEDULE), 403, "FORBIDDEN")
        assert_problem(client.put(GC_SCHEDULE, json={"cron": "0 1 * * *"}), 403, "FORBIDDEN")

    # Anonymous: 401 everywhere.
    for method, path in (("POST", GC_RUNS), ("GET", GC_RUNS), ("GET", GC_SCHEDULE), ("PUT", GC_SCHEDULE)):
        kw = {"json": {"cron": "0 1 * * *"}} if method == "PUT" else {}
        assert_problem(anon.request(method, path, **kw), 401, "UNAUTHORIZED")

    # Nothing changed.
    assert http.get(GC_SCHEDULE).json() == before.json()


# ---------------------------------------------------------------------------
# Stress: pushes, deletes and GC runs at the same time
# ---------------------------------------------------------------------------

STRESS_GRACE = 3
STRESS_SECONDS = 15
STRESS_IMAGES = [f"app{i}" for i in range(6)]
STRESS_MAX_PUSHES = 300  # per pusher: bounds the checks afterwards on a fast machine


def test_concurrent_pushes_deletes_and_gc(make_server):
    """~25 s. 3 pushers, 1 deleter and 1 thread starting GC runs every 0.5 s
    for 15 s: every push succeeds (GC never removes a blob a push is about to
    reference: it was uploaded or read within the grace period); afterwards
    every remaining manifest is complete and the usage counts exactly the
    blobs they reference."""
    srv = make_server(registries=[REG], extra_args=gc_args(grace=STRESS_GRACE), label="gc-stress")
    admin = srv.client()
    shared = [make_layer(2 * KiB, f"shared{i}.bin") for i in range(3)]
    # Layers few images use: they fall out of use (and out of the grace
    # period) now and then, so pushes also race GC for blobs it may delete.
    cold = [make_layer(2 * KiB, f"cold{i}.bin") for i in range(8)]

    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    pushed: list[dict] = []  # {"image", "digest", "tag", "blobs", "started", "done"}
    deletable: list[dict] = []  # pushed and not yet chosen for a delete
    deleted_digests: set[str] = set()
    image_deletes: dict[str, list[float]] = {}  # image -> times (monotonic) image deletes were answered
    gc_ids: list[str] = []
    counts = {"push": 0, "delete": 0, "image_delete": 0, "gc_started": 0, "gc_busy": 0}

    def record_error(what: str) -> None:
        with lock:
            errors.append(what)

    def pusher(k: int) -> None:
        c = srv.client()
        rnd = random.Random(k)
        n = 0
        while not stop.is_set() and n < STRESS_MAX_PUSHES:
            n += 1
            image = rnd.choice(STRESS_IMAGES)
            tag = f"p{k}-{n}"
            base = rnd.choice(cold) if rnd.random() < 0.2 else rnd.choice(shared)
            layers = [base, make_layer(rnd.randint(1, 4) * KiB, f"u{k}-{n}.bin")]
            img = make_image(layers=layers)
            started = time.monotonic()
            try:
                c.push_image(f"{REG}/{image}", img, tag)
            except Exception:  # noqa: BLE001 - every failure is reported at the end
                record_error(f"push {image}:{tag}: {traceback.format_exc()}")
                continue
            rec = {"image": image, "digest": img.digest, "tag": tag, "started": started, "done": time.monotonic(),
                   "blobs": blob_sizes(*img.blobs)}
            with lock:
                pushed.append(rec)
                deletable.append(rec)
                counts["push"] += 1

    def deleter() -> None:
        c = srv.client()
        rnd = random.Random(99)
        while not stop.is_set():
            time.sleep(rnd.uniform(0.05, 0.2))
            with lock:
                if not deletable:
                    continue
                roll = rnd.random()
                if roll < 0.08:
                    image = rnd.choice(STRESS_IMAGES)
                    deletable[:] = [d for d in deletable if d["image"] != image]
                    target = None
                else:
                    target = deletable.pop(rnd.randrange(len(deletable)))
                    deleted_digests.add(target["digest"])
                    # Pushed while an image delete of its image was under
                    # way: that delete may have taken it already.
                    maybe_gone = any(t >= target["started"] for t in image_deletes.get(target["image"], []))
            try:
                if target is None:
                    r = c.delete(api_image_path(REG, image))
                    ok: tuple = (204, 404)  # 404: nothing of it left at that moment
                    with lock:
                        image_deletes.setdefault(image, []).append(time.monotonic())
                        counts["image_delete"] += 1
                elif roll < 0.54:
                    r = c.delete(api_image_path(REG, target["image"], f"/artifacts/{target['digest']}"))
                    ok = (204, 404) if maybe_gone else (204,)
                else:
                    r = c.delete(f"/v2/{REG}/{target['image']}/manifests/{target['digest']}")
                    ok = (202, 404) if maybe_gone else (202,)
                if r.status_code not in ok:
                    record_error(f"delete {r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}")
                else:
                    with lock:
                        counts["delete"] += 1
            except Exception:  # noqa: BLE001
                record_error(f"delete: {traceback.format_exc()}")

    def collector() -> None:
        c = srv.client()
        while not stop.is_set():
            try:
                r = c.post(GC_RUNS)
                if r.status_code == 202:
                    with lock:
                        gc_ids.append(r.json()["id"])
                        counts["gc_started"] += 1
                elif r.status_code == 409 and r.json().get("code") == "JOB_RUNNING":
                    counts["gc_busy"] += 1
                else:
                    record_error(f"POST gc run -> {r.status_code}: {r.text[:500]}")
            except Exception:  # noqa: BLE001
                record_error(f"gc: {traceback.format_exc()}")
            stop.wait(0.5)

    threads = [threading.Thread(target=pusher, args=(k,), name=f"pusher{k}") for k in range(3)]
    threads += [threading.Thread(target=deleter, name="deleter"), threading.Thread(target=collector, name="gc")]
    for t in threads:
        t.start()
    try:
        time.sleep(STRESS_SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker thread hangs"
    assert not errors, f"{len(errors)} failures, first ones:\n" + "\n".join(errors[:5])
    assert counts["push"] >= 20 and counts["delete"] >= 10 and counts["gc_started"] >= 2, counts

    # Every GC run started during the stress finished well.
    for run_id in gc_ids:
        assert_succeeded(wait_gc_run(admin, run_id))

    # Past the grace period of the last upload, one more run collects what the
    # deletes left unreferenced.
    time.sleep(STRESS_GRACE + 1)
    final = run_gc(admin)
    assert_succeeded(final)
    # The extents of what it deleted are freed once unreferenced for the grace
    # period too (a pull that began before the delete still reads them): by the
    # next run after that.
    time.sleep(STRESS_GRACE + 1)
    assert_succeeded(run_gc(admin))

    # What is left: every manifest complete, no deleted one back.
    remaining = {(image, art["digest"]) for image, art in registry_artifacts(admin, REG)}
    remaining_digests = {d for _, d in remaining}
    pushed_by_digest = {p["digest"]: p for p in pushed}
    assert remaining_digests <= set(pushed_by_digest), "only pushed manifests exist"
    assert not remaining_digests & deleted_digests, "a manifest deleted by digest is back"
    for p in pushed:
        if p["digest"] in deleted_digests:
            continue
        if any(t >= p["started"] for t in image_deletes.get(p["image"], [])):
            continue  # its image was deleted after it began: it may be gone
        assert (p["image"], p["digest"]) in remaining, f"push {p['image']}:{p['tag']} was never deleted but is gone"
        g = admin.get_manifest(f"{REG}/{p['image']}", p["tag"])
        assert_status(g, 200)
        assert g.headers.get("Docker-Content-Digest") == p["digest"]

    expected: dict[str, int] = {}
    for image, digest in sorted(remaining):
        g = admin.get_manifest(f"{REG}/{image}", digest)
        assert_status(g, 200)
        assert sha256_digest(g.content) == digest
        m = g.json()
        for d in [m["config"], *m["layers"]]:
            b = admin.get_blob(f"{REG}/{image}", d["digest"])
            assert_status(b, 200)
            assert "sha256:" + hashlib.sha256(b.content).hexdigest() == d["digest"], f"{image}@{digest}: blob {d['digest']}"
            assert len(b.content) == d["size"]
            expected[d["digest"]] = d["size"]
        assert pushed_by_digest[digest]["blobs"] == {d["digest"]: d["size"] for d in [m["config"], *m["layers"]]}
    assert referenced_blobs(admin, REG) == expected

    usage = registry_usage(admin, REG)
    assert usage["logical_bytes"] == sum(expected.values()), (usage, len(expected))
    assert usage["blobs"] == len(expected), usage
    assert usage["artifacts"] == len(remaining), usage
    system = admin.system_usage()
    assert system["logical_bytes"] == sum(expected.values()), system
    assert system["physical_bytes"] == sum(expected.values()), system
    assert system["open_uploads"] == 0 and system["upload_bytes"] == 0, system
