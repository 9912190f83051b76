"""The event log (docs/lifecycle.md, "Event log"): one event per change and
per pull, with the documented fields; ids increasing decimal strings read with
`after=`; `limit`, `next_cursor`, the `registry` and `type` filters; events
acknowledged before `kill -9` are kept; who sees which events.

Most tests share one server of this module (`ev`, no scheduled or
after-delete GC runs, so the only `gc.run` events are the ones a test starts)
and one story of changes made at module setup (`story`).

Readings of the contract these tests rely on:
- `actor` is the user name behind the credentials (`admin` for the
  bootstrap key), and null when no user acted (an anonymous pull, a run the
  server started; a run's `detail.trigger` says what started it).
- `image` is the name inside the registry; `tag` is null when a manifest is
  pushed by digest; a `tag.delete` event carries the tag (and, if any, the
  digest it pointed at).
- `gc.run` and `cleanup.run` events are written when the run ends; their
  `detail` holds the run id (key `run_id`, `id` or a `run` object: the
  contract does not name it), `status` and `summary`. `gc.run` has
  `registry: null`; `cleanup.run` the registry it cleaned.
- A manifest HEAD is not a pull.
- A registry-scoped user asking for `registry=<one it cannot view>` gets
  either 403 or an empty list, never its events; `registry=<unknown>` is 404
  or an empty list.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pytest

from helpers import (
    small_image,
    EVENTS,
    api_image_path,
    assert_problem,
    assert_status,
    create_cleanup_policy,
    create_registry,
    event_run_id,
    gc_args,
    list_events,
    new_principal,
    parse_rfc3339,
    push_tags,
    run_cleanup,
    run_gc,
    wait_until,
)

ADMIN_USER = "admin"  # the bootstrap user (docs/identity.md)
EVENT_FIELDS = {"id", "time", "type", "registry", "image", "digest", "tag", "actor", "detail"}
PULL_TIMEOUT = 5  # "pulls are written within a second"
CLOCK_SLACK = 2
IMAGE = "team/app"



def find(events: list[dict], **match) -> list[dict]:
    return [e for e in events if all(e.get(k) == v for k, v in match.items())]


def the_one(events: list[dict], **match) -> dict:
    found = find(events, **match)
    assert len(found) == 1, f"expected one event {match}, found {len(found)}: {found}"
    return found[0]


def assert_event(e: dict, story_start: float | None = None) -> None:
    assert EVENT_FIELDS <= set(e), e
    assert isinstance(e["id"], str) and re.fullmatch(r"[0-9]+", e["id"]), e
    t = parse_rfc3339(e["time"])
    if story_start is not None:
        assert story_start - CLOCK_SLACK <= t <= time.time() + CLOCK_SLACK, e


def assert_increasing(events: list[dict]) -> None:
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), f"ids not strictly increasing: {ids}"


@pytest.fixture(scope="module")
def ev(spawn_server):
    srv = spawn_server("events", extra_args=gc_args(grace=0))
    yield srv
    srv.stop_quietly()


@pytest.fixture(scope="module")
def admin(ev):
    return ev.client()


@dataclass
class Story:
    reg: str
    start: float
    v1: object  # image pushed as team/app:v1, then pulled, then tagged v1b by the admin API
    v2: object  # image pushed as team/app:v2; tag deleted, then the artifact
    untagged: object  # pushed by digest
    headed: object  # pushed by digest, only HEAD on its manifest
    other: object  # other:v1, image deleted through the admin API
    order: list = field(default_factory=list)  # (type, match) in the order the changes were made
    gc_run: dict | None = None
    cleanup_run: dict | None = None


@pytest.fixture(scope="module")
def story(ev, admin) -> Story:
    s = Story(
        reg=create_registry(admin, "ev"), start=time.time(), v1=small_image(), v2=small_image(),
        untagged=small_image(), headed=small_image(), other=small_image(),
    )
    name = f"{s.reg}/{IMAGE}"
    push_tags(admin, name, s.v1, "v1")
    s.order.append(("artifact.push", {"digest": s.v1.digest}))
    push_tags(admin, name, s.untagged)
    s.order.append(("artifact.push", {"digest": s.untagged.digest}))
    push_tags(admin, name, s.headed)
    s.order.append(("artifact.push", {"digest": s.headed.digest}))
    push_tags(admin, name, s.v2, "v2")
    s.order.append(("artifact.push", {"digest": s.v2.digest}))

    assert_status(admin.get_manifest(name, s.headed.digest, method="HEAD"), 200)
    g = admin.get_manifest(name, "v1")
    assert_status(g, 200)
    assert g.content == s.v1.manifest

    assert_status(admin.delete(f"/v2/{name}/manifests/v2"), 202)
    s.order.append(("tag.delete", {"tag": "v2"}))
    assert_status(admin.delete(f"/v2/{name}/manifests/{s.v2.digest}"), 202)
    s.order.append(("artifact.delete", {"digest": s.v2.digest}))
    assert_status(admin.post(api_image_path(s.reg, IMAGE, "/tags"), json={"name": "v1b", "digest": s.v1.digest}), 201)
    s.order.append(("tag.create", {"tag": "v1b"}))

    push_tags(admin, f"{s.reg}/other", s.other, "v1")
    s.order.append(("artifact.push", {"digest": s.other.digest}))
    assert_status(admin.delete(api_image_path(s.reg, "other")), 204)
    s.order.append(("image.delete", {"image": "other"}))

    s.gc_run = run_gc(admin)
    # A cleanup run with a policy that finds nothing to delete (`untagged` is
    # kept: its deletion would also be an event; nothing here depends on it).
    create_cleanup_policy(admin, s.reg, "nothing-matches-this", "delete_untagged")
    s.cleanup_run = run_cleanup(admin, s.reg)
    return s


def story_events(admin, story: Story) -> list[dict]:
    return list_events(admin, registry=story.reg)


# ---------------------------------------------------------------------------
# One event per change, with its fields
# ---------------------------------------------------------------------------


def test_push_events(admin, story):
    events = story_events(admin, story)
    for e in events:
        assert_event(e, story.start)
        assert e["registry"] == story.reg, e
    e = the_one(events, type="artifact.push", digest=story.v1.digest)
    assert (e["image"], e["tag"], e["actor"]) == (IMAGE, "v1", ADMIN_USER), e
    e = the_one(events, type="artifact.push", digest=story.untagged.digest)
    assert (e["image"], e["tag"], e["actor"]) == (IMAGE, None, ADMIN_USER), e
    e = the_one(events, type="artifact.push", digest=story.other.digest)
    assert (e["image"], e["tag"]) == ("other", "v1"), e


def test_pull_event_for_get_not_head(admin, story):
    def pulled():
        return find(story_events(admin, story), type="artifact.pull", digest=story.v1.digest)

    pulls = wait_until(pulled, timeout=PULL_TIMEOUT, message="the artifact.pull event of the manifest GET")
    assert len(pulls) == 1, pulls
    e = pulls[0]
    assert_event(e, story.start)
    assert (e["registry"], e["image"], e["actor"]) == (story.reg, IMAGE, ADMIN_USER), e
    # The HEAD came before the GET: had it counted, its event would be there by now.
    assert not find(story_events(admin, story), type="artifact.pull", digest=story.headed.digest)
    push = the_one(story_events(admin, story), type="artifact.push", digest=story.v1.digest)
    assert int(e["id"]) > int(push["id"])


def test_delete_and_tag_events(admin, story):
    events = story_events(admin, story)
    e = the_one(events, type="tag.delete", tag="v2")
    assert (e["image"], e["actor"]) == (IMAGE, ADMIN_USER), e
    assert e["digest"] in (story.v2.digest, None), e
    e = the_one(events, type="artifact.delete", digest=story.v2.digest)
    assert (e["image"], e["actor"]) == (IMAGE, ADMIN_USER), e
    e = the_one(events, type="tag.create", tag="v1b")
    assert (e["image"], e["digest"], e["actor"]) == (IMAGE, story.v1.digest, ADMIN_USER), e
    e = the_one(events, type="image.delete", image="other")
    assert e["actor"] == ADMIN_USER, e
    # One event stands for the image's artifacts, and counts them.
    assert e["detail"] == {"artifacts": 1}, e
    assert not find(events, type="artifact.delete", image="other"), events


def test_an_image_delete_is_one_event_counting_its_artifacts(admin):
    reg = create_registry(admin, "evi")
    images = [small_image() for _ in range(3)]
    push_tags(admin, f"{reg}/many", images[0], "v1", "v1b")
    push_tags(admin, f"{reg}/many", images[1], "v2")
    push_tags(admin, f"{reg}/many", images[2])
    assert_status(admin.delete(api_image_path(reg, "many")), 204)
    events = list_events(admin, registry=reg)
    e = the_one(events, type="image.delete", image="many")
    assert (e["actor"], e["detail"]) == (ADMIN_USER, {"artifacts": 3}), e
    assert not find(events, type="artifact.delete"), events
    assert not find(events, type="tag.delete"), events


def test_forced_registry_delete_logs_each_image(admin):
    reg = create_registry(admin, "evf")
    for image in ("one", "team/two"):
        push_tags(admin, f"{reg}/{image}", small_image(), "v1")
    assert_status(admin.delete(f"/api/v1/registries/{reg}", params={"force": "true"}), 204)
    deletes = find(list_events(admin, registry=reg), type="image.delete")
    assert sorted(e["image"] for e in deletes) == ["one", "team/two"], deletes
    assert all(e["actor"] == ADMIN_USER for e in deletes), deletes


def test_changes_are_logged_in_order(admin, story):
    events = story_events(admin, story)
    assert_increasing(events)
    ids = [int(the_one(events, type=t, **match)["id"]) for t, match in story.order]
    assert ids == sorted(ids), list(zip(story.order, ids))


def test_gc_run_event(admin, story):
    run = story.gc_run

    def logged():
        return [e for e in list_events(admin, type="gc.run") if event_run_id(e["detail"]) == run["id"]]

    found = wait_until(logged, timeout=5, message=f"the gc.run event of run {run['id']}")
    assert len(found) == 1, found
    e = found[0]
    assert_event(e, story.start)
    assert e["registry"] is None, e
    assert e["detail"].get("status") == "succeeded", e
    assert e["detail"].get("summary") == run["summary"], e
    assert (e["actor"], e["detail"].get("trigger")) == (ADMIN_USER, "api"), e
    # A system event is not an event of any registry.
    assert not find(story_events(admin, story), type="gc.run")


def test_cleanup_run_event(admin, story):
    run = story.cleanup_run

    def logged():
        return [e for e in find(story_events(admin, story), type="cleanup.run") if event_run_id(e["detail"]) == run["id"]]

    found = wait_until(logged, timeout=5, message=f"the cleanup.run event of run {run['id']}")
    assert len(found) == 1, found
    e = found[0]
    assert_event(e, story.start)
    assert e["registry"] == story.reg, e
    assert e["detail"].get("status") == "succeeded", e
    assert e["detail"].get("summary") == run["summary"], e
    assert (e["actor"], e["detail"].get("trigger")) == (ADMIN_USER, "api"), e


def test_anonymous_pull_has_no_actor(admin):
    reg = create_registry(admin, "evanon")
    image = small_image()
    push_tags(admin, f"{reg}/pub", image, "v1")
    assert_status(admin.patch(f"/api/v1/registries/{reg}", json={"anonymous_pull": True}), 200)
    anonymous = admin.anonymous()
    token = anonymous.token_for(f"repository:{reg}/pub:pull", creds=False)
    assert_status(anonymous.with_token(token).get_manifest(f"{reg}/pub", "v1"), 200)

    pulls = wait_until(
        lambda: find(list_events(admin, registry=reg), type="artifact.pull"), timeout=PULL_TIMEOUT,
        message="the artifact.pull event of the anonymous GET",
    )
    assert [e["actor"] for e in pulls] == [None], pulls


# ---------------------------------------------------------------------------
# Reading the log: ids, after, limit, next_cursor, filters
# ---------------------------------------------------------------------------


def _page(client, **params) -> dict:
    r = client.get(EVENTS, params={k: str(v) for k, v in params.items()})
    assert_status(r, 200)
    body = r.json()
    assert set(body) >= {"items", "next_cursor"}, body
    return body


def test_cursor_and_filters(admin, story):
    reg = create_registry(admin, "evc")
    images = [small_image() for _ in range(5)]
    for i, img in enumerate(images):
        push_tags(admin, f"{reg}/app", img, f"v{i}")

    full = list_events(admin)
    for e in full:
        assert_event(e)
    assert_increasing(full)
    mine = find(full, registry=reg)
    assert [e["digest"] for e in mine] == [img.digest for img in images]
    assert all(e["type"] == "artifact.push" for e in mine)

    # limit=2 pages, following next_cursor until null, visit every event once.
    seen: list[str] = []
    after = None
    for _ in range(10_000):
        body = _page(admin, limit=2, **({"after": after} if after else {}))
        page = body["items"]
        assert len(page) <= 2, body
        seen += [e["id"] for e in page]
        if body["next_cursor"] is None:
            break
        assert page and body["next_cursor"] == page[-1]["id"], body
        after = body["next_cursor"]
    else:
        raise AssertionError("paging does not terminate")
    assert len(set(seen)) == len(seen), "an event was listed twice"
    # (Pull events may have been appended meanwhile: compare what both saw.)
    assert seen[: len(full)] == [e["id"] for e in full]

    first = _page(admin, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"] == first["items"][1]["id"], first

    # after=<id> returns exactly the later events.
    mid = full[len(full) // 2]["id"]
    later = list_events(admin, after=mid)
    assert all(int(e["id"]) > int(mid) for e in later)
    assert [e["id"] for e in later][: len(full) - len(full) // 2 - 1] == [e["id"] for e in full[len(full) // 2 + 1:]]
    # After the last event: nothing, and the end of the log.
    last = list_events(admin)[-1]["id"]
    body = _page(admin, after=last)
    assert body == {"items": [], "next_cursor": None} or all(
        int(e["id"]) > int(last) and e["type"] == "artifact.pull" for e in body["items"]
    ), body

    # Filters, alone, together and across pages.
    only = list_events(admin, registry=reg)
    assert [e["id"] for e in only] == [e["id"] for e in mine]
    typed = list_events(admin, type="artifact.push")
    assert typed and all(e["type"] == "artifact.push" for e in typed)
    assert {img.digest for img in images} <= {e["digest"] for e in typed}
    assert [e["id"] for e in find(full, type="artifact.push")] == [e["id"] for e in typed][: len(find(full, type="artifact.push"))]
    both = list_events(admin, limit=2, registry=reg, type="artifact.push")
    assert [e["id"] for e in both] == [e["id"] for e in mine]
    assert list_events(admin, registry=reg, type="tag.delete") == []
    r = admin.get(EVENTS, params={"registry": "evnosuchregistry"})
    if r.status_code == 404:
        assert_problem(r, 404, "NOT_FOUND")
    else:
        assert_status(r, 200)
        assert r.json() == {"items": [], "next_cursor": None}, r.text


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "1001"}, {"limit": "-1"}, {"limit": "x"}, {"after": "abc"}, {"after": "1.5"},
     {"type": "artifact.pushed"}, {"type": ""}],
    ids=["limit0", "limit1001", "limit-1", "limitx", "after-abc", "after-1.5", "type-unknown", "type-empty"],
)
def test_bad_parameters(admin, params):
    assert_problem(admin.get(EVENTS, params=params), 400)


def test_limit_bounds_accepted(admin, story):
    for limit in (1, 1000):
        body = _page(admin, limit=limit)
        assert 1 <= len(body["items"]) <= limit, body


# ---------------------------------------------------------------------------
# Durability
# ---------------------------------------------------------------------------


def test_events_survive_kill9(make_server):
    srv = make_server(registries=["evd"], extra_args=gc_args(grace=0) + ["--event-retention-days", "1"], label="events-kill9")
    c = srv.client()
    before_img, img = small_image(), small_image()
    push_tags(c, "evd/app", before_img, "v0")
    before = list_events(c)
    e0 = the_one(before, type="artifact.push", digest=before_img.digest)
    push_tags(c, "evd/app", img, "v1")
    srv.kill9()  # right after the acknowledgement

    srv.start()
    c = srv.client()
    after = list_events(c)
    assert_increasing(after)
    assert the_one(after, type="artifact.push", digest=before_img.digest) == e0
    e1 = the_one(after, type="artifact.push", digest=img.digest)
    assert (e1["registry"], e1["image"], e1["tag"], e1["actor"]) == ("evd", "app", "v1", ADMIN_USER), e1
    assert int(e1["id"]) > int(e0["id"])
    # Ids go on increasing after the restart.
    later = small_image()
    push_tags(c, "evd/app", later, "v2")
    e2 = the_one(list_events(c), type="artifact.push", digest=later.digest)
    assert int(e2["id"]) > max(int(e["id"]) for e in after)
    # A clean restart keeps them too (and a 1-day retention keeps recent events).
    srv.restart()
    assert [e["id"] for e in list_events(srv.client())][: len(after) + 1] == [e["id"] for e in after] + [e2["id"]]


def test_count_bound_keeps_the_newest(make_server):
    # Every manifest GET is an event: past event_retention_count the oldest go,
    # whatever their age (maintenance runs every second with this upload timeout).
    srv = make_server(registries=["evc"], extra_args=["--event-retention-count", "3", "--upload-timeout", "2"],
                      label="events-count")
    c = srv.client()
    img = small_image()
    push_tags(c, "evc/app", img, "v1")
    pushed = int(the_one(list_events(c), type="artifact.push", digest=img.digest)["id"])
    for _ in range(6):
        assert_status(c.get("/v2/evc/app/manifests/v1", headers={"Accept": img.media_type}), 200)
    newest = [pushed + 4, pushed + 5, pushed + 6]
    wait_until(lambda: [int(e["id"]) for e in list_events(c)] == newest, timeout=10, message=f"only events {newest} left")
    assert [e["type"] for e in list_events(c)] == ["artifact.pull"] * 3


# ---------------------------------------------------------------------------
# Who sees what
# ---------------------------------------------------------------------------


def test_a_registry_created_again_shows_none_of_the_old_ones_events(ev, admin, story):
    reg = create_registry(admin, "evr")
    old = small_image()
    push_tags(admin, f"{reg}/app", old, "v1")
    assert_status(admin.delete(f"/api/v1/registries/{reg}", params={"force": "true"}), 204)
    assert_status(admin.create_registry(reg), 201)
    _, viewer = new_principal(admin, "viewer", reg, prefix="vr")
    client = ev.client(creds=viewer)
    new = small_image()
    push_tags(admin, f"{reg}/app", new, "v2")
    seen = list_events(client)
    assert not find(seen, digest=old.digest), seen
    the_one(seen, type="artifact.push", digest=new.digest)
    # A global admin still reads the whole log.
    the_one(list_events(admin, registry=reg), type="artifact.push", digest=old.digest)


def test_visibility(ev, admin, story):
    a, b = create_registry(admin, "eva"), create_registry(admin, "evb")
    img_a, img_b = small_image(), small_image()
    push_tags(admin, f"{a}/app", img_a, "v1")
    push_tags(admin, f"{b}/app", img_b, "v1")
    gc = run_gc(admin)
    _, a_viewer = new_principal(admin, "viewer", a, prefix="va")
    _, g_viewer = new_principal(admin, "viewer", None, prefix="vg")
    a_client, g_client = ev.client(creds=a_viewer), ev.client(creds=g_viewer)

    seen = list_events(a_client)
    assert seen, "a registry viewer sees its registry's events"
    assert all(e["registry"] == a for e in seen), {e["registry"] for e in seen}
    the_one(seen, type="artifact.push", digest=img_a.digest)
    assert not find(seen, digest=img_b.digest)
    assert not find(seen, type="gc.run")
    assert list_events(a_client, type="gc.run") == []
    assert list_events(a_client, type="artifact.push") == find(seen, type="artifact.push")
    r = a_client.get(EVENTS, params={"registry": b})
    if r.status_code == 403:
        assert_problem(r, 403, "FORBIDDEN")
    else:
        assert_status(r, 200)
        assert r.json()["items"] == [], r.text

    # A global viewer sees every registry and the system events.
    everything = list_events(g_client)
    the_one(everything, type="artifact.push", digest=img_a.digest)
    the_one(everything, type="artifact.push", digest=img_b.digest)
    assert wait_until(
        lambda: [e for e in list_events(g_client, type="gc.run") if event_run_id(e["detail"]) == gc["id"]],
        timeout=5, message="the gc.run event, for a global viewer",
    )
    assert [e["id"] for e in list_events(admin)][: len(everything)] == [e["id"] for e in everything]

    # Anonymous: 401.
    assert_problem(ev.anon_client().get(EVENTS), 401, "UNAUTHORIZED")
    assert_problem(ev.anon_client().get(EVENTS, params={"registry": a}), 401, "UNAUTHORIZED")
