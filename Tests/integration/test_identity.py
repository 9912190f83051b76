"""Users, access keys and role bindings (docs/identity.md): the bootstrap
key, the admin endpoints' success and failure paths, and what disabling,
rotating and deleting does to credentials already in use."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from helpers import (
    AK_RE,
    SECRET_RE,
    api_bind,
    api_create_key,
    api_create_user,
    assert_problem,
    assert_status,
    basic_header,
    make_image,
    new_principal,
    parse_rfc3339,
    unique,
    wait_until,
)

KEY_FIELDS = {"access_key", "created_at", "last_used_at", "disabled", "older_than_90_days"}


def _me(client) -> int:
    return client.get("/api/v1/me").status_code


def _list_all(http, path: str, limit: int | None = None) -> list[dict]:
    items, cursor = [], None
    for _ in range(10_000):
        params = {}
        if limit:
            params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        r = http.get(path, params=params)
        assert_status(r, 200)
        body = r.json()
        assert "items" in body and "next_cursor" in body, body
        if limit:
            assert len(body["items"]) <= limit, body
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items
        assert body["items"], "a page with a next_cursor must not be empty"
    raise AssertionError(f"{path} listing does not terminate")


def _keys(http, user: str) -> dict[str, dict]:
    r = http.get(f"/api/v1/users/{user}/access-keys")
    assert_status(r, 200)
    return {k["access_key"]: k for k in r.json()["items"]}


# ---------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------


def test_bootstrap_credentials_file(make_server):
    srv = make_server(label="bootstrap")
    path = srv.bootstrap_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
    body = json.loads(path.read_text())
    assert set(body) == {"access_key", "secret_key"}, body.keys()
    assert AK_RE.match(body["access_key"]), body["access_key"]
    assert SECRET_RE.match(body["secret_key"]), "secret must be 40 characters of A-Za-z0-9"

    c = srv.client(creds=(body["access_key"], body["secret_key"]))
    r = c.get("/api/v1/me")
    assert_status(r, 200)
    me = r.json()
    assert me["user"]["id"] == "admin", me
    assert {"role": "admin", "registry": None} in [{"role": x["role"], "registry": x["registry"]} for x in me["roles"]], me
    assert_status(c.get("/v2/"), 200)

    log = srv.log_text()
    assert str(path) in log, "the server must print where the bootstrap credentials are"
    assert body["secret_key"] not in log


def test_bootstrap_file_is_not_rewritten(make_server):
    srv = make_server(label="bootstrap-restart")
    path = srv.bootstrap_path
    before, st = path.read_bytes(), os.stat(path)
    creds = srv.admin_creds
    log_mark = srv.log_size()
    srv.restart()
    assert path.read_bytes() == before
    st2 = os.stat(path)
    assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), "the file was written again"
    assert_status(srv.client(creds=creds).get("/api/v1/me"), 200)
    assert json.loads(before)["secret_key"] not in srv.log_text(log_mark)

    # Not recreated either once the operator removed it (that would mint a
    # second admin key), and the first key still works.
    path.unlink()
    srv.restart(kill=True)
    assert not path.exists(), "the bootstrap file was recreated on a later start"
    assert_status(srv.client(creds=creds).get("/api/v1/me"), 200)
    r = srv.client(creds=creds).get("/api/v1/users/admin/access-keys")
    assert_status(r, 200)
    assert [k["access_key"] for k in r.json()["items"]] == [creds[0]]


def test_secrets_never_reach_the_log(make_server):
    """At trace level, after keys are created, used, rotated and tokens issued,
    neither a secret, nor a Basic header carrying it, nor a token is logged."""
    srv = make_server(extra_args=["--log-level", "trace"], registries=["lg"], label="secrets")
    admin = srv.client()
    user, creds = new_principal(admin, "uploader")
    c = srv.client(creds=creds)
    c.push_image("lg/app", make_image(n_layers=1, layer_size=256), "v1")
    token = c.token_for("repository:lg/app:pull,push")
    assert_status(srv.client(token=token).get_manifest("lg/app", "v1"), 200)
    r = admin.post(f"/api/v1/users/{user}/access-keys/{creds[0]}/rotate", json={"overlap_seconds": 0})
    assert_status(r, 201)
    rotated = r.json()["secret_key"]
    assert_status(srv.client(creds=(r.json()["access_key"], rotated)).get("/v2/"), 200)

    log = srv.log_text()
    for label, secret in (
        ("bootstrap secret", srv.admin_creds[1]),
        ("user secret", creds[1]),
        ("rotated secret", rotated),
        ("Basic header", basic_header(creds)["Authorization"].split()[1]),
        ("admin Basic header", basic_header(srv.admin_creds)["Authorization"].split()[1]),
        ("token signature", token.rsplit(".", 1)[1]),
    ):
        assert secret not in log, f"{label} found in the server log"


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------


def test_user_crud(server, http):
    name = unique("u")
    r = http.post("/api/v1/users", json={"name": name})
    assert_status(r, 201)
    u = r.json()
    assert u["id"] == name and u["disabled"] is False, u
    created = parse_rfc3339(u["created_at"])
    assert abs(created - time.time()) < 120, u
    assert_status(http.post("/api/v1/users", json={"name": name}), 409)

    r = http.get(f"/api/v1/users/{name}")
    assert_status(r, 200)
    assert r.json()["id"] == name and r.json()["created_at"] == u["created_at"], r.json()
    assert name in [x["id"] for x in _list_all(http, "/api/v1/users")]

    creds = api_create_key(http, name)
    c = server.client(creds=creds)
    assert _me(c) == 200
    r = http.patch(f"/api/v1/users/{name}", json={"disabled": True})
    assert_status(r, 200)
    assert r.json()["id"] == name and r.json()["disabled"] is True, r.json()
    assert http.get(f"/api/v1/users/{name}").json()["disabled"] is True
    assert _me(c) == 401, "a disabled user's key must stop working at once"
    assert_status(http.patch(f"/api/v1/users/{name}", json={"disabled": False}), 200)
    assert _me(c) == 200

    assert_status(http.delete(f"/api/v1/users/{name}"), 204)
    assert_status(http.get(f"/api/v1/users/{name}"), 404)
    assert name not in [x["id"] for x in _list_all(http, "/api/v1/users")]
    assert _me(c) == 401, "a deleted user's key must stop working"
    assert_status(http.delete(f"/api/v1/users/{name}"), 404)
    assert_status(http.patch(f"/api/v1/users/{name}", json={"disabled": True}), 404)
    # The name is free again, without the old keys.
    assert_status(http.post("/api/v1/users", json={"name": name}), 201)
    assert _keys(http, name) == {}
    assert _me(c) == 401


def test_user_listing_paginates(http):
    made = {api_create_user(http, unique("pg")) for _ in range(3)}
    everything = [x["id"] for x in _list_all(http, "/api/v1/users")]
    assert len(everything) == len(set(everything))
    assert made | {"admin"} <= set(everything)
    assert [x["id"] for x in _list_all(http, "/api/v1/users", limit=1)] == everything
    assert [x["id"] for x in _list_all(http, "/api/v1/users", limit=2)] == everything


@pytest.mark.parametrize(
    "name",
    ["Upper", "-lead", ".lead", "a" * 65, "", "with space", "sl/ash", "ümlaut"],
    ids=["uppercase", "leading-dash", "leading-dot", "65-chars", "empty", "space", "slash", "non-ascii"],
)
def test_invalid_user_names_are_400(http, name):
    r = http.post("/api/v1/users", json={"name": name})
    assert_problem(r, 400)
    if name:
        assert name not in [x["id"] for x in _list_all(http, "/api/v1/users")]


@pytest.mark.parametrize("name", ["a", "0", "a" * 64, "x.y_z-9"])
def test_valid_user_name_edges(http, name):
    name = name if name != "a" * 64 else unique("l") + "a" * 53
    r = http.post("/api/v1/users", json={"name": name})
    assert_status(r, 201)
    assert r.json()["id"] == name


@pytest.mark.parametrize("body", [{}, {"name": 5}, [], "x"], ids=["no-name", "number", "array", "string"])
def test_malformed_user_bodies_are_400(http, body):
    assert_status(http.post("/api/v1/users", json=body), 400)


def test_nobody_deletes_themselves(server, http):
    r = http.delete("/api/v1/users/admin")
    assert_problem(r, 409)
    assert _me(http) == 200
    other, creds = new_principal(http, "admin", prefix="adm")
    c = server.client(creds=creds)
    assert_status(c.delete(f"/api/v1/users/{other}"), 409)
    assert _me(c) == 200
    # ...but another global admin may.
    assert_status(http.delete(f"/api/v1/users/{other}"), 204)
    assert _me(c) == 401


def test_the_last_working_global_admin_stays(make_server):
    """Bootstrap runs only on an empty store: removing the last enabled global
    admin with a working key, by any route, would lock the admin API for good."""
    srv = make_server(label="last-admin")
    http = srv.client()
    key = srv.admin_creds[0]
    refused = [
        http.delete("/api/v1/users/admin/roles/admin"),
        http.patch("/api/v1/users/admin", json={"disabled": True}),
        http.delete(f"/api/v1/users/admin/access-keys/{key}"),
        http.patch(f"/api/v1/users/admin/access-keys/{key}", json={"disabled": True}),
    ]
    for r in refused:
        assert "no enabled user with the global admin role" in assert_problem(r, 409, "CONFLICT")["detail"]
    assert _me(http) == 200
    assert [b["id"] for b in http.get("/api/v1/users/admin/roles").json()["items"]] == ["admin"]
    # A second admin without a key, or a disabled one, does not count.
    api_create_user(http, "keyless")
    api_bind(http, "keyless", "admin")
    assert_problem(http.delete("/api/v1/users/admin/roles/admin"), 409, "CONFLICT")
    other, creds = new_principal(http, "admin", prefix="adm")
    assert_status(http.patch(f"/api/v1/users/{other}", json={"disabled": True}), 200)
    assert_problem(http.delete(f"/api/v1/users/admin/access-keys/{key}"), 409, "CONFLICT")
    # With a working second admin the first may go, and then the second is the last.
    assert_status(http.patch(f"/api/v1/users/{other}", json={"disabled": False}), 200)
    second = srv.client(creds=creds)
    assert_status(second.delete("/api/v1/users/admin/roles/admin"), 204)
    assert_status(second.delete("/api/v1/users/admin"), 204)
    assert_problem(second.delete(f"/api/v1/users/{other}/roles/admin"), 409, "CONFLICT")
    # Rotation keeps a working key, so it is allowed even without an overlap.
    rotated = second.post(f"/api/v1/users/{other}/access-keys/{creds[0]}/rotate", json={"overlap_seconds": 0})
    assert_status(rotated, 201)
    third = srv.client(creds=(rotated.json()["access_key"], rotated.json()["secret_key"]))
    assert _me(third) == 200 and _me(second) == 401
    # A key retiring after a rotation's overlap does not count: the new one must stay.
    newest = third.post(f"/api/v1/users/{other}/access-keys/{rotated.json()['access_key']}/rotate",
                        json={"overlap_seconds": 3600})
    assert_status(newest, 201)
    assert_problem(third.delete(f"/api/v1/users/{other}/access-keys/{newest.json()['access_key']}"), 409, "CONFLICT")
    assert_problem(third.patch(f"/api/v1/users/{other}/access-keys/{newest.json()['access_key']}",
                               json={"disabled": True}), 409, "CONFLICT")


def test_me_reports_user_and_bindings(server, http, reg):
    user, creds = new_principal(http, "viewer", reg, prefix="me")
    api_bind(http, user, "uploader")
    r = server.client(creds=creds).get("/api/v1/me")
    assert_status(r, 200)
    me = r.json()
    assert me["user"]["id"] == user and me["user"]["disabled"] is False, me
    assert sorted((x["role"], x["registry"] or "") for x in me["roles"]) == [("uploader", ""), ("viewer", reg)], me
    assert creds[1] not in r.text


# ---------------------------------------------------------------------------
# Access keys
# ---------------------------------------------------------------------------


def test_access_key_creation_and_listing(server, http):
    user = api_create_user(http, unique("k"))
    r = http.post(f"/api/v1/users/{user}/access-keys")
    assert_status(r, 201)
    key = r.json()
    assert AK_RE.match(key["access_key"]) and SECRET_RE.match(key["secret_key"]), key
    assert abs(parse_rfc3339(key["created_at"]) - time.time()) < 120, key

    r = http.get(f"/api/v1/users/{user}/access-keys")
    assert_status(r, 200)
    assert key["secret_key"] not in r.text, "a listing must never show a secret"
    items = r.json()["items"]
    assert [k["access_key"] for k in items] == [key["access_key"]]
    item = items[0]
    assert KEY_FIELDS <= set(item) and "secret_key" not in item, item
    assert item["disabled"] is False and item["older_than_90_days"] is False, item
    assert item["last_used_at"] is None, item
    assert item["created_at"] == key["created_at"], item

    assert_status(server.client(creds=(key["access_key"], key["secret_key"])).get("/v2/"), 200)
    used = wait_until(lambda: _keys(http, user)[key["access_key"]]["last_used_at"], timeout=5,
                      message="last_used_at to be recorded")
    assert abs(parse_rfc3339(used) - time.time()) < 120, used
    assert key["secret_key"] not in http.get(f"/api/v1/users/{user}/access-keys").text


def test_sixth_key_is_refused(server, http):
    user = api_create_user(http, unique("k5"))
    keys = [api_create_key(http, user) for _ in range(5)]
    r = http.post(f"/api/v1/users/{user}/access-keys")
    assert_problem(r, 409, "ACCESS_KEY_LIMIT")
    assert set(_keys(http, user)) == {k[0] for k in keys}
    # Room again after a delete.
    assert_status(http.delete(f"/api/v1/users/{user}/access-keys/{keys[0][0]}"), 204)
    sixth = api_create_key(http, user)
    assert set(_keys(http, user)) == {k[0] for k in keys[1:]} | {sixth[0]}


def test_a_user_at_the_limit_rotates_but_cannot_enable_the_retired_key(server, http):
    """Rotation issues a sixth record (the rotated key does not count), but
    enabling that retired key again would give the user six working keys."""
    user = api_create_user(http, unique("k5r"))
    keys = [api_create_key(http, user) for _ in range(5)]
    r = http.post(f"/api/v1/users/{user}/access-keys/{keys[0][0]}/rotate", json={"overlap_seconds": 0})
    assert_status(r, 201)
    assert r.headers.get("Cache-Control") == "no-store", r.headers
    successor = r.json()["access_key"]
    r = http.patch(f"/api/v1/users/{user}/access-keys/{keys[0][0]}", json={"disabled": False})
    assert_problem(r, 409, "ACCESS_KEY_LIMIT")
    listed = _keys(http, user)
    assert listed[keys[0][0]]["disabled"] is True, listed
    assert sum(not k["disabled"] for k in listed.values()) == 5, listed
    assert _me(server.client(creds=keys[0])) == 401
    # Another key disabled and enabled again is within the 5 working keys.
    assert_status(http.patch(f"/api/v1/users/{user}/access-keys/{keys[1][0]}", json={"disabled": True}), 200)
    assert_status(http.patch(f"/api/v1/users/{user}/access-keys/{keys[1][0]}", json={"disabled": False}), 200)
    # Rotating again finds the retired key counted; once it is deleted there is room.
    r = http.post(f"/api/v1/users/{user}/access-keys/{successor}/rotate", json={"overlap_seconds": 0})
    assert_problem(r, 409, "ACCESS_KEY_LIMIT")
    assert_status(http.delete(f"/api/v1/users/{user}/access-keys/{keys[0][0]}"), 204)
    assert_status(http.post(f"/api/v1/users/{user}/access-keys/{successor}/rotate", json={"overlap_seconds": 0}), 201)


def test_a_new_secret_is_kept_by_no_cache(http):
    user = api_create_user(http, unique("nsc"))
    r = http.post(f"/api/v1/users/{user}/access-keys")
    assert_status(r, 201)
    assert r.headers.get("Cache-Control") == "no-store", r.headers


def test_key_endpoints_on_unknown_things_are_404(http):
    user = api_create_user(http, unique("kx"))
    other = api_create_user(http, unique("ky"))
    theirs = api_create_key(http, other)
    missing = unique("nouser")
    assert_status(http.post(f"/api/v1/users/{missing}/access-keys"), 404)
    assert_status(http.get(f"/api/v1/users/{missing}/access-keys"), 404)
    for path in (f"/api/v1/users/{user}/access-keys/AK{'A' * 20}", f"/api/v1/users/{user}/access-keys/{theirs[0]}"):
        assert_status(http.patch(path, json={"disabled": True}), 404)
        assert_status(http.delete(path), 404)
        assert_status(http.post(path + "/rotate", json={"overlap_seconds": 0}), 404)
    assert _keys(http, other)[theirs[0]]["disabled"] is False


def _uploader_with_image(server, http, reg):
    """A user (global uploader) with a key and a token that can pull `reg/idn`."""
    user, creds = new_principal(http, "uploader", prefix="dk")
    name = f"{reg}/idn"
    if http.get_manifest(name, "v1").status_code != 200:
        http.push_image(name, make_image(n_layers=1, layer_size=256), "v1")
    token = server.client(creds=creds).token_for(f"repository:{name}:pull")
    return user, creds, token, name


def test_disabled_key_fails_at_once_with_its_tokens(server, http, reg):
    user, creds, token, name = _uploader_with_image(server, http, reg)
    basic, bearer = server.client(creds=creds), server.client(token=token)
    assert_status(basic.get_manifest(name, "v1"), 200)
    assert_status(bearer.get_manifest(name, "v1"), 200)

    r = http.patch(f"/api/v1/users/{user}/access-keys/{creds[0]}", json={"disabled": True})
    assert_status(r, 200)
    assert r.json()["access_key"] == creds[0] and r.json()["disabled"] is True, r.json()
    assert "secret_key" not in r.json() and creds[1] not in r.text
    assert_status(basic.get_manifest(name, "v1"), 401)
    assert_status(basic.get("/v2/"), 401)
    assert_status(bearer.get_manifest(name, "v1"), 401)
    assert_status(basic.fetch_token(f"repository:{name}:pull"), 401)
    assert _keys(http, user)[creds[0]]["disabled"] is True

    assert_status(http.patch(f"/api/v1/users/{user}/access-keys/{creds[0]}", json={"disabled": False}), 200)
    assert_status(basic.get_manifest(name, "v1"), 200)


def test_disabled_user_fails_at_once_with_its_tokens(server, http, reg):
    user, creds, token, name = _uploader_with_image(server, http, reg)
    bearer = server.client(token=token)
    assert_status(bearer.get_manifest(name, "v1"), 200)
    assert_status(http.patch(f"/api/v1/users/{user}", json={"disabled": True}), 200)
    assert_status(server.client(creds=creds).get_manifest(name, "v1"), 401)
    assert_status(bearer.get_manifest(name, "v1"), 401)


def test_deleted_key_and_user_stop_working(server, http, reg):
    user, creds, token, name = _uploader_with_image(server, http, reg)
    second = api_create_key(http, user)
    second_token = server.client(creds=second).token_for(f"repository:{name}:pull")
    assert_status(http.delete(f"/api/v1/users/{user}/access-keys/{creds[0]}"), 204)
    assert_status(server.client(creds=creds).get("/v2/"), 401)
    assert_status(server.client(token=token).get_manifest(name, "v1"), 401)
    assert creds[0] not in _keys(http, user)
    assert_status(http.delete(f"/api/v1/users/{user}/access-keys/{creds[0]}"), 404)
    # The user's other key is untouched by that, but goes with the user.
    assert_status(server.client(creds=second).get_manifest(name, "v1"), 200)
    assert_status(server.client(token=second_token).get_manifest(name, "v1"), 200)
    assert_status(http.delete(f"/api/v1/users/{user}"), 204)
    assert_status(server.client(creds=second).get_manifest(name, "v1"), 401)
    assert_status(server.client(token=second_token).get_manifest(name, "v1"), 401)


def test_rotate_without_overlap(server, http):
    user, old = new_principal(http, "viewer", prefix="rot")
    r = http.post(f"/api/v1/users/{user}/access-keys/{old[0]}/rotate", json={"overlap_seconds": 0})
    assert_status(r, 201)
    new = (r.json()["access_key"], r.json()["secret_key"])
    assert AK_RE.match(new[0]) and SECRET_RE.match(new[1]) and new[0] != old[0], r.json()
    assert _me(server.client(creds=new)) == 200
    assert _me(server.client(creds=old)) == 401
    keys = _keys(http, user)
    assert keys[new[0]]["disabled"] is False
    assert old[0] not in keys or keys[old[0]]["disabled"] is True, keys


def test_rotate_with_overlap_keeps_the_old_key_for_a_while(server, http):
    user, old = new_principal(http, "viewer", prefix="rov")
    old_client = server.client(creds=old)
    start = time.monotonic()
    r = http.post(f"/api/v1/users/{user}/access-keys/{old[0]}/rotate", json={"overlap_seconds": 2})
    assert_status(r, 201)
    new = (r.json()["access_key"], r.json()["secret_key"])
    assert _me(server.client(creds=new)) == 200
    assert _me(old_client) == 200
    time.sleep(max(0.0, start + 1.0 - time.monotonic()))
    if time.monotonic() - start < 1.8:  # still inside the overlap
        assert _me(old_client) == 200, "the old key must keep working during the overlap"
    wait_until(lambda: _me(old_client) == 401, timeout=max(0.5, start + 5 - time.monotonic()),
               message="the old key to stop working after the 2 s overlap")
    assert time.monotonic() - start >= 1.5, "the old key stopped long before the overlap ended"
    assert _me(server.client(creds=new)) == 200


def test_enabling_a_key_in_its_overlap_keeps_its_retirement(server, http):
    """The listing shows a key in its rotation's overlap as enabled; a PATCH
    {"disabled": false} on it changes nothing (it used to cancel the
    retirement, leaving the old key valid forever). Once retired, the same
    PATCH enables it again, for good."""
    user, old = new_principal(http, "viewer", prefix="roe")
    old_client = server.client(creds=old)
    r = http.post(f"/api/v1/users/{user}/access-keys/{old[0]}/rotate", json={"overlap_seconds": 2})
    assert_status(r, 201)
    path = f"/api/v1/users/{user}/access-keys/{old[0]}"
    assert _keys(http, user)[old[0]]["disabled"] is False
    r = http.patch(path, json={"disabled": False})
    assert_status(r, 200)
    assert r.json()["disabled"] is False, r.json()
    wait_until(lambda: _me(old_client) == 401, timeout=6, message="the old key to stop working after the 2 s overlap")
    assert _keys(http, user)[old[0]]["disabled"] is True
    assert_status(http.patch(path, json={"disabled": False}), 200)
    assert _me(old_client) == 200
    time.sleep(2.5)
    assert _me(old_client) == 200, "a key enabled again after its retirement stays enabled"


@pytest.mark.parametrize("body", [{"overlap_seconds": -1}, {"overlap_seconds": "soon"}], ids=["negative", "string"])
def test_rotate_with_bad_overlap_is_400(server, http, body):
    user, old = new_principal(http, "viewer", prefix="rob")
    assert_status(http.post(f"/api/v1/users/{user}/access-keys/{old[0]}/rotate", json=body), 400)
    assert set(_keys(http, user)) == {old[0]}
    assert _me(server.client(creds=old)) == 200


# ---------------------------------------------------------------------------
# Role bindings
# ---------------------------------------------------------------------------


def test_role_binding_crud(http, reg):
    user = api_create_user(http, unique("rl"))
    r = http.post(f"/api/v1/users/{user}/roles", json={"role": "viewer", "registry": reg})
    assert_status(r, 201)
    assert r.json()["id"] == f"viewer@{reg}" and r.json()["role"] == "viewer" and r.json()["registry"] == reg, r.json()
    assert_status(http.post(f"/api/v1/users/{user}/roles", json={"role": "viewer", "registry": reg}), 409)
    r = http.post(f"/api/v1/users/{user}/roles", json={"role": "uploader"})
    assert_status(r, 201)
    assert r.json()["id"] == "uploader" and r.json()["registry"] is None, r.json()

    r = http.get(f"/api/v1/users/{user}/roles")
    assert_status(r, 200)
    assert sorted((x["id"], x["role"], x["registry"]) for x in r.json()["items"]) == sorted(
        [(f"viewer@{reg}", "viewer", reg), ("uploader", "uploader", None)]
    ), r.json()

    assert_status(http.delete(f"/api/v1/users/{user}/roles/viewer@{reg}"), 204)
    assert [x["id"] for x in http.get(f"/api/v1/users/{user}/roles").json()["items"]] == ["uploader"]
    assert_status(http.delete(f"/api/v1/users/{user}/roles/viewer@{reg}"), 404)
    assert_status(http.get(f"/api/v1/users/{unique('nouser')}/roles"), 404)
    assert_status(http.post(f"/api/v1/users/{unique('nouser')}/roles", json={"role": "viewer"}), 404)


@pytest.mark.parametrize("body", [{"role": "superuser"}, {"role": ""}, {}], ids=["unknown-role", "empty-role", "no-role"])
def test_bad_role_bindings_are_400(http, body):
    user = api_create_user(http, unique("rb"))
    assert_status(http.post(f"/api/v1/users/{user}/roles", json=body), 400)
    assert http.get(f"/api/v1/users/{user}/roles").json()["items"] == []


def test_rights_follow_bindings_at_once(server, http, new_registry):
    """Rights are the union of the bindings, and change as soon as a binding
    is added or removed."""
    r1, r2 = new_registry("b1"), new_registry("b2")
    img = make_image(n_layers=1, layer_size=256)
    for r in (r1, r2):
        http.push_image(f"{r}/app", img, "v1")
    user, creds = new_principal(http, None, prefix="bnd")
    c = server.client(creds=creds)
    fresh = make_image(n_layers=1, layer_size=128)

    assert_status(c.get("/v2/"), 200)  # authenticated, no rights
    assert_status(c.get_manifest(f"{r1}/app", "v1"), 403)
    assert_status(c.get(f"/api/v1/registries/{r1}"), 403)

    api_bind(http, user, "viewer", r1)
    assert_status(c.get_manifest(f"{r1}/app", "v1"), 200)
    assert_status(c.get(f"/api/v1/registries/{r1}"), 200)
    assert_status(c.get_manifest(f"{r2}/app", "v1"), 403)
    assert_status(c.start_upload(f"{r1}/app"), 403)

    api_bind(http, user, "uploader", r2)
    c.push_image(f"{r2}/app", fresh, "v2")
    assert_status(c.get_manifest(f"{r2}/app", "v2"), 200)
    assert_status(c.start_upload(f"{r1}/app"), 403)
    assert_status(c.delete(f"/v2/{r2}/app/manifests/v2"), 403)

    assert_status(http.delete(f"/api/v1/users/{user}/roles/viewer@{r1}"), 204)
    assert_status(c.get_manifest(f"{r1}/app", "v1"), 403)
    assert_status(c.get_manifest(f"{r2}/app", "v1"), 200)
