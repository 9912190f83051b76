"""The audit log (docs/identity.md, "Audit log"): what is recorded, with
which fields, and the filters and pagination of GET /api/v1/audit-logs.

Runs on a server of its own so that the log holds exactly what this module
did. The module fixture plays a story in two groups separated by an empty
second of server time, so `since`/`until` can be checked at a boundary no
entry sits on, whatever their precision and inclusiveness.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from conftest import UNTHROTTLED
from helpers import (
    api_bind,
    api_create_key,
    api_create_user,
    assert_problem,
    assert_status,
    make_image,
    new_principal,
    parse_rfc3339,
    random_bytes,
    rfc3339,
    unique,
    wait_until,
    wrong_secret,
)

FIELDS = {"time", "actor", "source", "action", "target", "registry", "outcome", "detail"}
OUTCOMES = {"success", "failure", "denied"}


@dataclass
class Story:
    srv: object
    admin: object
    user: str = "auditor"
    creds: tuple = ()
    reg: str = ""
    gone_reg: str = ""
    digest: str = ""
    tag: str = ""
    blob: str = ""
    boundary: float = 0.0  # a whole second between group 1 and group 2
    secrets: list = field(default_factory=list)
    other_user: str = ""
    viewer: str = ""
    viewer_creds: tuple = ()
    denied_digest: str = ""


def _all(admin, **params) -> list[dict]:
    items, cursor = [], None
    for _ in range(1000):
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        r = admin.get("/api/v1/audit-logs", params=q)
        assert_status(r, 200)
        body = r.json()
        assert "items" in body and "next_cursor" in body, body
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("audit log pagination does not terminate")


def _find(items, **match) -> list[dict]:
    return [e for e in items if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def story(spawn_server) -> Story:
    srv = spawn_server("audit", extra_args=UNTHROTTLED)
    admin = srv.client()
    s = Story(srv=srv, admin=admin)
    api_create_user(admin, s.user)
    api_bind(admin, s.user, "admin")
    s.creds = api_create_key(admin, s.user)
    s.secrets += [srv.admin_creds[1], s.creds[1], wrong_secret(s.creds)[1]]
    u = srv.client(creds=s.creds)

    # Group 1: a failed login (known key, wrong secret), one with an unknown
    # key, a login and a token.
    assert_status(srv.client(creds=wrong_secret(s.creds)).get("/v2/"), 401)
    assert_status(srv.client(creds=("AK" + "Q" * 20, "z" * 40)).get("/v2/"), 401)
    assert_status(srv.client(creds=("AK" + "L" * 5000, "z")).get("/v2/"), 401)
    assert_status(srv.client(creds=(s.creds[1], s.creds[0])).get("/v2/"), 401)  # fields swapped: a secret as the key id
    assert_status(admin.fetch_token(*[f"repository:longscope/app{i}:pull" for i in range(40)]), 200)
    assert_status(u.get("/v2/"), 200)
    assert_status(u.fetch_token("repository:nowhere/app:pull"), 200)

    last = max(parse_rfc3339(e["time"]) for e in _all(admin))
    s.boundary = float(int(last) + 1)
    wait_until(lambda: time.time() >= s.boundary + 1.05, timeout=5, interval=0.05, message="the next-but-one second")

    # Group 2: registry and content changes by the auditor ...
    s.reg = unique("au")
    assert_status(u.create_registry(s.reg), 201)
    img = make_image(n_layers=1, layer_size=512)
    u.push_image(f"{s.reg}/app", img, "v1")
    s.digest = img.digest
    assert_status(u.delete(f"/v2/{s.reg}/app/manifests/{s.digest}"), 202)
    s.tag = "t1"
    u.push_image(f"{s.reg}/app", make_image(n_layers=1, layer_size=256), s.tag)
    assert_status(u.delete(f"/v2/{s.reg}/app/manifests/{s.tag}"), 202)
    s.blob = u.upload_blob(f"{s.reg}/app", random_bytes(300))
    assert_status(u.delete(f"/v2/{s.reg}/app/blobs/{s.blob}"), 202)
    assert_status(u.patch(f"/api/v1/registries/{s.reg}", json={"anonymous_pull": True}), 200)
    s.gone_reg = unique("ag")
    assert_status(u.create_registry(s.gone_reg), 201)
    assert_status(u.delete(f"/api/v1/registries/{s.gone_reg}"), 204)

    # ... user/key/role administration by the bootstrap admin ...
    s.other_user = api_create_user(admin, unique("ou"))
    api_bind(admin, s.other_user, "viewer")
    k1 = api_create_key(admin, s.other_user)
    k2 = api_create_key(admin, s.other_user)
    assert_status(admin.patch(f"/api/v1/users/{s.other_user}/access-keys/{k1[0]}", json={"disabled": True}), 200)
    r = admin.post(f"/api/v1/users/{s.other_user}/access-keys/{k2[0]}/rotate", json={"overlap_seconds": 0})
    assert_status(r, 201)
    s.secrets += [k1[1], k2[1], r.json()["secret_key"]]
    assert_status(admin.delete(f"/api/v1/users/{s.other_user}/access-keys/{k1[0]}"), 204)
    assert_status(admin.delete(f"/api/v1/users/{s.other_user}/roles/viewer"), 204)
    assert_status(admin.patch(f"/api/v1/users/{s.other_user}", json={"disabled": True}), 200)
    assert_status(admin.delete(f"/api/v1/users/{s.other_user}"), 204)

    # ... and a delete that is denied.
    s.viewer, s.viewer_creds = new_principal(admin, "viewer", prefix="av")
    s.secrets.append(s.viewer_creds[1])
    keep = make_image(n_layers=1, layer_size=128)
    admin.push_image(f"{s.reg}/app", keep, "keep")
    s.denied_digest = keep.digest
    assert_status(srv.client(creds=s.viewer_creds).delete(f"/v2/{s.reg}/app/manifests/{keep.digest}"), 403)
    return s


def test_entries_have_the_documented_fields(story):
    items = _all(story.admin)
    assert len(items) >= 20, items
    for e in items:
        assert FIELDS <= set(e), e
        parse_rfc3339(e["time"])
        assert e["outcome"] in OUTCOMES, e
        assert isinstance(e["actor"], str) and e["actor"], e
        assert isinstance(e["action"], str) and e["action"], e


def test_newest_first(story):
    items = _all(story.admin)
    times = [parse_rfc3339(e["time"]) for e in items]
    assert times == sorted(times, reverse=True), [e["time"] for e in items]
    mine = _all(story.admin, actor=story.user)
    # The auditor did these in this order, so they are listed the other way round.
    seq = [
        _find(mine, action="login"),
        _find(mine, action="token.issue"),
        _find(mine, action="registry.create", registry=story.reg),
        _find(mine, action="manifest.delete", registry=story.reg),
        _find(mine, action="registry.delete", registry=story.gone_reg),
    ]
    assert all(len(x) == 1 for x in seq), mine
    positions = [mine.index(x[0]) for x in seq]
    assert positions == sorted(positions, reverse=True), [e["action"] for e in mine]


def test_failed_logins(story):
    # Failed authentications have outcome "failure" ("denied" is for
    # requests that authenticated but lacked the right).
    fails = _find(_all(story.admin, action="auth.failure"), outcome="failure")
    assert len(fails) >= 2, fails
    for e in fails:
        assert "127.0.0.1" in e["source"], e
    known = [e for e in fails if story.creds[0] in json.dumps(e) or e["actor"] == story.user]
    assert known, f"the failure with {story.creds[0]} should be traceable to its key or user: {fails}"
    for e in known:
        assert e["actor"] in (story.user, "anonymous"), e
    unknown = [e for e in fails if "AK" + "Q" * 20 in json.dumps(e)]
    assert unknown, f"the failure with an unknown key should name the key tried: {fails}"
    for e in unknown:
        assert e["actor"] == "anonymous", f"no user behind an unknown key: actor must be 'anonymous': {e}"


def test_client_text_in_entries_is_bounded(story):
    """A failure names the key id the client claimed only if it is one or looks
    like one (swapped fields would log a secret: test_no_secret_in_the_audit_log);
    a token's scopes, the client's text, are clipped to 512 characters."""
    fails = _all(story.admin, action="auth.failure")
    assert any(e["target"] == "malformed key id" for e in fails), fails
    assert not any("LLLLLLLL" in e["target"] for e in fails)
    issued = [e for e in _all(story.admin, action="token.issue") if "longscope" in e["target"]]
    assert issued, "the token request with 40 scopes is recorded"
    for e in issued:
        assert len(e["target"]) <= 512 and e["target"].endswith("…"), len(e["target"])


def test_login_and_token_issue(story):
    mine = _all(story.admin, actor=story.user)
    login = _find(mine, action="login", outcome="success")
    assert login and all("127.0.0.1" in e["source"] for e in login), mine
    assert _find(mine, action="token.issue", outcome="success"), mine


@pytest.mark.parametrize(
    "action,by",
    [
        ("registry.create", "auditor"),
        ("registry.update", "auditor"),
        ("registry.delete", "auditor"),
        ("manifest.delete", "auditor"),
        ("tag.delete", "auditor"),
        ("blob.delete", "auditor"),
        ("user.create", "admin"),
        ("user.update", "admin"),
        ("user.delete", "admin"),
        ("key.create", "admin"),
        ("key.update", "admin"),
        ("key.rotate", "admin"),
        ("key.delete", "admin"),
        ("role.add", "admin"),
        ("role.remove", "admin"),
    ],
)
def test_changes_and_deletes_are_recorded(story, action, by):
    entries = _find(_all(story.admin, action=action), action=action, actor=by, outcome="success")
    assert entries, f"no successful {action} by {by} in {_all(story.admin, action=action)}"
    if action.startswith(("registry.", "manifest.", "tag.", "blob.")):
        expected_reg = story.gone_reg if action == "registry.delete" else story.reg
        assert any(e["registry"] == expected_reg for e in entries), entries
    text = json.dumps(entries)
    wanted = {
        "manifest.delete": story.digest,
        "tag.delete": story.tag,
        "blob.delete": story.blob,
        "user.create": story.other_user,
        "user.delete": story.other_user,
    }.get(action)
    if wanted:
        assert wanted in text, f"{action} entries should name {wanted}: {entries}"


def test_denied_delete_is_recorded(story):
    """A delete refused for lack of the right is recorded as denied. Whether
    under the delete's action or as an auth failure is not pinned down by the
    doc; either must name the registry and the repository."""
    mine = _all(story.admin, actor=story.viewer)
    denied = [e for e in mine if e["outcome"] == "denied" and e["action"] in ("manifest.delete", "auth.failure")]
    assert len(denied) == 1, mine
    assert denied[0]["registry"] == story.reg, denied
    assert f"{story.reg}/app" in json.dumps(denied), denied


def test_filters(story):
    everything = _all(story.admin)
    for key, value in (("actor", story.user), ("actor", "admin"), ("action", "registry.create"),
                       ("action", "auth.failure"), ("registry", story.reg)):
        got = _all(story.admin, **{key: value})
        assert got and all(e[key] == value for e in got), (key, value, got)
        assert [e for e in everything if e[key] == value] == got, (key, value)
    both = _all(story.admin, actor=story.user, registry=story.reg)
    assert both and all(e["actor"] == story.user and e["registry"] == story.reg for e in both), both
    assert _all(story.admin, actor=unique("nobody")) == []


def test_since_and_until(story):
    b = rfc3339(story.boundary)
    after = _all(story.admin, since=b)
    before = _all(story.admin, until=b)
    assert after and before, (after, before)
    assert all(parse_rfc3339(e["time"]) >= story.boundary for e in after), after
    assert all(parse_rfc3339(e["time"]) <= story.boundary for e in before), before
    assert {"registry.create", "manifest.delete"} <= {e["action"] for e in after}
    assert not {"login", "token.issue", "auth.failure"} & {e["action"] for e in after if e["actor"] == story.user}
    assert {"login", "token.issue", "auth.failure"} <= {e["action"] for e in before}
    assert not {"registry.create", "manifest.delete"} & {e["action"] for e in before}
    assert len(after) + len(before) == len(_all(story.admin))
    # A window around the whole story, and one before it.
    start = min(parse_rfc3339(e["time"]) for e in _all(story.admin))
    assert _all(story.admin, since=rfc3339(start - 5), until=rfc3339(time.time() + 5)) == _all(story.admin)
    assert _all(story.admin, until=rfc3339(start - 5)) == []


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_pagination(story, limit):
    full = _all(story.admin, actor=story.user)
    assert len(full) > 5, full
    pages, cursor, seen = 0, None, []
    while True:
        q = {"actor": story.user, "limit": str(limit)}
        if cursor:
            q["cursor"] = cursor
        r = story.admin.get("/api/v1/audit-logs", params=q)
        assert_status(r, 200)
        body = r.json()
        assert len(body["items"]) <= limit, body
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
        assert body["items"] and pages < 100
    assert seen == full
    assert pages >= len(full) // limit


@pytest.mark.parametrize("cursor", ["zz", "0" * 23, "0" * 25, "g" * 24])
def test_a_cursor_that_is_no_entry_id_is_refused(story, cursor):
    assert_problem(story.admin.get("/api/v1/audit-logs", params={"cursor": cursor}), 400)


def test_only_global_admins_read_the_log(story):
    srv, admin = story.srv, story.admin
    reg_admin, creds = new_principal(admin, "admin", story.reg, prefix="ra")
    for c in (srv.client(creds=story.viewer_creds), srv.client(creds=creds)):
        assert_problem(c.get("/api/v1/audit-logs"), 403, "FORBIDDEN")
    assert_status(srv.anon_client().get("/api/v1/audit-logs"), 401)


def test_no_secret_in_the_audit_log(story):
    text = json.dumps(_all(story.admin))
    for secret in story.secrets:
        assert secret not in text


def test_audit_log_survives_kill9(story):
    """Stored through the WAL: everything listed before a kill -9 is listed after."""
    before = _all(story.admin)
    story.srv.restart(kill=True)
    after = _all(story.srv.client())
    assert after[-len(before):] == before
