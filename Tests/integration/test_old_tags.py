"""Clean up old tags (docs/lifecycle.md, "Clean up old tags"): the listing
of tags last changed before a time (with `exclude_latest`, pagination and the
`protected` flag) and the all-or-nothing delete.

The listing cases share one module registry whose tags change in two phases
separated by a whole-second boundary `mid` (so that `before=mid` splits them
whatever the precision of the server's timestamps). The delete cases each
have a registry of their own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest

from helpers import (
    small_image,
    Image,
    api_image_path,
    api_list_all,
    api_registry_path,
    assert_problem,
    assert_status,
    create_protection_policy,
    create_registry,
    list_old_tags,
    new_principal,
    parse_rfc3339,
    push_tags,
    rfc3339,
    unique,
)

CLOCK_SLACK = 2
ITEM_FIELDS = {"image", "tag", "digest", "updated_at", "protected"}



def delete_path(reg: str) -> str:
    return api_registry_path(reg, "/old-tags/delete")


def future() -> str:
    return rfc3339(time.time() + 3600)


def dp_tags(client, name: str) -> list[str]:
    r = client.get(f"/v2/{name}/tags/list")
    assert_status(r, 200)
    return sorted(r.json().get("tags") or [])


def rows(items: list[dict]) -> list[tuple[str, str, str]]:
    return [(i["image"], i["tag"], i["digest"]) for i in items]


def refs(*pairs: tuple[str, str]) -> dict:
    return {"tags": [{"image": i, "tag": t} for i, t in pairs]}


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------


@dataclass
class Story:
    reg: str
    a: Image  # app:old (app:v1 until phase 2)
    b: Image  # app:v2
    c: Image  # team/web:x
    d: Image  # app:v1 from phase 2 on
    t0: float  # before phase 1
    mid: str  # a whole second between the phases
    t1: float  # after phase 2


@pytest.fixture(scope="module")
def story(http) -> Story:
    reg = create_registry(http, "ot")
    a, b, c, d = small_image(), small_image(), small_image(), small_image()
    t0 = time.time()
    push_tags(http, f"{reg}/app", a, "old", "v1")
    push_tags(http, f"{reg}/app", b, "v2")
    push_tags(http, f"{reg}/team/web", c, "x")
    boundary = math.floor(time.time()) + 1
    time.sleep(max(0.0, boundary - time.time()) + 0.05)
    # Phase 2: v1 moves to d; it is now app's most recently changed tag.
    push_tags(http, f"{reg}/app", d, "v1")
    return Story(reg=reg, a=a, b=b, c=c, d=d, t0=t0, mid=rfc3339(boundary), t1=time.time())


def test_before_a_future_time_lists_every_tag(http, story):
    items = list_old_tags(http, story.reg, future())
    assert rows(items) == [
        ("app", "old", story.a.digest),
        ("app", "v1", story.d.digest),
        ("app", "v2", story.b.digest),
        ("team/web", "x", story.c.digest),
    ], items
    for i in items:
        assert ITEM_FIELDS <= set(i), i
        assert i["protected"] is False, i
        assert story.t0 - CLOCK_SLACK <= parse_rfc3339(i["updated_at"]) <= story.t1 + CLOCK_SLACK, i
    explicit = list_old_tags(http, story.reg, future(), exclude_latest=False)
    assert rows(explicit) == rows(items)


def test_before_a_past_time_lists_nothing(http, story):
    assert list_old_tags(http, story.reg, rfc3339(story.t0 - 3600)) == []
    assert list_old_tags(http, story.reg, rfc3339(story.t0 - 3600), exclude_latest=True) == []


def test_before_is_about_the_last_change(http, story):
    """v1 was created in phase 1 but moved in phase 2: it is not older than mid."""
    items = list_old_tags(http, story.reg, story.mid)
    assert rows(items) == [
        ("app", "old", story.a.digest),
        ("app", "v2", story.b.digest),
        ("team/web", "x", story.c.digest),
    ], items
    for i in items:
        assert parse_rfc3339(i["updated_at"]) < parse_rfc3339(story.mid), i


def test_exclude_latest(http, story):
    items = list_old_tags(http, story.reg, future(), exclude_latest=True)
    # app's most recently changed tag is v1; team/web has only x.
    assert rows(items) == [("app", "old", story.a.digest), ("app", "v2", story.b.digest)], items


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pagination(http, story, limit):
    full = list_old_tags(http, story.reg, future())
    items, pages = api_list_all(http, api_registry_path(story.reg, "/old-tags"), {"before": future()}, limit=limit)
    assert rows(items) == rows(full)
    assert pages >= math.ceil(len(full) / limit)


def test_protected_flag(http, story):
    p = create_protection_policy(http, story.reg, "app", "v2")
    try:
        flags = {(i["image"], i["tag"]): i["protected"] for i in list_old_tags(http, story.reg, future())}
        assert flags == {("app", "old"): False, ("app", "v1"): False, ("app", "v2"): True,
                         ("team/web", "x"): False}, flags
    finally:
        assert_status(http.delete(api_registry_path(story.reg, f"/protection-policies/{p['id']}")), 204)


def test_before_is_required_and_must_be_rfc3339(http, story):
    path = api_registry_path(story.reg, "/old-tags")
    assert_problem(http.get(path), 400)
    assert_problem(http.get(path, params={"exclude_latest": "true"}), 400)
    for bad in ("", "yesterday", "2026-11-23", "2026-13-01T00:00:00Z", "2026-11-23T25:00:00Z", "1700000000"):
        assert_problem(http.get(path, params={"before": bad}), 400)


def test_unknown_registry(http):
    ghost = unique("ghost")
    assert_problem(http.get(api_registry_path(ghost, "/old-tags"), params={"before": future()}), 404, "NOT_FOUND")
    assert_problem(http.post(delete_path(ghost), json=refs(("app", "v1"))), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------


def _setup(http, new_registry, prefix: str):
    reg = new_registry(prefix)
    a, c = small_image(), small_image()
    push_tags(http, f"{reg}/app", a, "v1", "v2", "keep")
    push_tags(http, f"{reg}/team/web", c, "x", "y")
    return reg, a, c


def _listed(http, reg: str) -> set[tuple[str, str]]:
    return {(i["image"], i["tag"]) for i in list_old_tags(http, reg, future())}


ALL = {("app", "v1"), ("app", "v2"), ("app", "keep"), ("team/web", "x"), ("team/web", "y")}


def test_delete_the_chosen_tags(http, new_registry):
    reg, a, c = _setup(http, new_registry, "od")
    r = http.post(delete_path(reg), json=refs(("app", "v1"), ("app", "v2"), ("team/web", "x"), ("team/web", "y")))
    assert_status(r, 200)
    assert r.json()["deleted"] == 4, r.json()
    assert dp_tags(http, f"{reg}/app") == ["keep"]
    for name, tag in ((f"{reg}/app", "v1"), (f"{reg}/app", "v2"), (f"{reg}/team/web", "x"), (f"{reg}/team/web", "y")):
        assert_status(http.get_manifest(name, tag), 404)
    assert _listed(http, reg) == {("app", "keep")}
    web_tags, _ = api_list_all(http, api_image_path(reg, "team/web", "/tags"))
    assert web_tags == []
    # Their artifacts stay, even without any tag left.
    assert http.get_manifest(f"{reg}/app", a.digest).content == a.manifest
    assert http.get_manifest(f"{reg}/team/web", c.digest).content == c.manifest
    # They are gone: asking again is asking for unknown tags.
    assert_problem(http.post(delete_path(reg), json=refs(("app", "v1"))), 404, "NOT_FOUND")


@pytest.mark.parametrize("exclude_latest", [False, True])
def test_delete_page_by_page_skips_nothing(http, new_registry, exclude_latest):
    """A client that deletes each page's tags before it asks for the next page
    ends with every old tag deleted (an offset cursor skipped a page's worth)."""
    reg = create_registry(http, "opg")
    img = small_image()
    push_tags(http, f"{reg}/app", img, *[f"t{i:02d}" for i in range(7)])
    push_tags(http, f"{reg}/base", img, "a", "b")
    push_tags(http, f"{reg}/team/web", img, "x", "y", "z")
    expected = {(i["image"], i["tag"]) for i in list_old_tags(http, reg, future(), exclude_latest=exclude_latest)}
    assert len(expected) == (9 if exclude_latest else 12), expected
    deleted, cursor, pages = set(), None, 0
    while True:
        params = {"before": future(), "limit": "2", "exclude_latest": str(exclude_latest).lower()}
        if cursor:
            params["cursor"] = cursor
        r = http.get(api_registry_path(reg, "/old-tags"), params=params)
        assert_status(r, 200)
        page = [(i["image"], i["tag"]) for i in r.json()["items"]]
        pages += 1
        if page:
            assert_status(http.post(delete_path(reg), json=refs(*page)), 200)
            deleted |= set(page)
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
        assert cursor == "%s:%s" % page[-1], cursor
    assert deleted == expected
    assert pages == (5 if exclude_latest else 6)
    left = {(i["image"], i["tag"]) for i in list_old_tags(http, reg, future())}
    assert left == ({("app", "t06"), ("base", "b"), ("team/web", "z")} if exclude_latest else set()), left


def test_old_tag_cursor_must_name_a_tag(http, new_registry):
    reg = create_registry(http, "ocu")
    for cursor in ("5", "app", "App:v1", "app:", ":v1", "app:v1:x", "app:-v"):
        r = http.get(api_registry_path(reg, "/old-tags"), params={"before": future(), "cursor": cursor})
        assert_problem(r, 400, "INVALID_REQUEST")
    # A cursor past every tag, or naming a tag that is gone, is a valid (empty) page.
    r = http.get(api_registry_path(reg, "/old-tags"), params={"before": future(), "cursor": "zz:z"})
    assert_status(r, 200)
    assert r.json() == {"items": [], "next_cursor": None}


def test_unknown_tag_or_image_deletes_nothing(http, new_registry):
    reg, a, c = _setup(http, new_registry, "on")
    assert_problem(http.post(delete_path(reg), json=refs(("app", "v1"), ("app", "nope"))), 404, "NOT_FOUND")
    assert_problem(http.post(delete_path(reg), json=refs(("team/web", "x"), ("ghost", "v1"))), 404, "NOT_FOUND")
    # A tag of another image of the registry is unknown in this one.
    assert_problem(http.post(delete_path(reg), json=refs(("app", "v1"), ("app", "x"))), 404, "NOT_FOUND")
    assert _listed(http, reg) == ALL
    assert dp_tags(http, f"{reg}/app") == ["keep", "v1", "v2"]
    assert dp_tags(http, f"{reg}/team/web") == ["x", "y"]


def test_protected_tag_deletes_nothing(http, new_registry):
    reg, a, c = _setup(http, new_registry, "op")
    pid = create_protection_policy(http, reg, "app", "v1")["id"]
    body = assert_problem(http.post(delete_path(reg), json=refs(("app", "v2"), ("team/web", "x"), ("app", "v1"))),
                          409, "PROTECTED")
    assert pid in (body.get("detail") or ""), body
    assert _listed(http, reg) == ALL
    assert dp_tags(http, f"{reg}/app") == ["keep", "v1", "v2"]

    # Disabled, the policy protects nothing.
    assert_status(http.patch(api_registry_path(reg, f"/protection-policies/{pid}"), json={"enabled": False}), 200)
    r = http.post(delete_path(reg), json=refs(("app", "v2"), ("team/web", "x"), ("app", "v1")))
    assert_status(r, 200)
    assert r.json()["deleted"] == 3
    assert _listed(http, reg) == {("app", "keep"), ("team/web", "y")}


def test_delete_refuses_a_tag_that_moved_since_it_was_listed(http, new_registry):
    """With the listed digests, a tag pushed to another artifact between the
    listing and the delete is refused (409 CHANGED) and nothing is deleted;
    without them the delete takes the tags as they are."""
    reg, a, c = _setup(http, new_registry, "om")
    listed = {(i["image"], i["tag"]): i["digest"] for i in list_old_tags(http, reg, future())}
    assert listed[("app", "v1")] == a.digest and listed[("team/web", "x")] == c.digest
    moved = small_image()
    push_tags(http, f"{reg}/app", moved, "v1")
    chosen = [("team/web", "x"), ("app", "v2"), ("app", "v1")]
    body = {"tags": [{"image": i, "tag": t, "digest": listed[(i, t)]} for i, t in chosen]}
    problem = assert_problem(http.post(delete_path(reg), json=body), 409, "CHANGED")
    assert "'v1'" in problem["detail"] and moved.digest in problem["detail"] and a.digest in problem["detail"], problem
    assert _listed(http, reg) == ALL
    assert http.get_manifest(f"{reg}/app", "v1").content == moved.manifest
    # A tag named twice must hold both entries' conditions: its second, stale entry refuses it.
    twice = [{"image": "app", "tag": "v1", "digest": moved.digest}, {"image": "app", "tag": "v1", "digest": a.digest}]
    assert_problem(http.post(delete_path(reg), json={"tags": twice}), 409, "CHANGED")
    assert _listed(http, reg) == ALL
    # The tags that did not move go with their digests; the moved one with its new digest.
    r = http.post(delete_path(reg), json={"tags": body["tags"][:2] + [{"image": "app", "tag": "v1", "digest": moved.digest}]})
    assert_status(r, 200)
    assert r.json()["deleted"] == 3
    assert _listed(http, reg) == {("app", "keep"), ("team/web", "y")}


def test_delete_refuses_a_tag_pushed_again_after_before(http, new_registry):
    """With the listing's `before`, a tag pushed again since (even to the same
    artifact) is refused (409 CHANGED) and nothing is deleted."""
    reg, a, c = _setup(http, new_registry, "ob")
    time.sleep(math.ceil(time.time()) - time.time() + 0.05)
    before = rfc3339(math.floor(time.time()))
    listed = {(i["image"], i["tag"]) for i in list_old_tags(http, reg, before)}
    assert listed == ALL, listed
    push_tags(http, f"{reg}/app", a, "v2")  # the same artifact, pushed again
    body = {"tags": [{"image": "app", "tag": "v1"}, {"image": "app", "tag": "v2"}], "before": before}
    problem = assert_problem(http.post(delete_path(reg), json=body), 409, "CHANGED")
    assert "'v2'" in problem["detail"], problem
    assert _listed(http, reg) == ALL
    r = http.post(delete_path(reg), json={"tags": [{"image": "app", "tag": "v1"}, {"image": "team/web", "tag": "x"}], "before": before})
    assert_status(r, 200)
    assert r.json()["deleted"] == 2
    assert _listed(http, reg) == {("app", "v2"), ("app", "keep"), ("team/web", "y")}


def test_delete_body_validation(http, new_registry):
    reg, a, c = _setup(http, new_registry, "ov")
    for body in (
        {"tags": []},
        {},
        {"tags": None},
        {"tags": [{"image": "app"}]},
        {"tags": [{"tag": "v1"}]},
        {"tags": [{"image": "app", "tag": 1}]},
        {"tags": {"image": "app", "tag": "v1"}},
        {"tags": [{"image": "app", "tag": "v1"}] + [{"image": "app", "tag": f"t{i}"} for i in range(1000)]},
        {"tags": [{"image": "app", "tag": "v1", "digest": "sha256:abc"}]},
        {"tags": [{"image": "app", "tag": "v1", "digest": "v1"}]},
        {"tags": [{"image": "app", "tag": "v1", "digest": 5}]},
        {"tags": [{"image": "app", "tag": "v1"}], "before": "yesterday"},
        {"tags": [{"image": "app", "tag": "v1"}], "before": 5},
    ):
        assert_problem(http.post(delete_path(reg), json=body), 400)
    assert _listed(http, reg) == ALL


# ---------------------------------------------------------------------------
# Permissions
# ---------------------------------------------------------------------------


def test_permissions(server, http, new_registry):
    reg, a, c = _setup(http, new_registry, "oa")
    other = new_registry("oo")
    clients = {}
    for principal, role, scope in (
        ("viewer", "viewer", reg),
        ("uploader", "uploader", reg),
        ("radmin", "admin", reg),
        ("oadmin", "admin", other),
    ):
        _, creds = new_principal(http, role, scope, prefix=principal[:2])
        clients[principal] = server.client(creds=creds)
    clients["anonymous"] = server.anon_client()
    path = api_registry_path(reg, "/old-tags")

    for principal in ("viewer", "uploader", "radmin"):
        r = clients[principal].get(path, params={"before": future()})
        assert_status(r, 200)
        assert {(i["image"], i["tag"]) for i in r.json()["items"]} == ALL
    assert_problem(clients["oadmin"].get(path, params={"before": future()}), 403, "FORBIDDEN")
    assert_problem(clients["anonymous"].get(path, params={"before": future()}), 401, "UNAUTHORIZED")

    for principal in ("viewer", "uploader", "oadmin"):
        assert_problem(clients[principal].post(delete_path(reg), json=refs(("app", "v1"))), 403, "FORBIDDEN")
    assert_problem(clients["anonymous"].post(delete_path(reg), json=refs(("app", "v1"))), 401, "UNAUTHORIZED")
    assert _listed(http, reg) == ALL

    r = clients["radmin"].post(delete_path(reg), json=refs(("app", "v1")))
    assert_status(r, 200)
    assert r.json()["deleted"] == 1
    assert dp_tags(http, f"{reg}/app") == ["keep", "v2"]
