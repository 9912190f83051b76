"""Who may do what (docs/identity.md, "Roles" and "Authentication"): every
data-plane route and every admin route against every kind of principal, plus
registry-scoped visibility, cross-registry mounts and anonymous pull.

The matrix runs on a server of its own (`authz`, registries `ra` and `rb`,
each holding `app:v1`), started with --token-ttl 2 so that a token fetched
during setup has expired by the time the cases run. Users authenticate with
Basic (no token round trip); mutating cases build their own fresh target
(tag, manifest, blob, upload session, scratch user, registry) as the
bootstrap admin first, so no case depends on another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from conftest import UNTHROTTLED
from helpers import (
    MT_OCI_MANIFEST,
    Registry,
    api_bind,
    api_create_key,
    api_create_user,
    assert_oci_error,
    assert_problem,
    assert_status,
    create_registry,
    describe,
    jwt_decode,
    make_image,
    new_principal,
    oci_error_codes,
    parse_challenge,
    parse_challenges,
    random_bytes,
    sha256_digest,
    unique,
    wrong_secret,
    with_query,
)

OCTET = {"Content-Type": "application/octet-stream"}
REGS = ("ra", "rb")
TOKEN_TTL = 2

# Principals. The last four hold credentials that must be refused outright.
ADMIN, VIEWER, UPLOADER, RBADMIN = "admin", "viewer", "uploader", "rbadmin"
ANON, WRONG, DISABLED, EXPIRED = "anonymous", "wrong-secret", "disabled-key", "expired-token"
SCOPED = "other-repo-token"  # admin's token for ra/other:pull,push, used on ra/app and rb/app
BAD = (ANON, WRONG, DISABLED, EXPIRED)
PRINCIPALS = (ADMIN, VIEWER, UPLOADER, RBADMIN, *BAD, SCOPED)

ALL_RIGHTS = {"view", "push", "delete", "admin-of", "global-admin", "global-read"}


def rights(principal: str, registry: str | None) -> set[str]:
    """The role table of docs/identity.md. `registry` is the registry the route
    acts on (None for global routes); "fresh-rb" is a new registry on which
    rbadmin holds an admin binding, "fresh" a new one without."""
    if principal == ADMIN:
        return ALL_RIGHTS
    if principal == VIEWER:
        return {"view", "global-read"}
    if principal == UPLOADER:
        return {"view", "push"}
    if principal == RBADMIN:
        return {"view", "push", "delete", "admin-of"} if registry in ("rb", "fresh-rb") else set()
    raise AssertionError(principal)


# ---------------------------------------------------------------------------
# The world the matrix runs in
# ---------------------------------------------------------------------------


@dataclass
class World:
    srv: object
    admin: Registry
    creds: dict = field(default_factory=dict)  # principal -> (key, secret)
    user_of: dict = field(default_factory=dict)  # principal -> user id
    img: dict = field(default_factory=dict)  # registry -> Image at <reg>/app:v1
    expired_token: str = ""
    _clients: dict = field(default_factory=dict)

    def client(self, principal: str) -> Registry:
        if principal == SCOPED:
            # A fresh token per case: the server's tokens live 2 s.
            return self.srv.client(token=self.admin.token_for("repository:ra/other:pull,push"))
        if principal not in self._clients:
            if principal == ANON:
                c = self.srv.anon_client()
            elif principal == EXPIRED:
                c = self.srv.client(token=self.expired_token)
            else:
                c = self.srv.client(creds=self.creds[principal])
            self._clients[principal] = c
        return self._clients[principal]


@pytest.fixture(scope="module")
def world(spawn_server) -> World:
    # No GC after deletes: the one GC run the matrix starts must not find another running.
    srv = spawn_server(
        "authz", registries=REGS, extra_args=[*UNTHROTTLED, "--token-ttl", str(TOKEN_TTL), "--gc-after-delete", "0"]
    )
    admin = srv.client()
    w = World(srv=srv, admin=admin)
    for reg in REGS:
        img = make_image(n_layers=1, layer_size=2048)
        admin.push_image(f"{reg}/app", img, "v1")
        w.img[reg] = img

    # The token to be expired: valid for everything the cases touch, and shown
    # to work before it expires, so its 401s later are down to expiry alone.
    got = time.monotonic()
    w.expired_token = admin.token_for(
        "repository:ra/app:pull,push,delete", "repository:rb/app:pull,push,delete", "registry:catalog:*"
    )
    _, claims = jwt_decode(w.expired_token)
    assert claims["exp"] - claims["iat"] == TOKEN_TTL, claims
    assert_status(srv.client(token=w.expired_token).get_manifest("ra/app", "v1"), 200)

    w.creds[ADMIN], w.user_of[ADMIN] = srv.admin_creds, "admin"
    for principal, role, reg in ((VIEWER, "viewer", None), (UPLOADER, "uploader", None), (RBADMIN, "admin", "rb")):
        api_create_user(admin, principal)
        api_bind(admin, principal, role, reg)
        w.creds[principal] = api_create_key(admin, principal)
        w.user_of[principal] = principal
    # Global admins whose credentials are broken: a refusal can only come
    # from authentication, never from a missing right.
    api_create_user(admin, "typo")
    api_bind(admin, "typo", "admin")
    w.creds[WRONG] = wrong_secret(api_create_key(admin, "typo"))
    api_create_user(admin, "ghost")
    api_bind(admin, "ghost", "admin")
    ghost = api_create_key(admin, "ghost")
    assert_status(srv.client(creds=ghost).get("/v2/"), 200)
    assert_status(admin.patch(f"/api/v1/users/ghost/access-keys/{ghost[0]}", json={"disabled": True}), 200)
    w.creds[DISABLED] = ghost

    left = got + TOKEN_TTL + 1.2 - time.monotonic()
    if left > 0:
        time.sleep(left)
    return w


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    id: str
    need: str  # "auth", "view", "push", "delete", "admin-of", "global-admin"
    ok: int
    call: Callable  # (world, principal, client) -> Response
    registry: str | None = None
    api: bool = False
    scope: str | None = None  # actions in the anonymous challenge's scope (repository routes)
    head: bool = False
    token_ok: bool = False  # a valid token without any matching access claim suffices


def _name(reg: str) -> str:
    return f"{reg}/app"


def _session(w: World, principal: str, c: Registry, reg: str) -> str:
    """A fresh upload session: opened by the principal itself when it may push
    there, otherwise by the admin (so the case tests someone else's session)."""
    opener = c if principal in (ADMIN, UPLOADER, RBADMIN) and "push" in rights(principal, reg) else w.admin
    r = opener.start_upload(_name(reg))
    assert r.status_code == 202, f"setup: opening an upload session failed:\n{describe(r)}"
    return opener.abs_location(r)


def _fresh_manifest(w: World, reg: str) -> str:
    """A new manifest (same blobs, distinct annotation) pushed by digest."""
    base = w.img[reg]
    img = make_image(config=base.config, layers=base.layers, annotations={"case": unique()})
    r = w.admin.put_manifest(_name(reg), img.digest, img.manifest)
    assert r.status_code == 201, f"setup: manifest PUT failed:\n{describe(r)}"
    return img.digest


def _fresh_tag(w: World, reg: str) -> str:
    tag = unique("t")
    r = w.admin.put_manifest(_name(reg), tag, w.img[reg].manifest)
    assert r.status_code == 201, f"setup: tag PUT failed:\n{describe(r)}"
    return tag


def _scratch_user(w: World) -> str:
    return api_create_user(w.admin, unique("s"))


def _v2_routes(reg: str) -> list[Route]:
    n = _name(reg)

    def layer(w):
        return sha256_digest(w.img[reg].layers[0])

    def put_upload(w, p, c):
        data = random_bytes(64)
        return c.put(with_query(_session(w, p, c, reg), digest=sha256_digest(data)), data=data, headers=OCTET)

    return [
        Route(f"tags-list-{reg}", "view", 200, lambda w, p, c: c.get(f"/v2/{n}/tags/list"), reg, scope="pull"),
        Route(f"manifest-GET-{reg}", "view", 200, lambda w, p, c: c.get_manifest(n, "v1"), reg, scope="pull"),
        Route(f"manifest-HEAD-{reg}", "view", 200, lambda w, p, c: c.get_manifest(n, "v1", "HEAD"), reg, scope="pull",
              head=True),
        Route(f"manifest-PUT-{reg}", "push", 201,
              lambda w, p, c: c.put_manifest(n, unique("t"), w.img[reg].manifest), reg, scope="pull,push"),
        Route(f"manifest-DELETE-{reg}", "delete", 202,
              lambda w, p, c: c.delete(f"/v2/{n}/manifests/{_fresh_manifest(w, reg)}"), reg, scope="delete"),
        Route(f"tag-DELETE-{reg}", "delete", 202,
              lambda w, p, c: c.delete(f"/v2/{n}/manifests/{_fresh_tag(w, reg)}"), reg, scope="delete"),
        Route(f"blob-GET-{reg}", "view", 200, lambda w, p, c: c.get_blob(n, layer(w)), reg, scope="pull"),
        Route(f"blob-HEAD-{reg}", "view", 200, lambda w, p, c: c.head_blob(n, layer(w)), reg, scope="pull", head=True),
        Route(f"blob-DELETE-{reg}", "delete", 202,
              lambda w, p, c: c.delete(f"/v2/{n}/blobs/{w.admin.upload_blob(n, random_bytes(64))}"), reg,
              scope="delete"),
        Route(f"upload-POST-{reg}", "push", 202, lambda w, p, c: c.start_upload(n), reg, scope="pull,push"),
        Route(f"upload-PATCH-{reg}", "push", 202,
              lambda w, p, c: c.patch(_session(w, p, c, reg), data=b"abc", headers={**OCTET, "Content-Range": "0-2"}),
              reg, scope="pull,push"),
        Route(f"upload-PUT-{reg}", "push", 201, put_upload, reg, scope="pull,push"),
        # Status and cancel of a session are part of "uploads" (push); which
        # scope their challenge names is not pinned down by the doc.
        Route(f"upload-GET-{reg}", "push", 204, lambda w, p, c: c.get(_session(w, p, c, reg)), reg),
        Route(f"upload-DELETE-{reg}", "push", 204, lambda w, p, c: c.delete(_session(w, p, c, reg)), reg),
        Route(f"referrers-GET-{reg}", "view", 200,
              lambda w, p, c: c.get(f"/v2/{n}/referrers/{w.img[reg].digest}"), reg, scope="pull"),
    ]


V2_ROUTES = [
    Route("base-GET", "auth", 200, lambda w, p, c: c.get("/v2/"), token_ok=True),
    # "the catalog is filtered by rights anyway": read as "a valid token is
    # enough", whatever its access claims (see test_tokens for the scope).
    Route("catalog-GET", "auth", 200, lambda w, p, c: c.get("/v2/_catalog"), token_ok=True),
    *_v2_routes("ra"),
    *_v2_routes("rb"),
]


def _new_key(w: World) -> tuple[str, str]:
    user = _scratch_user(w)
    return user, api_create_key(w.admin, user)[0]


def _bound_role(w: World) -> str:
    user = _scratch_user(w)
    api_bind(w.admin, user, "viewer")
    return user


def _registry_for_rbadmin(w: World) -> str:
    name = create_registry(w.admin, "frb")
    api_bind(w.admin, RBADMIN, "admin", name)
    return name


def _api(id_, need, ok, call, registry=None) -> Route:
    return Route(id_, need, ok, call, registry, api=True)


API_ROUTES = [
    _api("me-GET", "auth", 200, lambda w, p, c: c.get("/api/v1/me")),
    _api("users-POST", "global-admin", 201, lambda w, p, c: c.post("/api/v1/users", json={"name": unique("n")})),
    _api("users-GET", "global-admin", 200, lambda w, p, c: c.get("/api/v1/users")),
    _api("user-GET", "global-admin", 200, lambda w, p, c: c.get(f"/api/v1/users/{VIEWER}")),
    _api("user-PATCH", "global-admin", 200,
         lambda w, p, c: c.patch(f"/api/v1/users/{_scratch_user(w)}", json={"disabled": True})),
    _api("user-DELETE", "global-admin", 204, lambda w, p, c: c.delete(f"/api/v1/users/{_scratch_user(w)}")),
    _api("keys-POST", "global-admin", 201, lambda w, p, c: c.post(f"/api/v1/users/{_scratch_user(w)}/access-keys")),
    _api("keys-GET", "global-admin", 200, lambda w, p, c: c.get(f"/api/v1/users/{VIEWER}/access-keys")),
    _api("key-PATCH", "global-admin", 200,
         lambda w, p, c: c.patch("/api/v1/users/%s/access-keys/%s" % _new_key(w), json={"disabled": True})),
    _api("key-DELETE", "global-admin", 204, lambda w, p, c: c.delete("/api/v1/users/%s/access-keys/%s" % _new_key(w))),
    _api("key-rotate-POST", "global-admin", 201,
         lambda w, p, c: c.post("/api/v1/users/%s/access-keys/%s/rotate" % _new_key(w), json={"overlap_seconds": 0})),
    _api("roles-GET", "global-admin", 200, lambda w, p, c: c.get(f"/api/v1/users/{VIEWER}/roles")),
    _api("roles-POST", "global-admin", 201,
         lambda w, p, c: c.post(f"/api/v1/users/{_scratch_user(w)}/roles", json={"role": "viewer"})),
    _api("role-DELETE", "global-admin", 204, lambda w, p, c: c.delete(f"/api/v1/users/{_bound_role(w)}/roles/viewer")),
    _api("registries-GET", "auth", 200, lambda w, p, c: c.get("/api/v1/registries")),
    _api("registries-POST", "global-admin", 201,
         lambda w, p, c: c.post("/api/v1/registries", json={"name": unique("c")})),
    *[_api(f"registry-GET-{r}", "view", 200, lambda w, p, c, r=r: c.get(f"/api/v1/registries/{r}"), r) for r in REGS],
    *[
        _api(f"registry-PATCH-{r}", "admin-of", 200,
             lambda w, p, c, r=r: c.patch(f"/api/v1/registries/{r}", json={"anonymous_pull": False}), r)
        for r in REGS
    ],
    _api("registry-DELETE-fresh", "admin-of", 204,
         lambda w, p, c: c.delete(f"/api/v1/registries/{create_registry(w.admin, 'fr')}"), "fresh"),
    _api("registry-DELETE-fresh-rb", "admin-of", 204,
         lambda w, p, c: c.delete(f"/api/v1/registries/{_registry_for_rbadmin(w)}"), "fresh-rb"),
    _api("system-usage-GET", "global-admin", 200, lambda w, p, c: c.get("/api/v1/system/usage")),
    _api("audit-logs-GET", "global-admin", 200, lambda w, p, c: c.get("/api/v1/audit-logs")),
    # Not under /api/v1, but gated and answered like it (metrics_access: authenticated, the default).
    _api("metrics-GET", "global-read", 200, lambda w, p, c: c.get("/metrics")),
]


def _policy(w: World, reg: str, kind: str) -> str:
    """A fresh protection or cleanup policy of `reg`, made by the admin."""
    body = {"image_pattern": unique("p"), "tag_pattern": "v*"}
    if kind == "cleanup":
        body["rule"] = "delete_untagged"
    r = w.admin.post(f"/api/v1/registries/{reg}/{kind}-policies", json=body)
    assert r.status_code == 201, f"setup: policy POST failed:\n{describe(r)}"
    return f"/api/v1/registries/{reg}/{kind}-policies/{r.json()['id']}"


def _fresh_registry(w: World, reg: str) -> str:
    return _registry_for_rbadmin(w) if reg == "fresh-rb" else create_registry(w.admin, "fr")


def _lifecycle_routes(reg: str) -> list[Route]:
    base = f"/api/v1/registries/{reg}"
    routes = []
    for kind in ("protection", "cleanup"):
        body = {"image_pattern": "x", "tag_pattern": "y"}
        if kind == "cleanup":
            body["rule"] = "delete_untagged"
        routes += [
            _api(f"{kind}-policies-GET-{reg}", "view", 200, lambda w, p, c, k=kind: c.get(f"{base}/{k}-policies"), reg),
            _api(f"{kind}-policies-POST-{reg}", "admin-of", 201,
                 lambda w, p, c, k=kind, b=body: c.post(f"{base}/{k}-policies", json={**b, "image_pattern": unique("i")}),
                 reg),
            _api(f"{kind}-policy-GET-{reg}", "view", 200, lambda w, p, c, k=kind: c.get(_policy(w, reg, k)), reg),
            _api(f"{kind}-policy-PATCH-{reg}", "admin-of", 200,
                 lambda w, p, c, k=kind: c.patch(_policy(w, reg, k), json={"enabled": False}), reg),
            _api(f"{kind}-policy-DELETE-{reg}", "admin-of", 204, lambda w, p, c, k=kind: c.delete(_policy(w, reg, k)),
                 reg),
        ]
    routes += [
        _api(f"cleanup-runs-GET-{reg}", "view", 200, lambda w, p, c: c.get(f"{base}/cleanup/runs"), reg),
        _api(f"cleanup-schedule-GET-{reg}", "view", 200, lambda w, p, c: c.get(f"{base}/cleanup/schedule"), reg),
        _api(f"cleanup-schedule-PUT-{reg}", "admin-of", 200,
             lambda w, p, c: c.put(f"{base}/cleanup/schedule", json={"cron": "0 4 * * *"}), reg),
        _api(f"old-tags-GET-{reg}", "view", 200,
             lambda w, p, c: c.get(f"{base}/old-tags", params={"before": "2100-01-01T00:00:00Z"}), reg),
        _api(f"old-tags-delete-POST-{reg}", "admin-of", 200,
             lambda w, p, c: c.post(f"{base}/old-tags/delete", json={"tags": [{"image": "app", "tag": _fresh_tag(w, reg)}]}),
             reg),
    ]
    return routes


LIFECYCLE_ROUTES = [
    *_lifecycle_routes("ra"),
    *_lifecycle_routes("rb"),
    # Each start gets a registry of its own, so no case finds another's run still going.
    *[
        _api(f"cleanup-run-POST-{r}", "admin-of", 202,
             lambda w, p, c, r=r: c.post(f"/api/v1/registries/{_fresh_registry(w, r)}/cleanup/runs",
                                         json={"dry_run": True}), r)
        for r in ("fresh", "fresh-rb")
    ],
    _api("gc-runs-POST", "global-admin", 202, lambda w, p, c: c.post("/api/v1/system/gc/runs")),
    _api("gc-runs-GET", "global-read", 200, lambda w, p, c: c.get("/api/v1/system/gc/runs")),
    _api("gc-schedule-GET", "global-read", 200, lambda w, p, c: c.get("/api/v1/system/gc/schedule")),
    _api("gc-schedule-PUT", "global-admin", 200,
         lambda w, p, c: c.put("/api/v1/system/gc/schedule", json={"cron": "15 3 * * *"})),
    _api("events-GET", "auth", 200, lambda w, p, c: c.get("/api/v1/events")),
]
API_ROUTES += LIFECYCLE_ROUTES


def expected(route: Route, principal: str):
    """An HTTP status, or "insufficient_scope" (401 with that error)."""
    if principal in BAD:
        return 401
    if principal == SCOPED:
        return route.ok if route.token_ok else "insufficient_scope"
    if route.need == "auth" or route.need in rights(principal, route.registry):
        return route.ok
    return 403


def _cases():
    for route in V2_ROUTES:
        for p in PRINCIPALS:
            yield pytest.param(route, p, id=f"{route.id}-{p}")
    for route in API_ROUTES:
        # A token carries repository access claims; what it means on the
        # admin API is not specified, so the scoped-token principal is only
        # run against /v2.
        for p in PRINCIPALS:
            if p != SCOPED:
                yield pytest.param(route, p, id=f"api-{route.id}-{p}")


def _check_challenge(w: World, route: Route, r, insufficient: bool) -> None:
    if route.api:
        # Only an access key and secret work on /api/v1: the challenge is Basic,
        # not one that sends the client for a token the API refuses.
        assert not insufficient
        assert parse_challenges(r.headers.get("WWW-Authenticate")) == {"Basic": {"realm": "berth", "charset": "UTF-8"}}, describe(r)
        return
    _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
    assert params.get("realm") == f"http://{w.srv.host}/auth/token", describe(r)
    assert params.get("service") == "berth", describe(r)
    if insufficient:
        assert params.get("error") == "insufficient_scope", describe(r)
    else:
        assert "error" not in params, describe(r)
    if route.id == "base-GET":
        assert "scope" not in params, describe(r)
    elif route.id == "catalog-GET":
        assert params.get("scope", "registry:catalog:*") == "registry:catalog:*", describe(r)
    elif route.scope:
        assert params.get("scope") == f"repository:{_name(route.registry)}:{route.scope}", describe(r)
    else:
        assert params.get("scope", "").startswith(f"repository:{_name(route.registry)}:"), describe(r)


@pytest.mark.parametrize("route,principal", list(_cases()))
def test_matrix(world, route, principal):
    c = world.client(principal)
    r = route.call(world, principal, c)
    want = expected(route, principal)
    if want == "insufficient_scope":
        assert_status(r, 401)
        _check_challenge(world, route, r, insufficient=True)
    elif want == 401:
        assert_status(r, 401)
        if principal == ANON:
            _check_challenge(world, route, r, insufficient=False)
            if route.api:
                assert_problem(r, 401, "UNAUTHORIZED")
            elif not route.head:
                assert "UNAUTHORIZED" in oci_error_codes(r), describe(r)
    elif want == 403:
        if route.api:
            assert_problem(r, 403, "FORBIDDEN")
        elif route.head:
            assert_status(r, 403)
        else:
            assert_oci_error(r, 403, "DENIED")
    else:
        assert_status(r, want)
        if route.id == "me-GET":
            assert r.json()["user"]["id"] == world.user_of[principal], r.text


# ---------------------------------------------------------------------------
# Registry-scoped bindings: hidden registries, 403 rather than 404, mounts
# ---------------------------------------------------------------------------


def _registry_names(c: Registry) -> list[str]:
    names, cursor = [], None
    for _ in range(1000):
        r = c.get("/api/v1/registries", params={"cursor": cursor} if cursor else {})
        assert_status(r, 200)
        names += [x["name"] for x in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return names
    raise AssertionError("registry listing does not terminate")


def test_scoped_admin_sees_only_its_registries(world):
    rbadmin, viewer = world.client(RBADMIN), world.client(VIEWER)
    names = _registry_names(rbadmin)
    assert "rb" in names and "ra" not in names, names
    assert {"ra", "rb"} <= set(_registry_names(viewer))

    repos, _ = rbadmin.paginate("/v2/_catalog", "repositories")
    assert "rb/app" in repos and not any(x.startswith("ra/") for x in repos), repos
    repos, _ = viewer.paginate("/v2/_catalog", "repositories")
    assert {"ra/app", "rb/app"} <= set(repos), repos


def test_hidden_and_missing_registries_look_alike(world):
    """A caller who cannot view a registry gets 403 whether it exists or not,
    so registry names cannot be probed by status; a global viewer, who may
    view everything, gets the honest 404."""
    missing = unique("nosuch")
    rbadmin = world.client(RBADMIN)
    assert_problem(rbadmin.get("/api/v1/registries/ra"), 403, "FORBIDDEN")
    assert_problem(rbadmin.get(f"/api/v1/registries/{missing}"), 403, "FORBIDDEN")
    assert_status(world.client(VIEWER).get(f"/api/v1/registries/{missing}"), 404)


@pytest.mark.parametrize(
    "principal,mounted", [(ADMIN, True), (UPLOADER, True), (RBADMIN, False)], ids=["admin", "uploader", "rbadmin"]
)
def test_cross_registry_mount_needs_pull_on_source(world, principal, mounted):
    """rb <- ra mount: whoever may pull from ra gets the blob mounted (201);
    rbadmin, who may push to rb but not pull from ra, gets a normal upload
    session (202) and the blob does not appear in rb."""
    data = random_bytes(3000)
    digest = world.admin.upload_blob("ra/app", data)
    c = world.client(principal)
    r = c.post(f"/v2/rb/app/blobs/uploads/?mount={digest}&from=ra/app", headers={"Content-Length": "0"})
    if mounted:
        assert_status(r, 201)
        assert r.headers.get("Docker-Content-Digest") == digest, describe(r)
        g = world.admin.get_blob("rb/app", digest)
        assert_status(g, 200)
        assert g.content == data
    else:
        assert_status(r, 202)
        assert_status(world.admin.head_blob("rb/app", digest), 404)
        # The fallback is a usable session in rb.
        r = c.put(with_query(c.abs_location(r), digest=digest), data=data, headers=OCTET)
        assert_status(r, 201)
        assert world.admin.get_blob("rb/app", digest).content == data


# ---------------------------------------------------------------------------
# Anonymous pull (shared server)
# ---------------------------------------------------------------------------


def test_anonymous_pull_opens_only_pulls_of_that_registry(server, http, new_registry):
    open_reg, closed_reg = new_registry("pa"), new_registry("pb")
    img = make_image(n_layers=1, layer_size=4096)
    for reg in (open_reg, closed_reg):
        http.push_image(f"{reg}/app", img, "v1")
    name, layer = f"{open_reg}/app", sha256_digest(img.layers[0])
    anon = server.anon_client()
    assert_status(anon.get_manifest(name, "v1"), 401)

    r = http.patch(f"/api/v1/registries/{open_reg}", json={"anonymous_pull": True})
    assert_status(r, 200)
    assert r.json().get("anonymous_pull") is True, r.text
    assert http.registry_info(open_reg).get("anonymous_pull") is True
    try:
        g = anon.get_manifest(name, "v1")
        assert_status(g, 200)
        assert g.content == img.manifest
        assert_status(anon.get_manifest(name, img.digest, "HEAD"), 200)
        b = anon.get_blob(name, layer)
        assert_status(b, 200)
        assert b.content == img.layers[0]
        assert_status(anon.head_blob(name, layer), 200)

        # Nothing else opens up: pushes and deletes there, the other registry,
        # the base endpoint and the catalog.
        assert_status(anon.start_upload(name), 401)
        assert_status(anon.put_manifest(name, "anon", img.manifest, MT_OCI_MANIFEST), 401)
        assert_status(anon.delete(f"/v2/{name}/manifests/{img.digest}"), 401)
        assert_status(anon.delete(f"/v2/{name}/blobs/{layer}"), 401)
        assert_status(anon.get_manifest(f"{closed_reg}/app", "v1"), 401)
        assert_status(anon.get_blob(f"{closed_reg}/app", layer), 401)
        assert_status(anon.get("/v2/"), 401)
        assert_status(anon.get("/v2/_catalog"), 401)
        assert_status(anon.get(f"/api/v1/registries/{open_reg}"), 401)
        assert_status(http.get_manifest(name, "anon"), 404)
        assert_status(http.get_manifest(name, "v1"), 200)

        # The anonymous token: pull on the open registry, nothing on the closed one.
        r = anon.fetch_token(f"repository:{name}:pull,push,delete", f"repository:{closed_reg}/app:pull", creds=None)
        assert_status(r, 200)
        _, claims = jwt_decode(r.json()["token"])
        granted = {a["name"]: sorted(a["actions"]) for a in claims["access"] if a.get("type") == "repository"}
        assert granted.get(name) == ["pull"], claims
        assert not granted.get(f"{closed_reg}/app"), claims
        bearer = server.client(token=r.json()["token"])
        assert_status(bearer.get_manifest(name, "v1"), 200)
        assert_status(bearer.start_upload(name), 401)
        assert_status(bearer.get_manifest(f"{closed_reg}/app", "v1"), 401)
        # An anonymous token, even one asked for the catalog scope, lists nothing.
        r = anon.fetch_token("registry:catalog:*", creds=None)
        assert_status(r, 200)
        catalog_token = server.client(token=r.json()["token"])
        catalog = catalog_token.get("/v2/_catalog")
        assert_status(catalog, 401)
        assert "UNAUTHORIZED" in oci_error_codes(catalog), describe(catalog)
        assert_status(catalog_token.get("/v2/"), 200)  # the token verifies: the catalog refused it

        # A signed-in user with no role there reads what anyone may (`docker login`
        # must not take pulls away), by Basic and by token, and nothing more.
        _, creds = new_principal(http, "viewer", closed_reg, prefix="pu")
        user = server.client(creds=creds)
        assert_status(user.get_manifest(name, "v1"), 200)
        assert_status(user.get_blob(name, layer), 200)
        assert_status(user.start_upload(name), 403)
        r = user.fetch_token(f"repository:{name}:pull,push,delete")
        assert_status(r, 200)
        _, claims = jwt_decode(r.json()["token"])
        assert [a["actions"] for a in claims["access"] if a.get("name") == name] == [["pull"]], claims
        assert_status(server.client(token=r.json()["token"]).get_manifest(name, "v1"), 200)
        # And its catalog lists what it may pull: its own registry's images and the open one's.
        catalog = user.get("/v2/_catalog").json()["repositories"]
        assert name in catalog and f"{closed_reg}/app" in catalog, catalog
    finally:
        assert_status(http.patch(f"/api/v1/registries/{open_reg}", json={"anonymous_pull": False}), 200)
    assert_status(anon.get_manifest(name, "v1"), 401)
    assert_status(anon.get_blob(name, layer), 401)


def test_roles_on_a_deleted_registry_go_with_it(server, http):
    """A registry admin may delete their registry; a registry created later
    under its name (for another team) must not make them its admin."""
    reg = create_registry(http, "rb")
    user, creds = new_principal(http, "admin", reg, prefix="rb")
    owner = server.client(creds=creds)
    assert_status(owner.delete(f"/api/v1/registries/{reg}"), 204)
    assert reg not in [b.get("registry") for b in http.get(f"/api/v1/users/{user}/roles").json()["items"]]
    assert_status(http.post("/api/v1/registries", json={"name": reg}), 201)
    assert_status(owner.get(f"/api/v1/registries/{reg}"), 403)
    assert_status(owner.delete(f"/api/v1/registries/{reg}"), 403)
