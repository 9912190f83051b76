"""Protection policies (docs/lifecycle.md, "Protection policies" and
"Patterns"): CRUD and validation, what a policy protects (checked through the
`protected` flag of the old-tags listing), enforcement on the admin API and
the data plane, and who may read and change policies.

Every test works in a registry of its own on the shared server, except the
pattern cases (one module registry, each case removes its policy) and the
permission cases (one module registry).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from helpers import (
    MT_OCI_INDEX,
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
    assert_oci_error,
    assert_problem,
    assert_status,
    create_protection_policy,
    create_registry,
    list_old_tags,
    parse_rfc3339,
    push_index,
    push_tags,
    rfc3339,
    sha256_digest,
    unique,
)

CLOCK_SLACK = 2
POLICY_FIELDS = {"id", "image_pattern", "tag_pattern", "enabled", "created_at"}
MISSING_ID = "pp-000000000000"



def pp_path(reg: str, pid: str | None = None) -> str:
    return api_registry_path(reg, "/protection-policies" + (f"/{pid}" if pid else ""))


def policies(client, reg: str) -> list[dict]:
    r = client.get(pp_path(reg))
    assert_status(r, 200)
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("items"), list), body
    return body["items"]


def tag_map(client, reg: str, image: str) -> dict[str, str]:
    items, _ = api_list_all(client, api_image_path(reg, image, "/tags"))
    return {t["name"]: t["digest"] for t in items}


def post_tag(client, reg: str, image: str, name: str, digest: str):
    return client.post(api_image_path(reg, image, "/tags"), json={"name": name, "digest": digest})


def assert_protected(resp, pid: str, *mentions: str) -> dict:
    """Admin API refusal: 409 PROTECTED whose detail names the policy."""
    body = assert_problem(resp, 409, "PROTECTED")
    detail = body.get("detail") or ""
    assert pid in detail, f"the detail should name policy {pid}: {detail!r}"
    for m in mentions:
        assert m in detail, f"the detail should mention {m!r}: {detail!r}"
    return body


def assert_denied(resp, pid: str) -> dict:
    """Data-plane refusal: 403 DENIED whose message names the policy."""
    err = assert_oci_error(resp, 403, "DENIED")
    assert pid in err.get("message", ""), f"the message should name policy {pid}: {err!r}"
    return err


def assert_policy_shape(p: dict) -> None:
    assert POLICY_FIELDS <= set(p), p
    assert isinstance(p["id"], str) and p["id"].startswith("pp-"), p
    assert isinstance(p["enabled"], bool), p
    parse_rfc3339(p["created_at"])


# ---------------------------------------------------------------------------
# CRUD
# ---------------------------------------------------------------------------


def test_create_returns_the_policy_and_its_location(http, new_registry):
    reg = new_registry("pc")
    t0 = time.time()
    r = http.post(pp_path(reg), json={"image_pattern": "app*", "tag_pattern": "v*"})
    t1 = time.time()
    assert_status(r, 201)
    p = r.json()
    assert_policy_shape(p)
    assert (p["image_pattern"], p["tag_pattern"], p["enabled"]) == ("app*", "v*", True), p
    assert t0 - CLOCK_SLACK <= parse_rfc3339(p["created_at"]) <= t1 + CLOCK_SLACK, p

    loc = http.abs_location(r)
    got = http.get(loc)
    assert_status(got, 200)
    assert got.json() == p
    assert api_get_json(http, pp_path(reg, p["id"])) == p
    assert policies(http, reg) == [p]


def test_create_defaults(http, new_registry):
    reg = new_registry("pd")
    p = create_protection_policy(http, reg, "app")
    assert (p["image_pattern"], p["tag_pattern"], p["enabled"]) == ("app", "**", True), p
    q = create_protection_policy(http, reg, "team/**", "v*", enabled=False)
    assert (q["image_pattern"], q["tag_pattern"], q["enabled"]) == ("team/**", "v*", False), q
    assert p["id"] != q["id"]
    assert {x["id"]: x for x in policies(http, reg)} == {p["id"]: p, q["id"]: q}


def test_list_get_patch_delete(http, new_registry):
    reg = new_registry("pl")
    p1 = create_protection_policy(http, reg, "app", "v*")
    p2 = create_protection_policy(http, reg, "base", "latest")
    listed = {x["id"]: x for x in policies(http, reg)}
    assert listed == {p1["id"]: p1, p2["id"]: p2}
    for p in (p1, p2):
        assert api_get_json(http, pp_path(reg, p["id"])) == p

    r = http.patch(pp_path(reg, p1["id"]), json={"tag_pattern": "release-*"})
    assert_status(r, 200)
    assert r.json() == {**p1, "tag_pattern": "release-*"}
    r = http.patch(pp_path(reg, p1["id"]), json={"enabled": False})
    assert_status(r, 200)
    assert r.json() == {**p1, "tag_pattern": "release-*", "enabled": False}
    r = http.patch(pp_path(reg, p1["id"]), json={"image_pattern": "team/**", "tag_pattern": "v?", "enabled": True})
    assert_status(r, 200)
    changed = {**p1, "image_pattern": "team/**", "tag_pattern": "v?", "enabled": True}
    assert r.json() == changed
    assert api_get_json(http, pp_path(reg, p1["id"])) == changed
    assert api_get_json(http, pp_path(reg, p2["id"])) == p2, "the other policy is untouched"

    assert_status(http.delete(pp_path(reg, p1["id"])), 204)
    assert_problem(http.get(pp_path(reg, p1["id"])), 404, "NOT_FOUND")
    assert policies(http, reg) == [p2]
    assert_problem(http.delete(pp_path(reg, p1["id"])), 404, "NOT_FOUND")
    assert_problem(http.patch(pp_path(reg, p1["id"]), json={"enabled": False}), 404, "NOT_FOUND")


def test_unknown_policy_and_registry(http, new_registry):
    reg = new_registry("pu")
    assert_problem(http.get(pp_path(reg, MISSING_ID)), 404, "NOT_FOUND")
    assert_problem(http.patch(pp_path(reg, MISSING_ID), json={"enabled": False}), 404, "NOT_FOUND")
    assert_problem(http.delete(pp_path(reg, MISSING_ID)), 404, "NOT_FOUND")
    # A policy of another registry is not one of this registry.
    other = new_registry("pu")
    p = create_protection_policy(http, other, "app")
    assert_problem(http.get(pp_path(reg, p["id"])), 404, "NOT_FOUND")
    assert_problem(http.delete(pp_path(reg, p["id"])), 404, "NOT_FOUND")
    assert api_get_json(http, pp_path(other, p["id"])) == p
    ghost = unique("ghost")
    assert_problem(http.get(pp_path(ghost)), 404, "NOT_FOUND")
    assert_problem(http.post(pp_path(ghost), json={"image_pattern": "app"}), 404, "NOT_FOUND")


def test_duplicate_patterns_conflict(http, new_registry):
    reg = new_registry("pdup")
    p = create_protection_policy(http, reg, "app", "v*")
    assert_problem(http.post(pp_path(reg), json={"image_pattern": "app", "tag_pattern": "v*"}), 409, "CONFLICT")
    # `enabled` is not part of the identity.
    r = http.post(pp_path(reg), json={"image_pattern": "app", "tag_pattern": "v*", "enabled": False})
    assert_problem(r, 409, "CONFLICT")
    every = create_protection_policy(http, reg, "app")  # tag_pattern "**"
    # The default tag pattern is "**": the same as spelling it out.
    assert_problem(http.post(pp_path(reg), json={"image_pattern": "app", "tag_pattern": "**"}), 409, "CONFLICT")
    other_image = create_protection_policy(http, reg, "app2", "v*")
    assert len(policies(http, reg)) == 3

    # The same patterns in another registry are fine.
    create_protection_policy(http, new_registry("pdup"), "app", "v*")

    # A PATCH that would make a duplicate.
    assert_problem(http.patch(pp_path(reg, every["id"]), json={"tag_pattern": "v*"}), 409, "CONFLICT")
    assert_problem(http.patch(pp_path(reg, other_image["id"]), json={"image_pattern": "app"}), 409, "CONFLICT")
    assert api_get_json(http, pp_path(reg, every["id"])) == every
    assert api_get_json(http, pp_path(reg, other_image["id"])) == other_image
    # A PATCH to a policy's own patterns is no conflict.
    r = http.patch(pp_path(reg, p["id"]), json={"image_pattern": "app", "tag_pattern": "v*"})
    assert_status(r, 200)
    assert r.json() == p
    # Once the first is gone, its patterns are free.
    assert_status(http.delete(pp_path(reg, p["id"])), 204)
    r = http.patch(pp_path(reg, every["id"]), json={"tag_pattern": "v*"})
    assert_status(r, 200)
    assert r.json()["tag_pattern"] == "v*"


BAD_PATTERNS = ["app{", "{v1,v2", "v1}", "v1,v2", "v1\\", "{a,{b,c}", "a}b{"]
GOOD_PATTERNS = ["{v*,release-?}", "release-{1,2}.*", "\\*", "\\{x\\}", "**/app", "{a,{b,c}}", "a\\,b", "?", "x" * 256]


@pytest.mark.parametrize("field_name", ["image_pattern", "tag_pattern"])
def test_invalid_patterns(http, new_registry, field_name):
    reg = new_registry("pinv")
    base = {"image_pattern": "app", "tag_pattern": "v*"}
    for bad in BAD_PATTERNS:
        r = http.post(pp_path(reg), json={**base, field_name: bad})
        body = assert_problem(r, 400, "INVALID_PATTERN")
        assert field_name in (body.get("detail") or ""), f"the detail should name the field: {body!r}"
    for bad in ("", "x" * 257):
        assert_problem(http.post(pp_path(reg), json={**base, field_name: bad}), 400)
    assert policies(http, reg) == []

    for i, good in enumerate(GOOD_PATTERNS):
        body = {"image_pattern": f"img{i}", "tag_pattern": f"tag{i}", field_name: good}
        r = http.post(pp_path(reg), json=body)
        assert_status(r, 201)
        assert r.json()[field_name] == good
    assert len(policies(http, reg)) == len(GOOD_PATTERNS)

    # The same rules on PATCH, which then changes nothing.
    p = create_protection_policy(http, reg, "patched", "v*")
    for bad in BAD_PATTERNS:
        body = assert_problem(http.patch(pp_path(reg, p["id"]), json={field_name: bad}), 400, "INVALID_PATTERN")
        assert field_name in (body.get("detail") or ""), body
    assert_problem(http.patch(pp_path(reg, p["id"]), json={field_name: ""}), 400)
    assert api_get_json(http, pp_path(reg, p["id"])) == p


def test_missing_or_malformed_fields(http, new_registry):
    reg = new_registry("pbad")
    for body in (
        {},
        {"tag_pattern": "v*"},
        {"image_pattern": None},
        {"image_pattern": 5},
        {"image_pattern": ["app"]},
        {"image_pattern": "app", "tag_pattern": 7},
        {"image_pattern": "app", "enabled": "yes"},
    ):
        assert_problem(http.post(pp_path(reg), json=body), 400)
    r = http.post(pp_path(reg), data=b"{not json", headers={"Content-Type": "application/json"})
    assert_problem(r, 400)
    assert policies(http, reg) == []
    p = create_protection_policy(http, reg, "app")
    assert_problem(http.patch(pp_path(reg, p["id"]), json={"enabled": "no"}), 400)
    assert_problem(http.patch(pp_path(reg, p["id"]), json={"image_pattern": 5}), 400)
    assert api_get_json(http, pp_path(reg, p["id"])) == p


# ---------------------------------------------------------------------------
# What a policy protects: patterns (docs/lifecycle.md, "Patterns"), seen
# through the `protected` flag of the old-tags listing
# ---------------------------------------------------------------------------

PATTERN_IMAGES = ["app", "app2", "base", "team", "team/app", "team/a/b", "x/app", "x/y/app"]
PATTERN_TAGS = ["v1.0", "v2.13", "v10.1", "latest", "stable", "main", "release-1.0", "release-3.0", "release-1"]

# image_pattern -> images whose tag "v1" it protects (tag_pattern "v1")
IMAGE_CASES = {
    "app": {"app"},
    "*": {"app", "app2", "base", "team"},
    "team/*": {"team/app"},
    "**": set(PATTERN_IMAGES),
    "team/**": {"team/app", "team/a/b"},
    "**/app": {"team/app", "x/app", "x/y/app"},
    "app?": {"app2"},
    "{app,base}": {"app", "base"},
    "{team,x}/**": {"team/app", "team/a/b", "x/app", "x/y/app"},
    "*/*/*": {"team/a/b", "x/y/app"},
    "App": set(),
}
# tag_pattern -> tags of image "tagbox" it protects (image_pattern "tagbox")
TAG_CASES = {
    "v?.*": {"v1.0", "v2.13"},
    "{latest,stable}": {"latest", "stable"},
    "release-{1,2}.*": {"release-1.0"},
    "{v*,release-?}": {"v1.0", "v2.13", "v10.1", "release-1"},
    "*": set(PATTERN_TAGS),
    "main": {"main"},
    "V*": set(),
    "release\\-1.0": {"release-1.0"},
    "*.*": {"v1.0", "v2.13", "v10.1", "release-1.0", "release-3.0"},
}


@pytest.fixture(scope="module")
def pattern_reg(http) -> str:
    reg = create_registry(http, "pat")
    for image in PATTERN_IMAGES:
        push_tags(http, f"{reg}/{image}", small_image(), "v1")
    push_tags(http, f"{reg}/tagbox", small_image(), *PATTERN_TAGS)
    return reg


def _protected_flags(http, reg: str) -> dict[tuple[str, str], bool]:
    items = list_old_tags(http, reg, rfc3339(time.time() + 3600), exclude_latest=False)
    flags = {(i["image"], i["tag"]): i["protected"] for i in items}
    assert len(flags) == len(PATTERN_IMAGES) + len(PATTERN_TAGS), items
    return flags


def test_nothing_is_protected_without_policies(http, pattern_reg):
    assert policies(http, pattern_reg) == []
    assert not any(_protected_flags(http, pattern_reg).values())


@pytest.mark.parametrize("pattern", list(IMAGE_CASES))
def test_image_pattern_matching(http, pattern_reg, pattern):
    p = create_protection_policy(http, pattern_reg, pattern, "v1")
    try:
        flags = _protected_flags(http, pattern_reg)
        got = {image for (image, tag), prot in flags.items() if prot}
        assert got == IMAGE_CASES[pattern], f"image pattern {pattern!r}"
    finally:
        assert_status(http.delete(pp_path(pattern_reg, p["id"])), 204)


@pytest.mark.parametrize("pattern", list(TAG_CASES))
def test_tag_pattern_matching(http, pattern_reg, pattern):
    p = create_protection_policy(http, pattern_reg, "tagbox", pattern)
    try:
        flags = _protected_flags(http, pattern_reg)
        got = {tag for (image, tag), prot in flags.items() if prot and image == "tagbox"}
        assert got == TAG_CASES[pattern], f"tag pattern {pattern!r}"
        assert not any(prot for (image, _), prot in flags.items() if image != "tagbox")
    finally:
        assert_status(http.delete(pp_path(pattern_reg, p["id"])), 204)


def test_disabled_policy_protects_nothing_in_listing(http, pattern_reg):
    p = create_protection_policy(http, pattern_reg, "**", enabled=False)
    try:
        assert not any(_protected_flags(http, pattern_reg).values())
        assert_status(http.patch(pp_path(pattern_reg, p["id"]), json={"enabled": True}), 200)
        assert all(_protected_flags(http, pattern_reg).values())
    finally:
        assert_status(http.delete(pp_path(pattern_reg, p["id"])), 204)


# ---------------------------------------------------------------------------
# Enforcement
# ---------------------------------------------------------------------------


def test_protected_tag_cannot_be_deleted(http, new_registry):
    reg = new_registry("pt")
    name = f"{reg}/app"
    a, b = small_image(), small_image()
    push_tags(http, name, a, "v1", "latest")
    push_tags(http, name, b, "dev")
    pid = create_protection_policy(http, reg, "app", "v*")["id"]

    assert_protected(http.delete(api_image_path(reg, "app", "/tags/v1")), pid, "v1")
    assert_denied(http.delete(f"/v2/{name}/manifests/v1"), pid)
    assert tag_map(http, reg, "app") == {"v1": a.digest, "latest": a.digest, "dev": b.digest}
    assert http.get_manifest(name, "v1").content == a.manifest

    # Tags outside the pattern are not protected, even on a protected artifact.
    assert_status(http.delete(api_image_path(reg, "app", "/tags/latest")), 204)
    assert_status(http.delete(f"/v2/{name}/manifests/dev"), 202)
    assert tag_map(http, reg, "app") == {"v1": a.digest}


def test_protected_artifact_and_its_image_cannot_be_deleted(http, new_registry):
    reg = new_registry("pa")
    name = f"{reg}/team/app"
    a, b, loose = small_image(), small_image(), small_image()
    push_tags(http, name, a, "v1")
    push_tags(http, name, b, "dev")
    push_tags(http, name, loose)
    pid = create_protection_policy(http, reg, "team/*", "v1")["id"]

    assert_protected(http.delete(api_image_path(reg, "team/app", f"/artifacts/{a.digest}")), pid)
    assert_denied(http.delete(f"/v2/{name}/manifests/{a.digest}"), pid)
    assert_protected(http.delete(api_image_path(reg, "team/app")), pid)
    assert http.get_manifest(name, "v1").content == a.manifest
    assert http.get_manifest(name, a.digest).content == a.manifest
    img = api_get_json(http, api_image_path(reg, "team/app"))
    assert (img["artifacts"], img["tags"]) == (3, 2), img

    # Unprotected artifacts of the same image go as usual.
    assert_status(http.delete(api_image_path(reg, "team/app", f"/artifacts/{b.digest}")), 204)
    assert_status(http.delete(f"/v2/{name}/manifests/{loose.digest}"), 202)
    assert_status(http.get_manifest(name, b.digest), 404)
    assert_status(http.get_manifest(name, loose.digest), 404)
    assert tag_map(http, reg, "team/app") == {"v1": a.digest}


def test_protected_tag_cannot_move(http, new_registry):
    reg = new_registry("pm")
    name = f"{reg}/app"
    a, b = small_image(), small_image()
    push_tags(http, name, a, "v1")
    push_tags(http, name, b)  # by digest
    pid = create_protection_policy(http, reg, "app", "v*")["id"]

    # Data plane: a push that would move the tag.
    assert_denied(http.put_manifest(name, "v1", b.manifest), pid)
    assert http.get_manifest(name, "v1").content == a.manifest
    # Admin API.
    assert_protected(post_tag(http, reg, "app", "v1", b.digest), pid, "v1")
    assert tag_map(http, reg, "app") == {"v1": a.digest}

    # The same digest again is no move.
    assert_status(http.put_manifest(name, "v1", a.manifest), 201)
    assert_status(post_tag(http, reg, "app", "v1", a.digest), 201)
    assert tag_map(http, reg, "app") == {"v1": a.digest}

    # A new tag matching the policy is created, and protected from then on.
    assert_status(http.put_manifest(name, "v2", b.manifest), 201)
    assert_status(post_tag(http, reg, "app", "v3", a.digest), 201)
    assert tag_map(http, reg, "app") == {"v1": a.digest, "v2": b.digest, "v3": a.digest}
    assert_denied(http.put_manifest(name, "v2", a.manifest), pid)
    assert_protected(post_tag(http, reg, "app", "v3", b.digest), pid, "v3")
    assert_protected(http.delete(api_image_path(reg, "app", "/tags/v2")), pid, "v2")
    assert_denied(http.delete(f"/v2/{name}/manifests/v3"), pid)

    # A tag outside the pattern still moves.
    assert_status(http.put_manifest(name, "dev", a.manifest), 201)
    assert_status(http.put_manifest(name, "dev", b.manifest), 201)
    assert_status(post_tag(http, reg, "app", "dev", a.digest), 201)
    assert tag_map(http, reg, "app") == {"v1": a.digest, "v2": b.digest, "v3": a.digest, "dev": a.digest}


def test_protected_index_protects_its_platform_manifests(http, new_registry):
    reg = new_registry("pi")
    name = f"{reg}/app"
    amd, arm = small_image(arch="amd64"), small_image(arch="arm64")
    index = push_index(
        http, name,
        [(amd, {"architecture": "amd64", "os": "linux"}), (arm, {"architecture": "arm64", "os": "linux"})],
        tag="v1",
    )
    idx = sha256_digest(index)
    other_amd = small_image(arch="amd64")
    other_index = push_index(http, name, [(other_amd, {"architecture": "amd64", "os": "linux"})], tag="dev")
    pid = create_protection_policy(http, reg, "app", "v1")["id"]

    for digest in (amd.digest, arm.digest, idx):
        assert_protected(http.delete(api_image_path(reg, "app", f"/artifacts/{digest}")), pid)
        assert_denied(http.delete(f"/v2/{name}/manifests/{digest}"), pid)
    for digest, body in ((amd.digest, amd.manifest), (arm.digest, arm.manifest), (idx, index)):
        assert http.get_manifest(name, digest).content == body

    # An index without a protected tag protects nothing.
    assert_status(http.delete(api_image_path(reg, "app", f"/artifacts/{sha256_digest(other_index)}")), 204)
    assert_status(http.get_manifest(name, "dev"), 404)
    assert tag_map(http, reg, "app") == {"v1": idx}


def test_protection_reaches_down_nested_indexes(http, new_registry):
    """An index a protected index lists is protected, and so is what it lists."""
    reg = new_registry("pn")
    name = f"{reg}/app"
    amd = small_image(arch="amd64")
    inner = push_index(http, name, [(amd, {"architecture": "amd64", "os": "linux"})])
    inner_digest = sha256_digest(inner)
    outer = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
        {"mediaType": MT_OCI_INDEX, "digest": inner_digest, "size": len(inner)}]}).encode()
    assert_status(http.put_manifest(name, "v1", outer, MT_OCI_INDEX), 201)
    pid = create_protection_policy(http, reg, "app", "v1")["id"]
    for digest in (amd.digest, inner_digest):
        assert_protected(http.delete(api_image_path(reg, "app", f"/artifacts/{digest}")), pid)
        assert_denied(http.delete(f"/v2/{name}/manifests/{digest}"), pid)
    assert http.get_manifest(name, amd.digest).content == amd.manifest


def test_the_same_platform_manifest_in_another_image_is_not_protected(http, new_registry):
    """Protection through an index is within one image."""
    reg = new_registry("px")
    amd = small_image(arch="amd64")
    push_index(http, f"{reg}/app", [(amd, {"architecture": "amd64", "os": "linux"})], tag="v1")
    push_tags(http, f"{reg}/copy", amd)  # the same manifest, untagged, in another image
    pid = create_protection_policy(http, reg, "app", "v1")["id"]
    assert_protected(http.delete(api_image_path(reg, "app", f"/artifacts/{amd.digest}")), pid)
    assert_status(http.delete(api_image_path(reg, "copy", f"/artifacts/{amd.digest}")), 204)
    assert http.get_manifest(f"{reg}/app", amd.digest).content == amd.manifest


def test_disabling_or_deleting_the_policy_lifts_protection(http, new_registry):
    reg = new_registry("pe")
    name = f"{reg}/app"
    a = small_image()
    push_tags(http, name, a, "v1", "v2")
    pid = create_protection_policy(http, reg, "app", "v*")["id"]
    assert_protected(http.delete(api_image_path(reg, "app", "/tags/v1")), pid)

    r = http.patch(pp_path(reg, pid), json={"enabled": False})
    assert_status(r, 200)
    assert r.json()["enabled"] is False
    assert_status(http.delete(api_image_path(reg, "app", "/tags/v1")), 204)
    assert tag_map(http, reg, "app") == {"v2": a.digest}

    assert_status(http.patch(pp_path(reg, pid), json={"enabled": True}), 200)
    assert_denied(http.delete(f"/v2/{name}/manifests/v2"), pid)
    assert_protected(http.delete(api_image_path(reg, "app", f"/artifacts/{a.digest}")), pid)

    assert_status(http.delete(pp_path(reg, pid)), 204)
    assert_status(http.delete(f"/v2/{name}/manifests/v2"), 202)
    assert_status(http.delete(api_image_path(reg, "app", f"/artifacts/{a.digest}")), 204)
    assert_status(http.get_manifest(name, a.digest), 404)


def test_policies_are_per_registry_and_per_image(http, new_registry):
    reg, other = new_registry("pr"), new_registry("pr")
    for r_ in (reg, other):
        for image in ("app", "app2"):
            push_tags(http, f"{r_}/{image}", small_image(), "v1")
    pid = create_protection_policy(http, reg, "app", "v1")["id"]
    assert_protected(http.delete(api_image_path(reg, "app", "/tags/v1")), pid)
    assert_status(http.delete(api_image_path(reg, "app2", "/tags/v1")), 204)
    assert_status(http.delete(api_image_path(other, "app", "/tags/v1")), 204)
    assert_status(http.delete(f"/v2/{other}/app2/manifests/v1"), 202)


def test_image_without_protected_tags_can_be_deleted(http, new_registry):
    """Only artifacts with a protected tag (or listed by a protected index)
    are protected: an image whose tags do not match can be deleted."""
    reg = new_registry("pn")
    push_tags(http, f"{reg}/app", small_image(), "dev")
    push_tags(http, f"{reg}/app", small_image())
    create_protection_policy(http, reg, "app", "v*")
    assert_status(http.delete(api_image_path(reg, "app")), 204)
    assert_problem(http.get(api_image_path(reg, "app")), 404, "NOT_FOUND")


def test_registry_force_delete_refused_while_a_tag_is_protected(http, new_registry):
    reg = new_registry("pf")
    a = small_image()
    push_tags(http, f"{reg}/app", a, "v1")
    pid = create_protection_policy(http, reg, "app", "v1")["id"]

    assert_protected(http.delete(f"/api/v1/registries/{reg}?force=true"), pid)
    assert_status(http.get(f"/api/v1/registries/{reg}"), 200)
    assert http.get_manifest(f"{reg}/app", "v1").content == a.manifest

    assert_status(http.patch(pp_path(reg, pid), json={"enabled": False}), 200)
    assert_status(http.delete(f"/api/v1/registries/{reg}?force=true"), 204)
    assert_status(http.get(f"/api/v1/registries/{reg}"), 404)


def test_registry_force_delete_with_a_policy_matching_no_tag(http, new_registry):
    reg = new_registry("pf")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    create_protection_policy(http, reg, "app", "release-*")
    create_protection_policy(http, reg, "other")
    assert_status(http.delete(f"/api/v1/registries/{reg}?force=true"), 204)
    assert_status(http.get(f"/api/v1/registries/{reg}"), 404)


# ---------------------------------------------------------------------------
# Permissions (docs/lifecycle.md, "Permissions")
# ---------------------------------------------------------------------------



@dataclass
class World:
    admin: Registry
    reg: str
    other: str
    policy: dict
    clients: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(server, http) -> World:
    reg, other = create_registry(http, "ppa"), create_registry(http, "ppo")
    policy = create_protection_policy(http, reg, "app", "v*")
    w = World(admin=http, reg=reg, other=other, policy=policy)
    w.clients = scoped_clients(server, http, reg, other)
    return w


@pytest.mark.parametrize("principal", [*READERS, OADMIN, ANON])
def test_read_permissions(world, principal):
    c = world.clients[principal]
    r_list, r_one = c.get(pp_path(world.reg)), c.get(pp_path(world.reg, world.policy["id"]))
    r_missing = c.get(pp_path(world.reg, MISSING_ID))
    if principal in READERS:
        assert_status(r_list, 200)
        assert world.policy in r_list.json()["items"]
        assert_status(r_one, 200)
        assert r_one.json() == world.policy
        assert_problem(r_missing, 404, "NOT_FOUND")
    else:
        # No probing of ids by status either.
        for r in (r_list, r_one, r_missing):
            assert_refused(r, principal)


WRITES = ("create", "patch", "delete")


@pytest.mark.parametrize("principal", [VIEWER, UPLOADER, OADMIN, ANON, RADMIN])
@pytest.mark.parametrize("op", WRITES)
def test_write_permissions(world, op, principal):
    c = world.clients[principal]
    target = create_protection_policy(world.admin, world.reg, unique("img"), "v*")
    new_pattern = unique("img")
    if op == "create":
        r = c.post(pp_path(world.reg), json={"image_pattern": new_pattern})
    elif op == "patch":
        r = c.patch(pp_path(world.reg, target["id"]), json={"enabled": False})
    else:
        r = c.delete(pp_path(world.reg, target["id"]))
    after = {p["image_pattern"]: p for p in policies(world.admin, world.reg)}

    if principal == RADMIN:
        if op == "create":
            assert_status(r, 201)
            assert after[new_pattern] == r.json()
        elif op == "patch":
            assert_status(r, 200)
            assert after[target["image_pattern"]]["enabled"] is False
        else:
            assert_status(r, 204)
            assert target["image_pattern"] not in after
        return
    assert_refused(r, principal)
    assert new_pattern not in after
    assert after[target["image_pattern"]] == target


def test_registry_admin_policy_takes_effect(world):
    """A policy written by the registry's own admin protects like any other."""
    c = world.clients[RADMIN]
    image = unique("img")
    push_tags(world.admin, f"{world.reg}/{image}", small_image(), "v1")
    r = c.post(pp_path(world.reg), json={"image_pattern": image, "tag_pattern": "v1"})
    assert_status(r, 201)
    pid = r.json()["id"]
    assert_protected(c.delete(api_image_path(world.reg, image, "/tags/v1")), pid)
    assert_protected(world.admin.delete(api_image_path(world.reg, image, "/tags/v1")), pid)
    assert_status(c.delete(pp_path(world.reg, pid)), 204)
    assert_status(c.delete(api_image_path(world.reg, image, "/tags/v1")), 204)


def test_other_registry_admin_cannot_touch_unknown_ids(world):
    c = world.clients[OADMIN]
    assert_problem(c.patch(pp_path(world.reg, MISSING_ID), json={"enabled": False}), 403, "FORBIDDEN")
    assert_problem(c.delete(pp_path(world.reg, MISSING_ID)), 403, "FORBIDDEN")
    # ... while it manages the policies of its own registry.
    r = c.post(pp_path(world.other), json={"image_pattern": "mine"})
    assert_status(r, 201)
    assert_status(c.delete(pp_path(world.other, r.json()["id"])), 204)
