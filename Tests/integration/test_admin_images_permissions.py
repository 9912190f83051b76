"""Who may call the images/artifacts/tags admin API (docs/admin-api.md,
"Permissions"; roles in docs/identity.md): reading needs any role on the
registry, changing anything needs admin of the registry; unauthenticated is
401 `UNAUTHORIZED`, authenticated without the right 403 `FORBIDDEN`, also for
images that do not exist (names are not probed by status).

Principals: global viewer, global uploader, admin of the registry (`radmin`),
admin of another registry (`oadmin`), anonymous. Case ids are
`route-principal`. Every write case acts on an image of its own, pushed by the
bootstrap admin, and checks afterwards that a refused call changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from helpers import (
    KiB,
    Image,
    Registry,
    api_get_json,
    api_image_path,
    api_list_all,
    assert_problem,
    assert_status,
    create_registry,
    make_image,
    new_principal,
    push_tags,
    unique,
)

VIEWER, UPLOADER, RADMIN, OADMIN, ANON = "viewer", "uploader", "radmin", "oadmin", "anonymous"
READERS = (VIEWER, UPLOADER, RADMIN)


@dataclass
class World:
    admin: Registry
    reg: str  # the registry every case acts on
    other: str  # the registry oadmin administers
    img: Image  # <reg>/team/app:v1
    clients: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(server, http) -> World:
    reg, other = create_registry(http, "pa"), create_registry(http, "po")
    img = make_image(n_layers=1, layer_size=KiB)
    push_tags(http, f"{reg}/team/app", img, "v1")
    push_tags(http, f"{other}/app", make_image(n_layers=1, layer_size=KiB), "v1")
    w = World(admin=http, reg=reg, other=other, img=img)
    for principal, role, scope in (
        (VIEWER, "viewer", None),
        (UPLOADER, "uploader", None),
        (RADMIN, "admin", reg),
        (OADMIN, "admin", other),
    ):
        _, creds = new_principal(http, role, scope, prefix=principal[:2])
        w.clients[principal] = server.client(creds=creds)
    w.clients[ANON] = server.anon_client()
    # Sanity: oadmin is an admin where it should be.
    assert_status(w.clients[OADMIN].get(api_image_path(other, "app")), 200)
    return w


# ---------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------

# route -> (path builder, check of a 200 body)
READS = {
    "usage": (lambda w: f"/api/v1/registries/{w.reg}/usage", lambda w, b: b["images"] == 1 and b["tags"] == 1),
    "images": (lambda w: api_image_path(w.reg), lambda w, b: [i["name"] for i in b["items"]] == ["team/app"]),
    "image": (lambda w: api_image_path(w.reg, "team/app"), lambda w, b: b["full_name"] == f"{w.reg}/team/app"),
    "artifacts": (
        lambda w: api_image_path(w.reg, "team/app", "/artifacts"),
        lambda w, b: [i["digest"] for i in b["items"]] == [w.img.digest],
    ),
    "artifact": (
        lambda w: api_image_path(w.reg, "team/app", f"/artifacts/{w.img.digest}"),
        lambda w, b: b["digest"] == w.img.digest and b["manifest"] == w.img.manifest_json,
    ),
    "tags": (
        lambda w: api_image_path(w.reg, "team/app", "/tags"),
        lambda w, b: [(t["name"], t["digest"]) for t in b["items"]] == [("v1", w.img.digest)],
    ),
    "artifact-tags": (
        lambda w: api_image_path(w.reg, "team/app", f"/artifacts/{w.img.digest}/tags"),
        lambda w, b: [t["name"] for t in b["items"]] == ["v1"],
    ),
}


@pytest.mark.parametrize("principal", [*READERS, OADMIN, ANON])
@pytest.mark.parametrize("route", list(READS))
def test_read(world, route, principal):
    path, check = READS[route]
    r = world.clients[principal].get(path(world))
    if principal in READERS:
        assert_status(r, 200)
        assert check(world, r.json()), r.text
    elif principal == OADMIN:
        assert_problem(r, 403, "FORBIDDEN")
    else:
        assert_problem(r, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("principal", [*READERS, OADMIN, ANON])
def test_read_missing_image(world, principal):
    """404 only for those who may look; the others get what they would get
    for an existing image."""
    r = world.clients[principal].get(api_image_path(world.reg, "no/such"))
    expected = {OADMIN: (403, "FORBIDDEN"), ANON: (401, "UNAUTHORIZED")}.get(principal, (404, "NOT_FOUND"))
    assert_problem(r, *expected)


@pytest.mark.parametrize("principal", [*READERS, OADMIN, ANON])
def test_registries_q_is_filtered_by_rights(world, principal):
    r = world.clients[principal].get("/api/v1/registries", params={"q": world.reg})
    if principal == ANON:
        assert_problem(r, 401, "UNAUTHORIZED")
        return
    assert_status(r, 200)
    names = [i["name"] for i in r.json()["items"]]
    assert names == ([] if principal == OADMIN else [world.reg]), names


def test_oadmin_sees_its_own_registry(world):
    items, _ = api_list_all(world.clients[OADMIN], "/api/v1/registries", {"q": world.other})
    assert [i["name"] for i in items] == [world.other]
    usage = api_get_json(world.clients[OADMIN], f"/api/v1/registries/{world.other}/usage")
    assert usage["images"] == 1


# ---------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------

# route -> (method, path suffix builder, json body builder, success status)
WRITES = {
    "patch-short-description": ("PATCH", lambda img: "", lambda img: {"short_description": "changed"}, 200),
    "patch-description": ("PATCH", lambda img: "", lambda img: {"description": "# changed"}, 200),
    "patch-tag-mutability": ("PATCH", lambda img: "", lambda img: {"tag_mutability": "immutable"}, 200),
    "delete-image": ("DELETE", lambda img: "", lambda img: None, 204),
    "delete-artifact": ("DELETE", lambda img: f"/artifacts/{img.digest}", lambda img: None, 204),
    "create-tag": ("POST", lambda img: "/tags", lambda img: {"name": "new", "digest": img.digest}, 201),
    "delete-tag": ("DELETE", lambda img: "/tags/v1", lambda img: None, 204),
}


def _fresh_image(world) -> tuple[str, Image]:
    image = unique("w")
    img = make_image(n_layers=1, layer_size=KiB)
    push_tags(world.admin, f"{world.reg}/{image}", img, "v1")
    return image, img


def _assert_untouched(world, image: str, img: Image) -> None:
    got = api_get_json(world.admin, api_image_path(world.reg, image))
    assert (got["short_description"], got["description"]) == ("", ""), got
    assert got["tag_mutability"] == "mutable", got
    assert (got["artifacts"], got["tags"]) == (1, 1), got
    items, _ = api_list_all(world.admin, api_image_path(world.reg, image, "/tags"))
    assert [(t["name"], t["digest"]) for t in items] == [("v1", img.digest)], items
    assert world.admin.get_manifest(f"{world.reg}/{image}", "v1").content == img.manifest


@pytest.mark.parametrize("principal", [VIEWER, UPLOADER, OADMIN, ANON, RADMIN])
@pytest.mark.parametrize("route", list(WRITES))
def test_write(world, route, principal):
    method, suffix, body, success = WRITES[route]
    image, img = _fresh_image(world)
    kw = {} if body(img) is None else {"json": body(img)}
    r = world.clients[principal].request(method, api_image_path(world.reg, image, suffix(img)), **kw)
    if principal == RADMIN:
        assert_status(r, success)
        return
    if principal == ANON:
        assert_problem(r, 401, "UNAUTHORIZED")
    else:
        assert_problem(r, 403, "FORBIDDEN")
    _assert_untouched(world, image, img)


def test_radmin_writes_take_effect(world):
    """The registry-scoped admin's changes are real, not just 2xx."""
    c = world.clients[RADMIN]
    image, img = _fresh_image(world)
    path = api_image_path(world.reg, image)
    assert_status(c.patch(path, json={"short_description": "by radmin", "tag_mutability": "immutable"}), 200)
    got = api_get_json(world.admin, path)
    assert (got["short_description"], got["tag_mutability"]) == ("by radmin", "immutable")
    assert_status(c.post(api_image_path(world.reg, image, "/tags"), json={"name": "v2", "digest": img.digest}), 201)
    assert world.admin.get_manifest(f"{world.reg}/{image}", "v2").content == img.manifest
    assert_status(c.delete(path), 204)
    assert_status(world.admin.get_manifest(f"{world.reg}/{image}", "v1"), 404)


def test_write_on_missing_image_is_403_not_404(world):
    """Someone without any role on the registry cannot probe image names."""
    c = world.clients[OADMIN]
    missing = api_image_path(world.reg, "no/such")
    assert_problem(c.patch(missing, json={"short_description": "x"}), 403, "FORBIDDEN")
    assert_problem(c.delete(missing), 403, "FORBIDDEN")
