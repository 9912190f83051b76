"""Admin API for registries and images (docs/admin-api.md): the registries `q`
filter, registry usage, image listing (`q`, `sort`, pagination), image
details, PATCH, DELETE, names containing `/`, and pull statistics (counted on
manifest GET, not HEAD, flushed in batches, kept across a clean restart).

Artifacts, tags and tag mutability: test_admin_artifacts_tags.py.
Who may call what: test_admin_images_permissions.py.

Every test works in registries of its own on the shared server (or on a
server of its own), so tests do not depend on each other. Pull counts are
written "every few seconds": tests poll for them (PULL_TIMEOUT) instead of
sleeping a fixed time.
"""

from __future__ import annotations

import time
import uuid

import pytest

from helpers import (
    small_image,
    KiB,
    api_get_json,
    api_image_path,
    api_list_all,
    assert_problem,
    assert_status,
    create_registry,
    make_image,
    make_layer,
    parse_rfc3339,
    push_index,
    push_tags,
    sha256_digest,
    unique,
    wait_until,
)

PULL_TIMEOUT = 15  # seconds: "written in batches every few seconds"
CLOCK_SLACK = 2  # seconds of tolerance on server timestamps (second precision)

IMAGE_FIELDS = {
    "name", "registry", "full_name", "created_at", "updated_at", "artifacts", "tags",
    "pull_count", "last_pulled_at", "short_description", "tag_mutability",
}



def image_names(client, reg: str, **params) -> list[str]:
    items, _ = api_list_all(client, api_image_path(reg), params)
    return [i["name"] for i in items]


def images_by_name(client, reg: str) -> dict[str, dict]:
    items, _ = api_list_all(client, api_image_path(reg))
    return {i["name"]: i for i in items}


def assert_time_between(value, lo: float, hi: float) -> float:
    t = parse_rfc3339(value)
    assert lo - CLOCK_SLACK <= t <= hi + CLOCK_SLACK, f"{value} not within [{lo}, {hi}] (+/- {CLOCK_SLACK}s)"
    return t


def assert_no_description(value) -> None:
    # admin-api.md does not say; api-spec/openapi.yaml has both as non-null strings.
    assert value == "", value


# ---------------------------------------------------------------------------
# Registries: q filter and usage
# ---------------------------------------------------------------------------


def test_registries_q_filter(http):
    tok = uuid.uuid4().hex[:12]
    matching = sorted([f"a{tok}", f"{tok}-z", f"m.{tok}.n"])
    near_miss = f"{tok[:6]}x{tok[6:]}"  # every character of tok, but not as a substring
    for name in [*matching, near_miss]:
        assert_status(http.create_registry(name), 201)

    items, _ = api_list_all(http, "/api/v1/registries", {"q": tok})
    assert sorted(i["name"] for i in items) == matching, items
    assert all(i["usage"]["blobs"] == 0 for i in items), items

    # The filter holds on every page, and pages concatenate to the full answer.
    paged, pages = api_list_all(http, "/api/v1/registries", {"q": tok}, limit=1)
    assert [i["name"] for i in paged] == [i["name"] for i in items]
    assert pages >= len(matching)

    items, _ = api_list_all(http, "/api/v1/registries", {"q": tok[:6] + "x"})
    assert [i["name"] for i in items] == [near_miss]

    r = http.get("/api/v1/registries", params={"q": "zz" + tok})
    assert_status(r, 200)
    assert (r.json()["items"], r.json()["next_cursor"]) == ([], None), r.text

    # An empty q filters nothing, as on the image and tag listings.
    everything, _ = api_list_all(http, "/api/v1/registries")
    unfiltered, _ = api_list_all(http, "/api/v1/registries", {"q": ""})
    assert {i["name"] for i in unfiltered} >= {*matching, near_miss}
    assert [i["name"] for i in unfiltered] == [i["name"] for i in everything]


def test_registry_usage_counts(http, new_registry):
    reg = new_registry("us")
    assert api_get_json(http, f"/api/v1/registries/{reg}/usage") == {
        "logical_bytes": 0, "blobs": 0, "images": 0, "artifacts": 0, "tags": 0,
    }

    shared = make_layer(3 * KiB, "shared.bin")
    app = make_image(layers=[shared, make_layer(2 * KiB)])
    api1 = make_image(layers=[shared])
    api2 = make_image(layers=[make_layer(1 * KiB)])
    push_tags(http, f"{reg}/app", app, "v1", "latest")
    push_tags(http, f"{reg}/team/api", api1, "v1")
    push_tags(http, f"{reg}/team/api", api2)  # by digest: an artifact without a tag

    distinct = {sha256_digest(b): len(b) for img in (app, api1, api2) for b in img.blobs}
    assert len(distinct) == 6  # the shared layer once; three configs; two other layers
    usage = api_get_json(http, f"/api/v1/registries/{reg}/usage")
    assert usage == {
        "logical_bytes": sum(distinct.values()),
        "blobs": len(distinct),
        "images": 2,
        "artifacts": 3,
        "tags": 3,
    }, usage
    # The registry's own usage summary agrees.
    info = http.registry_info(reg)["usage"]
    assert (info["logical_bytes"], info["blobs"]) == (usage["logical_bytes"], usage["blobs"]), info

    # A tag on an existing artifact adds a tag, nothing else.
    assert_status(http.put_manifest(f"{reg}/team/api", "v2", api2.manifest), 201)
    assert api_get_json(http, f"/api/v1/registries/{reg}/usage") == dict(usage, tags=4)


def test_registry_usage_unknown_registry(http):
    assert_problem(http.get(f"/api/v1/registries/{unique('nx')}/usage"), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# Images: listing, q, fields, sort, pagination
# ---------------------------------------------------------------------------


def test_images_list_fields_and_q(http, new_registry):
    reg = new_registry("il")
    t0 = time.time()
    push_tags(http, f"{reg}/alpha/web", small_image(), "v1", "latest")
    push_tags(http, f"{reg}/alpha/api", small_image(), "v1")
    push_tags(http, f"{reg}/beta", small_image(), "v1")
    push_tags(http, f"{reg}/gamma", small_image())  # no tag at all
    t1 = time.time()

    items, _ = api_list_all(http, api_image_path(reg))
    assert [i["name"] for i in items] == ["alpha/api", "alpha/web", "beta", "gamma"]  # sort=name is the default
    by = {i["name"]: i for i in items}
    for name, item in by.items():
        assert IMAGE_FIELDS <= set(item), item
        assert item["registry"] == reg and item["full_name"] == f"{reg}/{name}", item
        assert item["artifacts"] == 1, item
        assert item["pull_count"] == 0 and item["last_pulled_at"] is None, item
        assert item["tag_mutability"] == "mutable", item
        assert_no_description(item["short_description"])
        created = assert_time_between(item["created_at"], t0, t1)
        assert parse_rfc3339(item["updated_at"]) >= created, item
        assert_time_between(item["updated_at"], t0, t1)
    assert {n: i["tags"] for n, i in by.items()} == {"alpha/web": 2, "alpha/api": 1, "beta": 1, "gamma": 0}

    assert image_names(http, reg, sort="name") == ["alpha/api", "alpha/web", "beta", "gamma"]
    assert image_names(http, reg, q="alpha") == ["alpha/api", "alpha/web"]
    assert image_names(http, reg, q="ha/w") == ["alpha/web"]  # across the "/"
    assert image_names(http, reg, q="et") == ["beta"]
    assert image_names(http, reg, q="a") == ["alpha/api", "alpha/web", "beta", "gamma"]
    assert image_names(http, reg, q="nothing-like-it") == []
    # q is matched against the image name, not the registry's.
    assert image_names(http, reg, q=reg) == []


def test_images_pagination(http, new_registry):
    reg = new_registry("ip")
    names = [f"img{i}" for i in range(5)]
    for n in names:
        push_tags(http, f"{reg}/{n}", small_image(), "v1")

    r = http.get(api_image_path(reg), params={"limit": "2"})
    assert_status(r, 200)
    first = r.json()
    assert [i["name"] for i in first["items"]] == names[:2]
    assert isinstance(first["next_cursor"], str) and first["next_cursor"]
    r = http.get(api_image_path(reg), params={"limit": "2", "cursor": first["next_cursor"]})
    assert_status(r, 200)
    assert [i["name"] for i in r.json()["items"]] == names[2:4]

    for limit in (1, 2, 3):
        items, pages = api_list_all(http, api_image_path(reg), limit=limit)
        assert [i["name"] for i in items] == names, limit
        assert pages >= -(-len(names) // limit)
    items, pages = api_list_all(http, api_image_path(reg), limit=5)
    assert [i["name"] for i in items] == names
    # Paging through a q filter keeps the filter.
    push_tags(http, f"{reg}/other", small_image(), "v1")
    items, _ = api_list_all(http, api_image_path(reg), {"q": "img"}, limit=2)
    assert [i["name"] for i in items] == names
    # A cursor the server never returned is refused (a negative one used to kill the server).
    for bad in ("-1", "x", "1.5", "-1~img0", "1~", "99999999999999999999~img0"):
        assert_problem(http.get(api_image_path(reg), params={"cursor": bad}), 400, "INVALID_REQUEST")
        assert_problem(http.get(api_image_path(reg, "img0", "/artifacts"), params={"cursor": bad}), 400, "INVALID_REQUEST")
    assert http.get(api_image_path(reg), params={"cursor": "0~zzz"}).json()["items"] == []


@pytest.mark.parametrize("sort", ["name", "updated", "pulls"])
def test_images_deleted_between_pages_skip_nothing(http, new_registry, sort):
    """The cursor names the last image listed: deleting a page's images before
    asking for the next (a list-and-delete script) skips none of the rest."""
    reg = new_registry("id")
    names = [f"img{i}" for i in range(5)]
    for n in names:
        push_tags(http, f"{reg}/{n}", small_image(), "v1")
    listed = []
    cursor = None
    while True:
        r = http.get(api_image_path(reg), params={"limit": "2", "sort": sort, **({"cursor": cursor} if cursor else {})})
        assert_status(r, 200)
        page = [i["name"] for i in r.json()["items"]]
        listed += page
        for name in page:
            assert_status(http.delete(api_image_path(reg, name)), 204)
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(listed) == names, listed


def test_artifacts_deleted_between_pages_skip_nothing(http, new_registry):
    reg = new_registry("ad")
    images = [small_image() for _ in range(5)]
    for i, img in enumerate(images):
        push_tags(http, f"{reg}/app", img, f"v{i}")
    listed = []
    cursor = None
    while True:
        path = api_image_path(reg, "app", "/artifacts")
        r = http.get(path, params={"limit": "2", **({"cursor": cursor} if cursor else {})})
        assert_status(r, 200)
        page = [i["digest"] for i in r.json()["items"]]
        listed += page
        for digest in page:
            assert_status(http.delete(api_image_path(reg, "app", f"/artifacts/{digest}")), 204)
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(listed) == sorted(img.digest for img in images), listed


@pytest.fixture(scope="module")
def timeline(http):
    """Pushes more than a second apart, so that even second-precision
    timestamps order them: bbb (t0), aaa:v0 (t0); ccc and aaa:mid (t1);
    aaa:v2 (t2). Updated order: aaa, ccc, bbb (neither name order nor its
    reverse); aaa's artifacts newest first: v2, mid, v0."""
    reg = create_registry(http, "tl")
    a0, amid, a2 = small_image(), small_image(), small_image()
    push_tags(http, f"{reg}/bbb", small_image(), "v1")
    push_tags(http, f"{reg}/aaa", a0, "v0")
    time.sleep(1.1)
    push_tags(http, f"{reg}/ccc", small_image(), "v1")
    push_tags(http, f"{reg}/aaa", amid, "mid")
    time.sleep(1.1)
    push_tags(http, f"{reg}/aaa", a2, "v2")
    return reg, [a2, amid, a0]


def test_images_sort_updated(http, timeline):
    reg, _ = timeline
    items, _ = api_list_all(http, api_image_path(reg), {"sort": "updated"})
    assert [i["name"] for i in items] == ["aaa", "ccc", "bbb"], items
    by = {i["name"]: i for i in items}
    assert parse_rfc3339(by["aaa"]["updated_at"]) > parse_rfc3339(by["ccc"]["updated_at"]) > parse_rfc3339(
        by["bbb"]["updated_at"]
    ), items
    # aaa was created first and updated last.
    assert parse_rfc3339(by["aaa"]["updated_at"]) > parse_rfc3339(by["aaa"]["created_at"]), by["aaa"]
    assert by["aaa"]["artifacts"] == 3 and by["aaa"]["tags"] == 3, by["aaa"]

    paged, _ = api_list_all(http, api_image_path(reg), {"sort": "updated"}, limit=1)
    assert [i["name"] for i in paged] == ["aaa", "ccc", "bbb"]
    assert image_names(http, reg, sort="name") == ["aaa", "bbb", "ccc"]


def test_artifacts_newest_push_first(http, timeline):
    reg, newest_first = timeline
    items, _ = api_list_all(http, api_image_path(reg, "aaa", "/artifacts"))
    assert [i["digest"] for i in items] == [img.digest for img in newest_first], items
    times = [parse_rfc3339(i["pushed_at"]) for i in items]
    assert times[0] > times[1] > times[2], items
    paged, _ = api_list_all(http, api_image_path(reg, "aaa", "/artifacts"), limit=1)
    assert [i["digest"] for i in paged] == [img.digest for img in newest_first]


def test_a_push_again_moves_pushed_at(http, new_registry):
    """Pushing a digest again (by digest, or under another tag) makes it the
    newest push: cleanup's grace and keep rules go by the last push."""
    reg = new_registry("rp")
    first, second = small_image(), small_image()
    push_tags(http, f"{reg}/app", first, "v1")
    push_tags(http, f"{reg}/app", second, "v2")
    before = {i["digest"]: parse_rfc3339(i["pushed_at"]) for i in api_list_all(http, api_image_path(reg, "app", "/artifacts"))[0]}
    time.sleep(1.1)  # pushed_at has second precision
    assert_status(http.put_manifest(f"{reg}/app", first.digest, first.manifest, first.media_type), 201)
    items, _ = api_list_all(http, api_image_path(reg, "app", "/artifacts"))
    assert [i["digest"] for i in items] == [first.digest, second.digest], items
    assert parse_rfc3339(items[0]["pushed_at"]) > before[first.digest], (before, items)
    assert parse_rfc3339(items[1]["pushed_at"]) == before[second.digest], (before, items)


def test_a_platform_manifest_an_index_lists_is_not_deleted_alone(http, new_registry):
    """Deleting it would break every pull of its platform through the index:
    refused until the index goes (405 UNSUPPORTED on /v2, whose error codes
    have no conflict; 409 CONFLICT on the admin API)."""
    reg = new_registry("ci")
    name = f"{reg}/app"
    amd, arm = small_image(arch="amd64"), small_image(arch="arm64")
    index = push_index(http, name, [(amd, {"architecture": "amd64", "os": "linux"}),
                                    (arm, {"architecture": "arm64", "os": "linux"})], tag="v1")
    r = http.delete(f"/v2/{name}/manifests/{arm.digest}")
    assert_status(r, 405)
    assert r.json()["errors"][0]["code"] == "UNSUPPORTED" and sha256_digest(index) in r.json()["errors"][0]["message"], r.text
    assert r.headers["Allow"] == "GET, HEAD, PUT", r.headers
    assert_problem(http.delete(api_image_path(reg, "app", f"/artifacts/{arm.digest}")), 409, "CONFLICT")
    assert http.get_manifest(name, arm.digest).content == arm.manifest
    assert_status(http.delete(f"/v2/{name}/manifests/{sha256_digest(index)}"), 202)
    assert_status(http.delete(f"/v2/{name}/manifests/{arm.digest}"), 202)
    assert_status(http.delete(api_image_path(reg, "app", f"/artifacts/{amd.digest}")), 204)


def test_images_bad_sort_is_400(http, new_registry):
    reg = new_registry("bs")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    assert_problem(http.get(api_image_path(reg), params={"sort": "size"}), 400)


def test_images_of_unknown_registry(http):
    assert_problem(http.get(api_image_path(unique("nx"))), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# One image: GET with every field, names with "/"
# ---------------------------------------------------------------------------


def test_get_image_with_slash_in_name(http, new_registry):
    reg = new_registry("gi")
    t0 = time.time()
    push_tags(http, f"{reg}/team/app", small_image(), "v1", "v2")
    push_tags(http, f"{reg}/team/app", small_image(), "v3")
    push_tags(http, f"{reg}/team/app/sub", small_image(), "v1")
    t1 = time.time()

    path = api_image_path(reg, "team/app")
    assert "/images/team%2Fapp" in path
    r = http.get(path)
    assert_status(r, 200)
    body = r.json()
    assert IMAGE_FIELDS | {"description"} <= set(body), body
    assert body["name"] == "team/app"
    assert body["registry"] == reg
    assert body["full_name"] == f"{reg}/team/app"
    assert body["artifacts"] == 2 and body["tags"] == 3, body
    assert body["pull_count"] == 0 and body["last_pulled_at"] is None, body
    assert body["tag_mutability"] == "mutable"
    assert_no_description(body["short_description"])
    assert_no_description(body["description"])
    assert_time_between(body["created_at"], t0, t1)
    assert_time_between(body["updated_at"], t0, t1)

    # The nested image is its own image, with its own counts.
    sub = api_get_json(http, api_image_path(reg, "team/app/sub"))
    assert (sub["name"], sub["full_name"], sub["artifacts"], sub["tags"]) == (
        "team/app/sub", f"{reg}/team/app/sub", 1, 1,
    ), sub
    # "team" is only a prefix, not an image.
    assert_problem(http.get(api_image_path(reg, "team")), 404, "NOT_FOUND")
    assert image_names(http, reg) == ["team/app", "team/app/sub"]


def test_get_unknown_image_and_registry(http, new_registry):
    reg = new_registry("gu")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    assert_problem(http.get(api_image_path(reg, "nope")), 404, "NOT_FOUND")
    assert_problem(http.get(api_image_path(unique("nx"), "app")), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# PATCH
# ---------------------------------------------------------------------------


def test_patch_short_description(http, new_registry):
    reg = new_registry("ps")
    push_tags(http, f"{reg}/team/app", small_image(), "v1")
    path = api_image_path(reg, "team/app")

    exact = "s" * 99 + "!"  # 100 characters: the limit
    r = http.patch(path, json={"short_description": exact})
    assert_status(r, 200)
    body = r.json()
    assert body["short_description"] == exact and body["name"] == "team/app", body
    assert IMAGE_FIELDS <= set(body), body
    assert api_get_json(http, path)["short_description"] == exact
    assert images_by_name(http, reg)["team/app"]["short_description"] == exact

    assert_problem(http.patch(path, json={"short_description": "x" * 101}), 400)
    assert api_get_json(http, path)["short_description"] == exact, "a refused PATCH must change nothing"

    # Characters, not bytes: 100 non-ASCII characters fit.
    wide = "é" * 100
    r = http.patch(path, json={"short_description": wide})
    assert_status(r, 200)
    assert api_get_json(http, path)["short_description"] == wide
    # Code points, as the spec's maxLength counts: 100 'é' written as e + combining accent are 200.
    assert_problem(http.patch(path, json={"short_description": "e\u0301" * 100}), 400)
    assert api_get_json(http, path)["short_description"] == wide


def test_patch_description(http, new_registry):
    reg = new_registry("pd")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    path = api_image_path(reg, "app")
    assert_status(http.patch(path, json={"short_description": "tiny"}), 200)

    md = "# App\n\nA *Markdown* description — with ünïcode.\n\n```sh\ndocker pull x\n```\n\n| a | b |\n|---|---|\n"
    r = http.patch(path, json={"description": md})
    assert_status(r, 200)
    assert r.json()["description"] == md
    got = api_get_json(http, path)
    assert got["description"] == md
    assert got["short_description"] == "tiny", "PATCH of one field leaves the others alone"
    assert got["tag_mutability"] == "mutable"

    # Absent or null: unchanged (api-spec/openapi.yaml).
    r = http.patch(path, json={"description": None, "short_description": None})
    assert_status(r, 200)
    assert (r.json()["description"], r.json()["short_description"]) == (md, "tiny"), r.json()

    limit = "d" * (64 * KiB)
    assert_status(http.patch(path, json={"description": limit}), 200)
    assert api_get_json(http, path)["description"] == limit
    assert_problem(http.patch(path, json={"description": "d" * (64 * KiB + 1)}), 400)
    assert api_get_json(http, path)["description"] == limit


def test_patch_tag_mutability(http, new_registry):
    reg = new_registry("pm")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    path = api_image_path(reg, "app")

    r = http.patch(path, json={"tag_mutability": "immutable"})
    assert_status(r, 200)
    assert r.json()["tag_mutability"] == "immutable"
    assert api_get_json(http, path)["tag_mutability"] == "immutable"
    assert images_by_name(http, reg)["app"]["tag_mutability"] == "immutable"

    for bad in ("sometimes", "IMMUTABLE", "", True):
        assert_problem(http.patch(path, json={"tag_mutability": bad}), 400)
    assert api_get_json(http, path)["tag_mutability"] == "immutable"

    r = http.patch(path, json={"tag_mutability": None})  # null: unchanged
    assert_status(r, 200)
    assert r.json()["tag_mutability"] == "immutable"

    r = http.patch(path, json={"tag_mutability": "mutable", "short_description": "both at once"})
    assert_status(r, 200)
    got = api_get_json(http, path)
    assert (got["tag_mutability"], got["short_description"]) == ("mutable", "both at once")


def test_patch_invalid_leaves_everything(http, new_registry):
    """One bad field refuses the whole PATCH: nothing of it is applied."""
    reg = new_registry("pi")
    push_tags(http, f"{reg}/app", small_image(), "v1")
    path = api_image_path(reg, "app")
    r = http.patch(path, json={"short_description": "fine", "tag_mutability": "nope"})
    assert_problem(r, 400)
    got = api_get_json(http, path)
    assert_no_description(got["short_description"])
    assert got["tag_mutability"] == "mutable"


def test_patch_unknown_image(http, new_registry):
    reg = new_registry("pu")
    assert_problem(http.patch(api_image_path(reg, "ghost"), json={"short_description": "x"}), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# DELETE image
# ---------------------------------------------------------------------------


def test_delete_image(http, new_registry):
    reg = new_registry("di")
    shared = make_layer(2 * KiB, "shared.bin")
    a = make_image(layers=[shared])
    b = small_image()
    sub = make_image(layers=[shared, make_layer(KiB)])
    apps = small_image()
    push_tags(http, f"{reg}/app", a, "v1", "latest")
    push_tags(http, f"{reg}/app", b)
    push_tags(http, f"{reg}/app/sub", sub, "v1")
    push_tags(http, f"{reg}/apps", apps, "v1")

    r = http.delete(api_image_path(reg, "app"))
    assert_status(r, 204)

    for ref in ("v1", "latest", a.digest, b.digest):
        assert_status(http.get_manifest(f"{reg}/app", ref), 404)
    assert_problem(http.get(api_image_path(reg, "app")), 404, "NOT_FOUND")
    assert_problem(http.get(api_image_path(reg, "app", "/artifacts")), 404, "NOT_FOUND")
    assert_problem(http.get(api_image_path(reg, "app", "/tags")), 404, "NOT_FOUND")
    assert image_names(http, reg) == ["app/sub", "apps"]

    # Images whose names start with "app" are untouched, including a layer they share.
    g = http.get_manifest(f"{reg}/app/sub", "v1")
    assert_status(g, 200)
    assert g.content == sub.manifest
    blob = http.get_blob(f"{reg}/app/sub", sha256_digest(shared))
    assert_status(blob, 200)
    assert blob.content == shared
    assert http.get_manifest(f"{reg}/apps", "v1").content == apps.manifest
    usage = api_get_json(http, f"/api/v1/registries/{reg}/usage")
    assert (usage["images"], usage["artifacts"], usage["tags"]) == (2, 2, 2), usage

    assert_problem(http.delete(api_image_path(reg, "app")), 404, "NOT_FOUND")

    # Pushing the name again starts from nothing.
    push_tags(http, f"{reg}/app", a, "v2")
    got = api_get_json(http, api_image_path(reg, "app"))
    assert (got["artifacts"], got["tags"]) == (1, 1), got
    assert_status(http.get_manifest(f"{reg}/app", "v1"), 404)


def test_delete_image_with_slash_in_name(http, new_registry):
    reg = new_registry("ds")
    img = small_image()
    push_tags(http, f"{reg}/team/app", img, "v1")
    push_tags(http, f"{reg}/team", small_image(), "v1")
    assert_status(http.delete(api_image_path(reg, "team/app")), 204)
    assert_status(http.get_manifest(f"{reg}/team/app", "v1"), 404)
    assert_status(http.get_manifest(f"{reg}/team", "v1"), 200)
    assert image_names(http, reg) == ["team"]


# ---------------------------------------------------------------------------
# Pull statistics
# ---------------------------------------------------------------------------


def _wait_for_pulls(client, reg: str, expected: dict[str, int]) -> dict[str, dict]:
    """Poll the image listing until every image has at least its expected
    pull count (counts are flushed in batches); returns the items by name."""

    def ready():
        by = images_by_name(client, reg)
        return by if all(by[n]["pull_count"] >= c for n, c in expected.items()) else None

    return wait_until(ready, timeout=PULL_TIMEOUT, interval=0.3, message=f"pull counts {expected}")


def _wait_for_image_pulls(client, path: str, count: int) -> dict:
    def ready():
        body = api_get_json(client, path)
        return body if body["pull_count"] >= count else None

    return wait_until(ready, timeout=PULL_TIMEOUT, interval=0.3, message=f"pull count {count} at {path}")


@pytest.fixture(scope="module")
def pulled(http):
    """A registry whose images were pulled a known number of times:
    bb: artifact b1 3 GETs (2 by tag, 1 by digest) + 3 HEADs, b2 1 GET;
    cc: 2 GETs; aa: 2 HEADs only; dd: only read through the admin API
    (artifact with its manifest, listings), which is not a pull. The admin
    reads and HEADs come before the last GETs, so once those GETs show, the
    batch holding them has been written too."""
    reg = create_registry(http, "pl")
    b1, b2, c, a, d = (small_image() for _ in range(5))
    push_tags(http, f"{reg}/bb", b1, "v1")
    push_tags(http, f"{reg}/bb", b2, "v2")
    push_tags(http, f"{reg}/cc", c, "v1")
    push_tags(http, f"{reg}/aa", a, "v1")
    push_tags(http, f"{reg}/dd", d, "v1")

    before = time.time()
    for _ in range(3):
        api_get_json(http, api_image_path(reg, "dd", f"/artifacts/{d.digest}"))
        api_list_all(http, api_image_path(reg, "dd", "/artifacts"))
        api_get_json(http, api_image_path(reg, "dd"))
    for ref in ("v1", "v1", b1.digest):
        assert_status(http.get_manifest(f"{reg}/bb", ref), 200)
    for _ in range(3):
        assert_status(http.get_manifest(f"{reg}/bb", "v1", method="HEAD"), 200)
    assert_status(http.get_manifest(f"{reg}/bb", "v2"), 200)
    for _ in range(2):
        assert_status(http.get_manifest(f"{reg}/aa", "v1", method="HEAD"), 200)
        assert_status(http.get_manifest(f"{reg}/cc", "v1"), 200)
    after = time.time()
    _wait_for_pulls(http, reg, {"bb": 4, "cc": 2})
    return {"reg": reg, "b1": b1, "b2": b2, "c": c, "a": a, "before": before, "after": after}


def test_pull_counts_per_image(http, pulled):
    by = images_by_name(http, pulled["reg"])
    assert {n: i["pull_count"] for n, i in by.items()} == {"aa": 0, "bb": 4, "cc": 2, "dd": 0}, by
    for n in ("bb", "cc"):
        assert_time_between(by[n]["last_pulled_at"], pulled["before"], pulled["after"])
    # HEAD is not a pull.
    assert by["aa"]["last_pulled_at"] is None and by["dd"]["last_pulled_at"] is None, by
    one = api_get_json(http, api_image_path(pulled["reg"], "bb"))
    assert one["pull_count"] == 4
    assert_time_between(one["last_pulled_at"], pulled["before"], pulled["after"])


def test_pull_counts_per_artifact(http, pulled):
    reg = pulled["reg"]
    items, _ = api_list_all(http, api_image_path(reg, "bb", "/artifacts"))
    by = {i["digest"]: i for i in items}
    assert {d: i["pull_count"] for d, i in by.items()} == {pulled["b1"].digest: 3, pulled["b2"].digest: 1}, items
    for i in items:
        assert_time_between(i["last_pulled_at"], pulled["before"], pulled["after"])
    # The image's last pull is its artifacts' latest.
    image_last = parse_rfc3339(api_get_json(http, api_image_path(reg, "bb"))["last_pulled_at"])
    assert image_last >= max(parse_rfc3339(i["last_pulled_at"]) for i in items) - 1

    one = api_get_json(http, api_image_path(reg, "bb", f"/artifacts/{pulled['b1'].digest}"))
    assert one["pull_count"] == 3
    (a_item,) = api_list_all(http, api_image_path(reg, "aa", "/artifacts"))[0]
    assert (a_item["pull_count"], a_item["last_pulled_at"]) == (0, None), a_item


def test_sort_by_pulls(http, pulled):
    reg = pulled["reg"]
    # Descending by pulls, ties (aa, dd: 0) by name.
    assert image_names(http, reg, sort="pulls") == ["bb", "cc", "aa", "dd"]
    paged, _ = api_list_all(http, api_image_path(reg), {"sort": "pulls"}, limit=1)
    assert [i["name"] for i in paged] == ["bb", "cc", "aa", "dd"]
    assert image_names(http, reg, sort="pulls", q="d") == ["dd"]


def test_pull_counts_survive_clean_restart(make_server):
    srv = make_server(registries=["pr"], label="pulls")
    c = srv.client()
    img, other = small_image(), small_image()
    push_tags(c, "pr/app", img, "v1")
    push_tags(c, "pr/other", other, "v1")
    path = api_image_path("pr", "app")
    assert_status(c.patch(path, json={"short_description": "kept", "tag_mutability": "immutable"}), 200)

    before = time.time()
    for ref in ("v1", "v1", "v1", img.digest):
        assert_status(c.get_manifest("pr/app", ref), 200)
    for _ in range(2):
        assert_status(c.get_manifest("pr/app", "v1", method="HEAD"), 200)
    after = time.time()

    # Straight to SIGTERM: the counts must be written at shutdown, not lost
    # with the batch that had not been flushed yet.
    srv.terminate()
    srv.start()
    c = srv.client()

    got = _wait_for_image_pulls(c, path, 4)
    assert got["pull_count"] == 4, got
    assert_time_between(got["last_pulled_at"], before, after)
    assert (got["short_description"], got["tag_mutability"]) == ("kept", "immutable"), got
    art = api_get_json(c, api_image_path("pr", "app", f"/artifacts/{img.digest}"))
    assert art["pull_count"] == 4, art
    assert_time_between(art["last_pulled_at"], before, after)
    o = api_get_json(c, api_image_path("pr", "other"))
    assert (o["pull_count"], o["last_pulled_at"]) == (0, None), o

    # Counting goes on from there.
    assert_status(c.get_manifest("pr/app", "v1"), 200)
    got = _wait_for_image_pulls(c, path, 5)
    assert got["pull_count"] == 5, got


def test_pull_counts_after_kill9_never_exceed_pulls(make_server):
    """After `kill -9` the last batch may be lost, but counts are never
    invented and go on from what was kept."""
    srv = make_server(registries=["pk"], label="pulls-kill9")
    c = srv.client()
    img = small_image()
    push_tags(c, "pk/app", img, "v1")
    path = api_image_path("pk", "app")
    for _ in range(3):
        assert_status(c.get_manifest("pk/app", "v1"), 200)
    assert _wait_for_image_pulls(c, path, 3)["pull_count"] == 3

    srv.kill9()
    srv.start()
    c = srv.client()
    kept = api_get_json(c, path)
    assert 0 <= kept["pull_count"] <= 3, kept
    assert (kept["last_pulled_at"] is None) == (kept["pull_count"] == 0), kept
    assert api_get_json(c, api_image_path("pk", "app", f"/artifacts/{img.digest}"))["pull_count"] == kept["pull_count"]

    assert_status(c.get_manifest("pk/app", img.digest), 200)
    got = _wait_for_image_pulls(c, path, kept["pull_count"] + 1)
    assert got["pull_count"] == kept["pull_count"] + 1, got
    assert got["last_pulled_at"] is not None
