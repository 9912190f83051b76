"""Cleanup policies, runs and schedule (docs/lifecycle.md, "Cleanup
policies", "Runs", "Runs, schedules and details", "Cron expressions",
"Permissions").

Every test works in a registry of its own on the shared server (the
permission cases share one module registry), so runs of different tests
never meet. Artifacts whose push order matters are pushed ~20 ms apart.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from helpers import (
    small_image,
    ANON,
    OADMIN,
    RADMIN,
    READERS,
    UPLOADER,
    VIEWER,
    assert_refused,
    scoped_clients,
    Registry,
    api_get_json,
    api_image_path,
    api_list_all,
    api_registry_path,
    assert_problem,
    assert_status,
    cleanup_run_details,
    create_cleanup_policy,
    create_protection_policy,
    create_registry,
    list_events,
    make_artifact,
    parse_rfc3339,
    push_index,
    push_series,
    push_tags,
    run_cleanup,
    sha256_digest,
    start_cleanup_run,
    unique,
    wait_cleanup_run,
    wait_until,
)

CLOCK_SLACK = 2
GAP = 0.02  # between pushes whose order matters

POLICY_FIELDS = {"id", "image_pattern", "tag_pattern", "rule", "value", "enabled", "created_at"}
RUN_FIELDS = {"id", "kind", "registry", "trigger", "dry_run", "status", "started_at", "finished_at", "error", "summary"}
SUMMARY_FIELDS = ("artifacts_deleted", "tags_deleted", "artifacts_protected", "errors")
DETAIL_FIELDS = {"image", "digest", "tags", "action", "policy", "reason"}
KEEP_RULES = ("keep_last_pushed", "keep_pushed_within_days", "keep_pulled_within_days")
RULES = (*KEEP_RULES, "delete_untagged")
MISSING_ID = "cp-000000000000"
MISSING_RUN = "999999999"



def cp_path(reg: str, pid: str | None = None) -> str:
    return api_registry_path(reg, "/cleanup-policies" + (f"/{pid}" if pid else ""))


def runs_path(reg: str, rest: str = "") -> str:
    return api_registry_path(reg, "/cleanup/runs" + rest)


def sched_path(reg: str) -> str:
    return api_registry_path(reg, "/cleanup/schedule")


def policies(client, reg: str) -> list[dict]:
    r = client.get(cp_path(reg))
    assert_status(r, 200)
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("items"), list), body
    return body["items"]


def dp_tags(client, name: str) -> list[str]:
    r = client.get(f"/v2/{name}/tags/list")
    assert_status(r, 200)
    return sorted(r.json().get("tags") or [])


def tag_map(client, reg: str, image: str) -> dict[str, str]:
    items, _ = api_list_all(client, api_image_path(reg, image, "/tags"))
    return {t["name"]: t["digest"] for t in items}


def artifact_digests(client, reg: str, image: str) -> set[str]:
    items, _ = api_list_all(client, api_image_path(reg, image, "/artifacts"))
    return {i["digest"] for i in items}


def summary(run: dict) -> dict:
    s = run["summary"]
    assert isinstance(s, dict) and set(SUMMARY_FIELDS) <= set(s), run
    return {k: s[k] for k in SUMMARY_FIELDS}


def check_run(run: dict, reg: str, dry_run: bool) -> None:
    assert RUN_FIELDS <= set(run), run
    assert isinstance(run["id"], str) and run["id"], run
    assert (run["kind"], run["registry"], run["trigger"], run["dry_run"]) == ("cleanup", reg, "api", dry_run), run
    assert run["status"] in ("running", "succeeded", "failed", "interrupted"), run
    parse_rfc3339(run["started_at"])


def check_finished(run: dict, reg: str, dry_run: bool, t0: float, t1: float) -> None:
    check_run(run, reg, dry_run)
    assert run["status"] == "succeeded" and run["error"] is None, run
    started, finished = parse_rfc3339(run["started_at"]), parse_rfc3339(run["finished_at"])
    assert t0 - CLOCK_SLACK <= started <= finished <= t1 + CLOCK_SLACK, run


def details_by_digest(details: list[dict]) -> dict[str, dict]:
    for d in details:
        assert DETAIL_FIELDS <= set(d), d
        assert isinstance(d["tags"], list) and isinstance(d["reason"], str), d
    by = {d["digest"]: d for d in details}
    assert len(by) == len(details), f"an artifact is listed twice: {details}"
    return by


def assert_details(details: list[dict], expected: dict[str, tuple], action: str, policy: str | None = None) -> None:
    """`expected`: digest -> (image, tags). Every detail has `action` (and,
    when given, `policy`), and the details are exactly `expected`."""
    by = details_by_digest(details)
    assert set(by) == set(expected), f"details {sorted(by)} != expected {sorted(expected)}: {details}"
    for digest, (image, tags) in expected.items():
        d = by[digest]
        assert d["action"] == action, d
        assert d["image"] == image, d
        assert sorted(d["tags"]) == sorted(tags), d
        if policy is not None:
            assert d["policy"] == policy, d


# ---------------------------------------------------------------------------
# Policy CRUD and validation
# ---------------------------------------------------------------------------


def test_create_returns_the_policy_and_its_location(http, new_registry):
    reg = new_registry("cc")
    t0 = time.time()
    r = http.post(cp_path(reg), json={"image_pattern": "**", "tag_pattern": "*", "rule": "keep_last_pushed", "value": 5})
    t1 = time.time()
    assert_status(r, 201)
    p = r.json()
    assert POLICY_FIELDS <= set(p), p
    assert isinstance(p["id"], str) and re.fullmatch(r"cp-[0-9a-f]{12}", p["id"]), p
    assert {k: p[k] for k in ("image_pattern", "tag_pattern", "rule", "value", "enabled")} == {
        "image_pattern": "**", "tag_pattern": "*", "rule": "keep_last_pushed", "value": 5, "enabled": True,
    }, p
    assert t0 - CLOCK_SLACK <= parse_rfc3339(p["created_at"]) <= t1 + CLOCK_SLACK, p
    got = http.get(http.abs_location(r))
    assert_status(got, 200)
    assert got.json() == p
    assert api_get_json(http, cp_path(reg, p["id"])) == p
    assert policies(http, reg) == [p]


def test_defaults_and_every_rule(http, new_registry):
    reg = new_registry("cd")
    made = {}
    for rule in KEEP_RULES:
        p = create_cleanup_policy(http, reg, "app", rule, 30)
        assert (p["tag_pattern"], p["enabled"], p["rule"], p["value"]) == ("**", True, rule, 30), p
        made[p["id"]] = p
    u = create_cleanup_policy(http, reg, "app", "delete_untagged")
    assert "value" in u and u["value"] is None, "delete_untagged shows value null"
    assert (u["tag_pattern"], u["enabled"], u["rule"]) == ("**", True, "delete_untagged"), u
    made[u["id"]] = u
    r = http.post(cp_path(reg), json={"image_pattern": "other", "rule": "delete_untagged", "value": None,
                                      "enabled": False})
    assert_status(r, 201)
    assert (r.json()["value"], r.json()["enabled"]) == (None, False), r.json()
    made[r.json()["id"]] = r.json()
    assert {p["id"]: p for p in policies(http, reg)} == made


def test_list_get_patch_delete(http, new_registry):
    reg = new_registry("cl")
    p1 = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 5, tag_pattern="v*")
    p2 = create_cleanup_policy(http, reg, "base", "delete_untagged")
    assert {p["id"]: p for p in policies(http, reg)} == {p1["id"]: p1, p2["id"]: p2}
    for p in (p1, p2):
        assert api_get_json(http, cp_path(reg, p["id"])) == p

    # Absent (or null) fields are unchanged; rule and value change together.
    expected = dict(p1)
    for change, effect in (
        ({"rule": "keep_last_pushed", "value": 10}, {}),
        ({"enabled": False}, {}),
        ({"image_pattern": "team/**", "tag_pattern": "release-*"}, {}),
        ({"rule": "keep_pulled_within_days", "value": 10000, "enabled": True}, {}),
        ({"tag_pattern": None, "enabled": None}, {}),
        ({"rule": "delete_untagged"}, {"value": None}),
        ({"rule": "keep_pushed_within_days", "value": 1}, {}),
    ):
        r = http.patch(cp_path(reg, p1["id"]), json=change)
        assert_status(r, 200)
        expected.update({k: v for k, v in change.items() if v is not None})
        expected.update(effect)
        assert r.json() == expected, change
    assert api_get_json(http, cp_path(reg, p1["id"])) == expected

    # Invalid changes are refused and change nothing.
    for bad in (
        {"rule": "keep_last_pushed", "value": 0},
        {"rule": "keep_last_pushed", "value": 10001},
        {"rule": "keep_last_pushed", "value": "7"},
        {"rule": "delete_untagged", "value": 3},
        {"rule": "keep_all", "value": 3},
        {"rule": "keep_last_pushed"},
        {"rule": "keep_last_pushed", "value": None},
        {"value": 3},
        {"enabled": "no"},
    ):
        assert_problem(http.patch(cp_path(reg, p1["id"]), json=bad), 400)
    body = assert_problem(http.patch(cp_path(reg, p1["id"]), json={"tag_pattern": "v{"}), 400, "INVALID_PATTERN")
    assert "tag_pattern" in (body.get("detail") or ""), body
    assert_problem(http.patch(cp_path(reg, p2["id"]), json={"value": 3}), 400)
    assert api_get_json(http, cp_path(reg, p1["id"])) == expected
    assert api_get_json(http, cp_path(reg, p2["id"])) == p2

    assert_status(http.delete(cp_path(reg, p1["id"])), 204)
    assert_problem(http.get(cp_path(reg, p1["id"])), 404, "NOT_FOUND")
    assert policies(http, reg) == [p2]
    assert_problem(http.delete(cp_path(reg, p1["id"])), 404, "NOT_FOUND")


def test_unknown_policy_and_registry(http, new_registry):
    reg = new_registry("cu")
    assert_problem(http.get(cp_path(reg, MISSING_ID)), 404, "NOT_FOUND")
    assert_problem(http.patch(cp_path(reg, MISSING_ID), json={"enabled": False}), 404, "NOT_FOUND")
    assert_problem(http.delete(cp_path(reg, MISSING_ID)), 404, "NOT_FOUND")
    other = new_registry("cu")
    p = create_cleanup_policy(http, other, "app", "delete_untagged")
    assert_problem(http.get(cp_path(reg, p["id"])), 404, "NOT_FOUND")
    assert_problem(http.delete(cp_path(reg, p["id"])), 404, "NOT_FOUND")
    assert api_get_json(http, cp_path(other, p["id"])) == p
    ghost = unique("ghost")
    assert_problem(http.get(cp_path(ghost)), 404, "NOT_FOUND")
    assert_problem(http.post(cp_path(ghost), json={"image_pattern": "app", "rule": "delete_untagged"}), 404,
                   "NOT_FOUND")
    assert_problem(http.get(runs_path(ghost)), 404, "NOT_FOUND")
    assert_problem(http.post(runs_path(ghost), json={"dry_run": True}), 404, "NOT_FOUND")
    assert_problem(http.get(sched_path(ghost)), 404, "NOT_FOUND")


def test_value_validation(http, new_registry):
    reg = new_registry("cv")
    for rule in KEEP_RULES:
        assert_problem(http.post(cp_path(reg), json={"image_pattern": "app", "rule": rule}), 400)
        for bad in (0, -1, 10001, "5", 1.5, True, None, [5]):
            r = http.post(cp_path(reg), json={"image_pattern": "app", "rule": rule, "value": bad})
            assert_problem(r, 400)
        for ok in (1, 10000):
            assert create_cleanup_policy(http, reg, "app", rule, ok)["value"] == ok
    for bad in (3, 0, "x", 1):
        r = http.post(cp_path(reg), json={"image_pattern": "app", "rule": "delete_untagged", "value": bad})
        assert_problem(r, 400)
    assert len(policies(http, reg)) == 2 * len(KEEP_RULES)


def test_rule_and_pattern_validation(http, new_registry):
    reg = new_registry("cr")
    for bad_rule in ("keep_all", "", "KEEP_LAST_PUSHED", "keep-last-pushed", None, 1):
        assert_problem(http.post(cp_path(reg), json={"image_pattern": "app", "rule": bad_rule, "value": 1}), 400)
    assert_problem(http.post(cp_path(reg), json={"image_pattern": "app", "value": 1}), 400)
    assert_problem(http.post(cp_path(reg), json={"rule": "keep_last_pushed", "value": 1}), 400)
    assert_problem(http.post(cp_path(reg), json={"image_pattern": None, "rule": "delete_untagged"}), 400)
    assert_problem(http.post(cp_path(reg), json={"image_pattern": "app", "rule": "delete_untagged",
                                                 "enabled": "yes"}), 400)
    r = http.post(cp_path(reg), data=b"{", headers={"Content-Type": "application/json"})
    assert_problem(r, 400)
    for field_name in ("image_pattern", "tag_pattern"):
        for bad in ("app{", "v1}", "a,b", "x\\"):
            body = {"image_pattern": "app", "tag_pattern": "v*", "rule": "keep_last_pushed", "value": 3,
                    field_name: bad}
            problem = assert_problem(http.post(cp_path(reg), json=body), 400, "INVALID_PATTERN")
            assert field_name in (problem.get("detail") or ""), problem
        body = {"image_pattern": "app", "rule": "keep_last_pushed", "value": 3, field_name: ""}
        assert_problem(http.post(cp_path(reg), json=body), 400)
    assert policies(http, reg) == []


def test_duplicate_policy_conflict(http, new_registry):
    reg = new_registry("cdup")
    create_cleanup_policy(http, reg, "app", "keep_last_pushed", 5, tag_pattern="v*")
    same = {"image_pattern": "app", "tag_pattern": "v*", "rule": "keep_last_pushed", "value": 5}
    assert_problem(http.post(cp_path(reg), json=same), 409, "CONFLICT")
    assert_problem(http.post(cp_path(reg), json={**same, "enabled": False}), 409, "CONFLICT")
    # Any difference in the four makes another policy.
    for diff in ({"value": 6}, {"rule": "keep_pushed_within_days"}, {"tag_pattern": "**"}, {"image_pattern": "app2"}):
        assert_status(http.post(cp_path(reg), json={**same, **diff}), 201)
    create_cleanup_policy(http, reg, "app", "delete_untagged")
    # Absent and null value are the same for delete_untagged; the default tag pattern is "**".
    r = http.post(cp_path(reg), json={"image_pattern": "app", "tag_pattern": "**", "rule": "delete_untagged",
                                      "value": None})
    assert_problem(r, 409, "CONFLICT")
    assert len(policies(http, reg)) == 6
    # The same in another registry is fine.
    create_cleanup_policy(http, new_registry("cdup"), "app", "keep_last_pushed", 5, tag_pattern="v*")


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def test_keep_last_pushed_test_run_then_real_run(http, new_registry):
    reg = new_registry("ck")
    name = f"{reg}/app"
    tags = ["t1", "t2", "t3", "t4", "t5"]
    imgs = push_series(http, name, tags, gap=GAP)
    cp = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 2)["id"]
    oldest = {imgs[i].digest: ("app", [tags[i]]) for i in range(3)}

    # Test run: records what would go, deletes nothing.
    t0 = time.time()
    started = start_cleanup_run(http, reg, dry_run=True)
    check_run(started, reg, True)
    assert started["status"] in ("running", "succeeded"), started
    dry = wait_cleanup_run(http, reg, started["id"])
    check_finished(dry, reg, True, t0, time.time())
    assert summary(dry) == {"artifacts_deleted": 3, "tags_deleted": 3, "artifacts_protected": 0, "errors": 0}
    dry_details = cleanup_run_details(http, reg, dry["id"])
    assert_details(dry_details, oldest, "would_delete", cp)
    assert dp_tags(http, name) == tags
    for img in imgs:
        assert http.get_manifest(name, img.digest).content == img.manifest

    # Details page like every listing.
    items, pages = api_list_all(http, runs_path(reg, f"/{dry['id']}/details"), limit=1)
    assert items == dry_details and pages >= 3
    items, _ = api_list_all(http, runs_path(reg, f"/{dry['id']}/details"), limit=2)
    assert items == dry_details

    # Real run: deletes exactly those.
    t0 = time.time()
    real = run_cleanup(http, reg, dry_run=False)
    check_finished(real, reg, False, t0, time.time())
    assert summary(real) == {"artifacts_deleted": 3, "tags_deleted": 3, "artifacts_protected": 0, "errors": 0}
    assert_details(cleanup_run_details(http, reg, real["id"]), oldest, "deleted", cp)
    assert dp_tags(http, name) == ["t4", "t5"]
    for img in imgs[:3]:
        assert_status(http.get_manifest(name, img.digest), 404)
    for img in imgs[3:]:
        assert http.get_manifest(name, img.digest).content == img.manifest
    assert artifact_digests(http, reg, "app") == {imgs[3].digest, imgs[4].digest}
    # The deletes' events name the user who started the run.
    deletes = [e for e in list_events(http, registry=reg) if e["type"] == "artifact.delete"]
    assert sorted(e["digest"] for e in deletes) == sorted(oldest) and {e["actor"] for e in deletes} == {"admin"}, deletes

    # Nothing left to do.
    again = run_cleanup(http, reg, dry_run=False)
    assert summary(again) == {"artifacts_deleted": 0, "tags_deleted": 0, "artifacts_protected": 0, "errors": 0}
    assert cleanup_run_details(http, reg, again["id"]) == []

    # Runs: newest first, paginated, each readable by id.
    runs, _ = api_list_all(http, runs_path(reg))
    assert [r["id"] for r in runs] == [again["id"], real["id"], dry["id"]], runs
    assert [r["dry_run"] for r in runs] == [False, False, True]
    paged, pages = api_list_all(http, runs_path(reg), limit=1)
    assert [r["id"] for r in paged] == [r["id"] for r in runs] and pages >= 3
    for r in runs:
        assert api_get_json(http, runs_path(reg, f"/{r['id']}")) == r


def test_tag_outside_the_pattern_keeps_the_artifact(http, new_registry):
    reg = new_registry("ct")
    name = f"{reg}/app"
    a = small_image()
    push_tags(http, name, a, "v1", "latest")
    time.sleep(GAP)
    b, c = push_series(http, name, ["v2", "v3"], gap=GAP)
    cp = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 1, tag_pattern="v*")["id"]

    run = run_cleanup(http, reg)
    # Candidates are b and c only (a also has "latest"); c is the newest.
    assert_details(cleanup_run_details(http, reg, run["id"]), {b.digest: ("app", ["v2"])}, "deleted", cp)
    assert summary(run)["artifacts_deleted"] == 1 and summary(run)["tags_deleted"] == 1
    assert tag_map(http, reg, "app") == {"v1": a.digest, "latest": a.digest, "v3": c.digest}
    assert_status(http.get_manifest(name, b.digest), 404)
    assert http.get_manifest(name, a.digest).content == a.manifest


def test_a_kept_index_keeps_the_platform_manifests_it_lists(http, new_registry):
    """Three multi-arch releases, each a tagged manifest per platform and a
    tagged index (`docker manifest create`). keep_last_pushed 5 keeps, newest
    first, index 3, its two platforms, index 2 and its arm64 manifest; index 2's
    amd64 manifest is the sixth newest but stays, or `v2` would be broken."""
    reg = new_registry("cix")
    name = f"{reg}/app"
    releases = []
    for n in (1, 2, 3):
        amd, arm = small_image(arch="amd64"), small_image(arch="arm64")
        push_tags(http, name, amd, f"v{n}-amd64")
        time.sleep(GAP)
        push_tags(http, name, arm, f"v{n}-arm64")
        time.sleep(GAP)
        index = push_index(
            http, name,
            [(amd, {"architecture": "amd64", "os": "linux"}), (arm, {"architecture": "arm64", "os": "linux"})],
            tag=f"v{n}",
        )
        time.sleep(GAP)
        releases.append((amd, arm, sha256_digest(index)))
    cp = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 5)["id"]
    (amd1, arm1, index1), (amd2, _, index2), _ = releases

    run = run_cleanup(http, reg)
    assert summary(run) == {"artifacts_deleted": 3, "tags_deleted": 3, "artifacts_protected": 0, "errors": 0}
    details = cleanup_run_details(http, reg, run["id"])
    # The index goes before what it lists: no moment has it naming a deleted manifest.
    assert [(d["digest"], d["action"]) for d in details] == [
        (index1, "deleted"), (amd1.digest, "deleted"), (arm1.digest, "deleted"), (amd2.digest, "kept")], details
    kept = details[3]
    assert kept["policy"] == cp and index2 in kept["reason"], kept
    for digest in (index1, amd1.digest, arm1.digest):
        assert_status(http.get_manifest(name, digest), 404)
    # v2 still resolves on every platform.
    listed = http.get_manifest(name, "v2").json()["manifests"]
    for entry in listed:
        assert_status(http.get_manifest(name, entry["digest"]), 200)
    assert dp_tags(http, name) == sorted(
        f"v{n}{suffix}" for n in (2, 3) for suffix in ("", "-amd64", "-arm64"))


def test_image_pattern_limits_the_images(http, new_registry):
    reg = new_registry("cim")
    pushed = {}
    for image in ("team/app", "team/web", "other", "team/sub/x"):
        pushed[image] = push_series(http, f"{reg}/{image}", ["old", "new"], gap=GAP)
    cp = create_cleanup_policy(http, reg, "team/*", "keep_last_pushed", 1)["id"]

    run = run_cleanup(http, reg)
    expected = {pushed[i][0].digest: (i, ["old"]) for i in ("team/app", "team/web")}
    assert_details(cleanup_run_details(http, reg, run["id"]), expected, "deleted", cp)
    assert summary(run)["artifacts_deleted"] == 2
    for image, (old, new) in pushed.items():
        if image in ("team/app", "team/web"):
            assert dp_tags(http, f"{reg}/{image}") == ["new"], image
            assert_status(http.get_manifest(f"{reg}/{image}", old.digest), 404)
        else:
            assert dp_tags(http, f"{reg}/{image}") == ["new", "old"], image
            assert http.get_manifest(f"{reg}/{image}", old.digest).content == old.manifest


def test_delete_untagged(http, new_registry):
    reg = new_registry("cun")
    name = f"{reg}/app"
    tagged = small_image()
    push_tags(http, name, tagged, "v1")
    loose1, loose2 = small_image(), small_image()
    push_tags(http, name, loose1)
    push_tags(http, name, loose2)
    amd, arm = small_image(arch="amd64"), small_image(arch="arm64")
    index = push_index(
        http, name,
        [(amd, {"architecture": "amd64", "os": "linux"}), (arm, {"architecture": "arm64", "os": "linux"})],
        tag="multi",
    )
    sig = make_artifact("application/vnd.example.signature.v1", tagged.descriptor())
    http.push_image(name, sig)
    # A referrer whose subject is not in the image is just untagged.
    orphan = make_artifact("application/vnd.example.signature.v1", small_image().descriptor())
    http.push_image(name, orphan)
    elsewhere = small_image()
    push_tags(http, f"{reg}/other", elsewhere)
    # tag_pattern is ignored by delete_untagged.
    p = create_cleanup_policy(http, reg, "app", "delete_untagged", tag_pattern="nomatch")
    assert p["value"] is None
    cp = p["id"]
    expected = {d: ("app", []) for d in (loose1.digest, loose2.digest, orphan.digest)}

    dry = run_cleanup(http, reg, dry_run=True)
    assert_details(cleanup_run_details(http, reg, dry["id"]), expected, "would_delete", cp)
    assert summary(dry) == {"artifacts_deleted": 3, "tags_deleted": 0, "artifacts_protected": 0, "errors": 0}
    for d in expected:
        assert_status(http.get_manifest(name, d), 200)

    real = run_cleanup(http, reg)
    assert_details(cleanup_run_details(http, reg, real["id"]), expected, "deleted", cp)
    assert summary(real) == {"artifacts_deleted": 3, "tags_deleted": 0, "artifacts_protected": 0, "errors": 0}
    for d in expected:
        assert_status(http.get_manifest(name, d), 404)
    for img in (tagged, amd, arm, sig):
        assert http.get_manifest(name, img.digest).content == img.manifest
    assert http.get_manifest(name, sha256_digest(index)).content == index
    assert http.get_manifest(f"{reg}/other", elsewhere.digest).content == elsewhere.manifest
    r = http.get(f"/v2/{name}/referrers/{tagged.digest}")
    assert_status(r, 200)
    assert [m["digest"] for m in r.json()["manifests"]] == [sig.digest]
    assert dp_tags(http, name) == ["multi", "v1"]


def test_delete_untagged_leaves_recent_pushes(make_server):
    """A multi-arch push uploads its platform manifests, untagged, before the
    index: delete_untagged leaves artifacts pushed within `untagged_grace`."""
    reg = "ugrace"
    # The grace must outlast two pushes and a cleanup run on a loaded debug
    # build: 2 s was tight enough to be a suspect in a one-off failure.
    srv = make_server(registries=[reg], extra_args=["--untagged-grace", "6"], label="untagged-grace")
    c = srv.client()
    name = f"{reg}/app"
    amd, arm = small_image(arch="amd64"), small_image(arch="arm64")
    push_tags(c, name, amd)
    push_tags(c, name, arm)
    cp = create_cleanup_policy(c, reg, "app", "delete_untagged")["id"]

    early = run_cleanup(c, reg)
    assert cleanup_run_details(c, reg, early["id"]) == []
    assert summary(early) == {"artifacts_deleted": 0, "tags_deleted": 0, "artifacts_protected": 0, "errors": 0}
    for img in (amd, arm):
        assert c.get_manifest(name, img.digest).content == img.manifest

    time.sleep(6.5)
    # The index arrives (listing amd64 only); arm64 stays untagged past the grace.
    push_index(c, name, [(amd, {"architecture": "amd64", "os": "linux"})], tag="multi")
    late = run_cleanup(c, reg)
    assert_details(cleanup_run_details(c, reg, late["id"]), {arm.digest: ("app", [])}, "deleted", cp)
    assert_status(c.get_manifest(name, arm.digest), 404)
    assert c.get_manifest(name, amd.digest).content == amd.manifest


def test_a_stop_in_the_middle_of_a_run_records_its_details_and_its_end(make_server):
    """SIGTERM while a run deletes: the stop cancels the run, which still
    writes the details of what it deleted (fewer than a batch), its own end
    and a summary of what it did. Before, both writes were refused for the
    cancelled task: those details were lost, the run had no finished_at, and
    an interrupted run's summary was empty."""
    reg = "cstop"
    srv = make_server(registries=[reg], label="cleanup-stop")
    c = srv.client()
    name, n = f"{reg}/app", 600
    push_series(c, name, [f"t{i:03d}" for i in range(n)], gap=0)
    create_cleanup_policy(c, reg, "app", "keep_last_pushed", 1)
    run = start_cleanup_run(c, reg)
    wait_until(lambda: len(dp_tags(c, name)) < n - 10, 60, interval=0.02, message="the run to delete some artifacts")
    srv.terminate()
    srv.start()
    ended = api_get_json(c, runs_path(reg, f"/{run['id']}"))
    assert ended["status"] == "interrupted", ended
    assert ended["finished_at"] is not None, ended
    deleted = n - len(dp_tags(c, name))
    assert 10 < deleted < n - 1, (deleted, ended)
    details = cleanup_run_details(c, reg, run["id"])
    assert [d["action"] for d in details] == ["deleted"] * deleted, (deleted, len(details), details[-3:])
    # Its summary counts what it did before the stop.
    assert summary(ended) == {"artifacts_deleted": deleted, "tags_deleted": deleted, "artifacts_protected": 0, "errors": 0}, ended


def test_recent_pushes_and_pulls_are_kept(http, new_registry):
    reg = new_registry("cw")
    recent = push_series(http, f"{reg}/recent", ["r1", "r2", "r3"], gap=0)
    assert_status(http.get_manifest(f"{reg}/recent", "r1"), 200)  # pulled once; r2, r3 never
    old, new = push_series(http, f"{reg}/control", ["c1", "c2"], gap=GAP)
    create_cleanup_policy(http, reg, "recent", "keep_pushed_within_days", 1)
    create_cleanup_policy(http, reg, "recent", "keep_pulled_within_days", 1)
    control = create_cleanup_policy(http, reg, "control", "keep_last_pushed", 1)["id"]

    run = run_cleanup(http, reg)
    # Only the control policy deletes anything: the run did evaluate policies.
    assert_details(cleanup_run_details(http, reg, run["id"]), {old.digest: ("control", ["c1"])}, "deleted", control)
    assert dp_tags(http, f"{reg}/recent") == ["r1", "r2", "r3"]
    for img in recent:
        assert http.get_manifest(f"{reg}/recent", img.digest).content == img.manifest
    assert dp_tags(http, f"{reg}/control") == ["c2"]


def test_protection_wins(http, new_registry):
    reg = new_registry("cp")
    name = f"{reg}/app"
    a1, a2, a3 = push_series(http, name, ["v1", "v2", "v3"], gap=GAP)
    pp = create_protection_policy(http, reg, "app", "v1")["id"]
    cp = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 1)["id"]

    for dry_run, action in ((True, "would_delete"), (False, "deleted")):
        run = run_cleanup(http, reg, dry_run=dry_run)
        by = details_by_digest(cleanup_run_details(http, reg, run["id"]))
        assert set(by) == {a1.digest, a2.digest}, by
        assert (by[a1.digest]["action"], by[a1.digest]["policy"]) == ("protected", pp), by[a1.digest]
        assert (by[a2.digest]["action"], by[a2.digest]["policy"]) == (action, cp), by[a2.digest]
        s = summary(run)
        assert (s["artifacts_deleted"], s["tags_deleted"], s["errors"]) == (1, 1, 0), s
        assert s["artifacts_protected"] >= 1, s

    assert tag_map(http, reg, "app") == {"v1": a1.digest, "v3": a3.digest}
    assert http.get_manifest(name, a1.digest).content == a1.manifest
    assert_status(http.get_manifest(name, a2.digest), 404)


def test_cosign_signatures_go_with_their_image_and_take_no_place(http, new_registry):
    """cosign's tag scheme: each release v1..v4 has a signature tagged
    sha256-<hex>.sig (no subject field). keep_last_pushed 2 over every tag
    keeps v3 and v4 (signatures take no place), v1 is protected and keeps its
    signature, and v2 goes with its signature."""
    reg = new_registry("cs")
    name = f"{reg}/app"
    releases, signatures = [], []
    for tag in ("v1", "v2", "v3", "v4"):
        (img,) = push_series(http, name, [tag])
        time.sleep(GAP)
        sig = make_artifact("application/vnd.dev.cosign.artifact.sig.v1+json", None)
        sig_tag = "sha256-" + img.digest.split(":", 1)[1] + ".sig"
        push_tags(http, name, sig, sig_tag)
        time.sleep(GAP)
        releases.append((img, tag))
        signatures.append((sig, sig_tag))
    pp = create_protection_policy(http, reg, "app", "v1")["id"]
    cp = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 2, tag_pattern="*")["id"]
    (v1, _), (v2, _), (v3, _), (v4, _) = releases
    (s1, t1), (s2, t2), (s3, t3), (s4, t4) = signatures

    for dry_run, action in ((True, "would_delete"), (False, "deleted")):
        run = run_cleanup(http, reg, dry_run=dry_run)
        details = cleanup_run_details(http, reg, run["id"])
        by = details_by_digest(details)
        assert set(by) == {v1.digest, v2.digest, s1.digest, s2.digest}, by
        assert (by[v1.digest]["action"], by[v1.digest]["policy"]) == ("protected", pp), by[v1.digest]
        assert (by[v2.digest]["action"], by[v2.digest]["policy"]) == (action, cp), by[v2.digest]
        assert (by[s2.digest]["action"], by[s2.digest]["tags"]) == (action, [t2]), by[s2.digest]
        assert f"attached to {v2.digest}" in by[s2.digest]["reason"], by[s2.digest]
        assert by[s1.digest]["action"] == "kept" and v1.digest in by[s1.digest]["reason"], by[s1.digest]
        # The signature goes after its image.
        order = [d["digest"] for d in details]
        assert order.index(v2.digest) < order.index(s2.digest), order
        s = summary(run)
        assert (s["artifacts_deleted"], s["tags_deleted"], s["artifacts_protected"], s["errors"]) == (2, 2, 1, 0), s

    assert tag_map(http, reg, "app") == {
        "v1": v1.digest, t1: s1.digest, "v3": v3.digest, t3: s3.digest, "v4": v4.digest, t4: s4.digest}
    for gone in (v2, s2):
        assert_status(http.get_manifest(name, gone.digest), 404)


def test_a_signature_stays_with_its_image_kept_in_another_image(http, new_registry):
    """The same manifest in images a and b: the run deletes it from a, but b
    protects it, so b's signature of it stays (what the run deleted is
    counted per image)."""
    reg = new_registry("cx")
    shared = small_image()
    for image in ("a", "b"):
        push_tags(http, f"{reg}/{image}", shared, "v1")
        time.sleep(GAP)
        push_series(http, f"{reg}/{image}", ["v2", "v3"], gap=GAP)
    sig = make_artifact("application/vnd.dev.cosign.artifact.sig.v1+json", None)
    sig_tag = "sha256-" + shared.digest.split(":", 1)[1] + ".sig"
    push_tags(http, f"{reg}/b", sig, sig_tag)
    create_protection_policy(http, reg, "b", "v1")
    create_cleanup_policy(http, reg, "**", "keep_last_pushed", 2)

    run = run_cleanup(http, reg)
    assert_status(http.get_manifest(f"{reg}/a", shared.digest), 404)
    assert tag_map(http, reg, "b")["v1"] == shared.digest
    assert tag_map(http, reg, "b")[sig_tag] == sig.digest, cleanup_run_details(http, reg, run["id"])
    assert http.get_manifest(f"{reg}/b", sig.digest).content == sig.manifest


def test_disabled_policies_do_nothing_and_any_policy_deletes(http, new_registry):
    reg = new_registry("cx")
    name = f"{reg}/app"
    a, b, c = push_series(http, name, ["a", "b", "c"], gap=GAP)
    create_cleanup_policy(http, reg, "app", "keep_last_pushed", 5)
    strict = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 1, enabled=False)["id"]

    run = run_cleanup(http, reg)
    assert summary(run)["artifacts_deleted"] == 0
    assert cleanup_run_details(http, reg, run["id"]) == []
    assert dp_tags(http, name) == ["a", "b", "c"]

    assert_status(http.patch(cp_path(reg, strict), json={"enabled": True}), 200)
    run = run_cleanup(http, reg)
    expected = {a.digest: ("app", ["a"]), b.digest: ("app", ["b"])}
    assert_details(cleanup_run_details(http, reg, run["id"]), expected, "deleted", strict)
    assert dp_tags(http, name) == ["c"]


def test_run_without_policies_deletes_nothing(http, new_registry):
    reg = new_registry("cn")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    push_tags(http, f"{reg}/app", small_image())
    run = run_cleanup(http, reg)
    assert summary(run) == {"artifacts_deleted": 0, "tags_deleted": 0, "artifacts_protected": 0, "errors": 0}
    assert len(artifact_digests(http, reg, "app")) == 2


def test_second_start_while_running(http, new_registry):
    reg = new_registry("cj")
    name = f"{reg}/app"
    imgs = push_series(http, name, ["a", "b", "c"], gap=GAP)
    create_cleanup_policy(http, reg, "app", "keep_last_pushed", 1)
    first = start_cleanup_run(http, reg)
    started = [first["id"]]
    r = http.post(runs_path(reg), json={"dry_run": False})
    if r.status_code == 409:
        body = assert_problem(r, 409, "JOB_RUNNING")
        assert first["id"] in (body.get("detail") or ""), body
    else:
        assert_status(r, 202)
        started.append(r.json()["id"])
        assert started[1] != started[0]
    for run_id in started:
        assert wait_cleanup_run(http, reg, run_id)["status"] == "succeeded"
    assert dp_tags(http, name) == ["c"]
    assert artifact_digests(http, reg, "app") == {imgs[2].digest}


def test_unknown_run(http, new_registry):
    reg, other = new_registry("cq"), new_registry("cq")
    assert_problem(http.get(runs_path(reg, f"/{MISSING_RUN}")), 404, "NOT_FOUND")
    assert_problem(http.get(runs_path(reg, f"/{MISSING_RUN}/details")), 404, "NOT_FOUND")
    # A run of another registry is not one of this registry.
    run = run_cleanup(http, other, dry_run=True)
    assert_problem(http.get(runs_path(reg, f"/{run['id']}")), 404, "NOT_FOUND")
    runs, _ = api_list_all(http, runs_path(reg))
    assert runs == []


def test_runs_of_a_deleted_registry_go_with_it(http, new_registry):
    # A registry created again under a deleted one's name does not show the old one's runs.
    reg = new_registry("cw")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    create_cleanup_policy(http, reg, "app", "keep_last_pushed", 1)
    run = run_cleanup(http, reg, dry_run=True)
    assert_status(http.delete(api_registry_path(reg), params={"force": "true"}), 204)
    assert_status(http.create_registry(reg), 201)
    runs, _ = api_list_all(http, runs_path(reg))
    assert runs == []
    assert_problem(http.get(runs_path(reg, f"/{run['id']}")), 404, "NOT_FOUND")
    assert_problem(http.get(runs_path(reg, f"/{run['id']}/details")), 404, "NOT_FOUND")
    mine = run_cleanup(http, reg, dry_run=True)
    assert [r["id"] for r in api_list_all(http, runs_path(reg))[0]] == [mine["id"]]


def test_out_of_range_ids_and_cursors(http, new_registry):
    """Ids and cursors outside what the server stores are a 404 or a 400,
    never a crash (the server still answers afterwards)."""
    reg = new_registry("cr")
    run = run_cleanup(http, reg, dry_run=True)
    for bad_id in ("-1", "-9223372036854775808", "9223372036854775807", "99999999999999999999", "1e3"):
        assert_problem(http.get(runs_path(reg, f"/{bad_id}")), 404, "NOT_FOUND")
        assert_problem(http.get(runs_path(reg, f"/{bad_id}/details")), 404, "NOT_FOUND")
    for cursor in ("-1", "x", "99999999999999999999"):
        assert_problem(http.get(runs_path(reg), params={"cursor": cursor}), 400, "INVALID_REQUEST")
    for cursor in ("-1", "4294967296", "99999999999"):
        assert_problem(http.get(runs_path(reg, f"/{run['id']}/details"), params={"cursor": cursor}), 400, "INVALID_REQUEST")
    for cursor in ("-1", "x"):
        r = http.get(api_registry_path(reg, "/old-tags"), params={"before": "2030-01-01T00:00:00Z", "cursor": cursor})
        assert_problem(r, 400, "INVALID_REQUEST")
    assert_status(http.get(runs_path(reg, f"/{run['id']}")), 200)
    assert_status(http.get("/api/v1/system/gc/runs", params={"cursor": "9223372036854775807"}), 200)
    assert_problem(http.get("/api/v1/system/gc/runs", params={"cursor": "-5"}), 400, "INVALID_REQUEST")


# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------


def put_cron(client, reg: str, cron):
    return client.put(sched_path(reg), json={"cron": cron})


def next_run(body: dict, cron: str, not_before: float) -> datetime:
    assert body.get("cron") == cron, body
    ts = parse_rfc3339(body["next_run_at"])
    assert ts > not_before - 1, f"next_run_at {body['next_run_at']} is not in the future"
    return datetime.fromtimestamp(ts, timezone.utc)


def test_schedule_set_and_clear(http, new_registry):
    reg = new_registry("cs")
    assert api_get_json(http, sched_path(reg)) == {"cron": None, "next_run_at": None}

    now = time.time()
    r = put_cron(http, reg, "0 4 * * *")
    assert_status(r, 200)
    at = next_run(r.json(), "0 4 * * *", now)
    assert (at.hour, at.minute, at.second) == (4, 0, 0), at
    assert at.timestamp() <= now + 86400 + CLOCK_SLACK, at
    assert api_get_json(http, sched_path(reg)) == r.json()

    r = put_cron(http, reg, None)
    assert_status(r, 200)
    assert r.json() == {"cron": None, "next_run_at": None}
    assert api_get_json(http, sched_path(reg)) == {"cron": None, "next_run_at": None}


DAY = 86400
WEEKDAYS = range(0, 5)  # datetime.weekday(): Monday 0 ... Sunday 6
SUNDAY = 6

# cron -> (check of the next run, at most this many seconds ahead)
CRON_CASES = {
    "*/15 * * * *": (lambda t: t.minute % 15 == 0 and t.second == 0, 15 * 60),
    "5/20 * * * *": (lambda t: t.minute in (5, 25, 45), 20 * 60),
    "10-20/5 3 * * *": (lambda t: (t.hour, t.minute) in ((3, 10), (3, 15), (3, 20)), DAY),
    "0,30 9-17 * * 1-5": (lambda t: t.minute in (0, 30) and 9 <= t.hour <= 17 and t.weekday() in WEEKDAYS, 3 * DAY),
    "* * * JAN-MAR MON-FRI": (lambda t: t.month in (1, 2, 3) and t.weekday() in WEEKDAYS, 366 * DAY),
    "0 0 ? * SUN": (lambda t: t.weekday() == SUNDAY and (t.hour, t.minute) == (0, 0), 7 * DAY),
    "30 12 * jan,Jul sun": (lambda t: t.month in (1, 7) and t.weekday() == SUNDAY and (t.hour, t.minute) == (12, 30),
                            366 * DAY),
    # Both day fields restricted: a day matching either runs.
    "0 0 1 * MON": (lambda t: (t.day == 1 or t.weekday() == 0) and (t.hour, t.minute) == (0, 0), 7 * DAY),
}


@pytest.mark.parametrize("cron", list(CRON_CASES))
def test_schedule_next_run_follows_the_cron(http, new_registry, cron):
    reg = new_registry("cs")
    check, ahead = CRON_CASES[cron]
    now = time.time()
    r = put_cron(http, reg, cron)
    assert_status(r, 200)
    at = next_run(r.json(), cron, now)
    try:
        assert at.second == 0 and check(at), f"{cron!r}: next_run_at {r.json()['next_run_at']}"
        assert at.timestamp() <= now + ahead + CLOCK_SLACK, f"{cron!r}: next_run_at {r.json()['next_run_at']} too late"
        assert api_get_json(http, sched_path(reg)) == r.json()
    finally:
        assert_status(put_cron(http, reg, None), 200)


def test_schedule_that_never_fires(http, new_registry):
    """A valid expression matching no day (February 31st) is accepted, with
    no next run (api-spec/openapi.yaml, Schedule)."""
    reg = new_registry("cs")
    r = put_cron(http, reg, "0 0 31 2 *")
    assert_status(r, 200)
    assert r.json() == {"cron": "0 0 31 2 *", "next_run_at": None}
    assert_status(put_cron(http, reg, None), 200)


# cron -> pattern the detail must match (the field it names)
BAD_CRONS = {
    "61 * * * *": r"minute",
    "*/0 * * * *": r"minute",
    "? * * * *": r"minute",
    "* 24 * * *": r"hour",
    "* * 0 * *": r"day[-_ ]?of[-_ ]?month",
    "* * 32 * *": r"day[-_ ]?of[-_ ]?month",
    "* * * 13 *": r"month",
    "* * * FOO *": r"month",
    "* * * * 7": r"day[-_ ]?of[-_ ]?week",
    "* * * * MON-XYZ": r"day[-_ ]?of[-_ ]?week",
}


def test_invalid_cron(http, new_registry):
    reg = new_registry("ci")
    r = put_cron(http, reg, "0 4 * * *")
    assert_status(r, 200)
    before = r.json()
    for cron, named in BAD_CRONS.items():
        body = assert_problem(put_cron(http, reg, cron), 400, "INVALID_CRON")
        assert re.search(named, body.get("detail") or "", re.I), f"{cron!r}: the detail should name the field: {body!r}"
    for cron in ("0 4 * *", "0 4 * * * *", "", "   ", "@daily"):
        assert_problem(put_cron(http, reg, cron), 400, "INVALID_CRON")
    for body in ({"cron": 5}, {"cron": ["0 4 * * *"]}):
        assert_problem(http.put(sched_path(reg), json=body), 400)
    assert api_get_json(http, sched_path(reg)) == before, "a refused schedule changes nothing"
    assert_status(put_cron(http, reg, None), 200)


# ---------------------------------------------------------------------------
# Permissions (docs/lifecycle.md, "Permissions")
# ---------------------------------------------------------------------------



@dataclass
class World:
    admin: Registry
    reg: str
    policy: dict
    run: dict
    clients: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(server, http) -> World:
    reg, other = create_registry(http, "cpa"), create_registry(http, "cpo")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    policy = create_cleanup_policy(http, reg, "app", "keep_last_pushed", 10)
    run = run_cleanup(http, reg, dry_run=True)
    w = World(admin=http, reg=reg, policy=policy, run=run)
    w.clients = scoped_clients(server, http, reg, other)
    return w


READS = {
    "policies": lambda w: cp_path(w.reg),
    "policy": lambda w: cp_path(w.reg, w.policy["id"]),
    "runs": lambda w: runs_path(w.reg),
    "run": lambda w: runs_path(w.reg, f"/{w.run['id']}"),
    "details": lambda w: runs_path(w.reg, f"/{w.run['id']}/details"),
    "schedule": lambda w: sched_path(w.reg),
}


@pytest.mark.parametrize("principal", [*READERS, OADMIN, ANON])
@pytest.mark.parametrize("route", list(READS))
def test_read_permissions(world, route, principal):
    r = world.clients[principal].get(READS[route](world))
    if principal not in READERS:
        assert_refused(r, principal)
        return
    assert_status(r, 200)
    assert r.json() == world.admin.get(READS[route](world)).json()


WRITES = ("create-policy", "patch-policy", "delete-policy", "start-run", "put-schedule")


@pytest.mark.parametrize("principal", [VIEWER, UPLOADER, OADMIN, ANON, RADMIN])
@pytest.mark.parametrize("op", WRITES)
def test_write_permissions(world, op, principal):
    admin, reg, c = world.admin, world.reg, world.clients[principal]
    target = create_cleanup_policy(admin, reg, unique("img"), "delete_untagged")
    new_image = unique("img")
    runs_before, _ = api_list_all(admin, runs_path(reg))
    if op == "create-policy":
        r = c.post(cp_path(reg), json={"image_pattern": new_image, "rule": "delete_untagged"})
    elif op == "patch-policy":
        r = c.patch(cp_path(reg, target["id"]), json={"enabled": False})
    elif op == "delete-policy":
        r = c.delete(cp_path(reg, target["id"]))
    elif op == "start-run":
        r = c.post(runs_path(reg), json={"dry_run": True})
    else:
        r = c.put(sched_path(reg), json={"cron": "0 4 * * *"})
    after = {p["image_pattern"]: p for p in policies(admin, reg)}

    if principal == RADMIN:
        if op == "create-policy":
            assert_status(r, 201)
            assert after[new_image] == r.json()
        elif op == "patch-policy":
            assert_status(r, 200)
            assert after[target["image_pattern"]]["enabled"] is False
        elif op == "delete-policy":
            assert_status(r, 204)
            assert target["image_pattern"] not in after
        elif op == "start-run":
            assert_status(r, 202)
            assert wait_cleanup_run(admin, reg, r.json()["id"])["status"] == "succeeded"
        else:
            assert_status(r, 200)
            assert api_get_json(admin, sched_path(reg))["cron"] == "0 4 * * *"
            assert_status(put_cron(admin, reg, None), 200)
        return

    assert_refused(r, principal)
    assert new_image not in after
    assert after[target["image_pattern"]] == target
    runs_after, _ = api_list_all(admin, runs_path(reg))
    assert [x["id"] for x in runs_after] == [x["id"] for x in runs_before], "a refused start starts nothing"
    assert api_get_json(admin, sched_path(reg)) == {"cron": None, "next_run_at": None}
