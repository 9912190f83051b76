"""The token endpoint (/auth/token), the JWTs it issues and the Bearer
challenges of /v2 and /api/v1 (docs/identity.md, "Authentication" and
"Tokens")."""

from __future__ import annotations

import json
import time

import pytest
import requests

from helpers import (
    HTTP_TIMEOUT,
    api_bind,
    api_create_user,
    api_create_key,
    assert_problem,
    assert_status,
    b64url_decode,
    b64url_encode,
    basic_header,
    describe,
    jwt_decode,
    make_image,
    new_principal,
    oci_error_codes,
    parse_challenge,
    parse_challenges,
    parse_rfc3339,
    random_bytes,
    unique,
    wrong_secret,
)

MAX_TTL = 43200


@pytest.fixture(scope="module")
def treg(http) -> str:
    """A registry with `app:v1`, and the image."""
    from helpers import create_registry

    name = create_registry(http, "tk")
    img = make_image(n_layers=1, layer_size=1024)
    http.push_image(f"{name}/app", img, "v1")
    return name


@pytest.fixture(scope="module")
def img(http, treg):
    r = http.get_manifest(f"{treg}/app", "v1")
    assert_status(r, 200)
    return r.content


def _grants(token: str) -> dict:
    _, claims = jwt_decode(token)
    out = {}
    for a in claims["access"]:
        assert set(a) == {"type", "name", "actions"}, claims["access"]
        assert isinstance(a["actions"], list), a
        out[(a["type"], a["name"])] = sorted(a["actions"])
    return out


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


# ---------------------------------------------------------------------------
# Issuing
# ---------------------------------------------------------------------------


def test_get_with_basic_and_repeated_scope(server, http, treg):
    before = time.time()
    r = http.fetch_token(f"repository:{treg}/app:pull,push", f"repository:{treg}/other:pull")
    after = time.time()
    assert_status(r, 200)
    body = r.json()
    assert {"token", "access_token", "expires_in", "issued_at"} <= set(body), body
    assert body["token"] == body["access_token"], "token and access_token must be the same token"
    assert body["expires_in"] == MAX_TTL, body  # default token_ttl
    issued = parse_rfc3339(body["issued_at"])
    assert before - 2 <= issued <= after + 2, body

    header, claims = jwt_decode(body["token"])
    assert header.get("alg") == "ES256", header
    signature = b64url_decode(body["token"].rsplit(".", 1)[1])
    assert len(signature) == 64, "an ES256 JWS signature is R||S, 64 bytes (not DER)"
    assert claims["iss"] == "berth", claims
    assert claims["aud"] == "berth" or claims["aud"] == ["berth"], claims
    assert claims["sub"] == "admin", claims
    assert claims["akid"] == server.admin_creds[0], claims
    assert isinstance(claims["jti"], str) and claims["jti"], claims
    for k in ("exp", "nbf", "iat"):
        assert isinstance(claims[k], (int, float)), claims
    assert claims["exp"] - claims["iat"] == pytest.approx(MAX_TTL, abs=1), claims
    assert claims["exp"] - claims["iat"] <= MAX_TTL, claims
    assert claims["nbf"] <= claims["iat"] + 1 and claims["nbf"] <= after + 1, claims
    assert before - 2 <= claims["iat"] <= after + 2, claims
    assert abs(claims["iat"] - issued) <= 2, (claims, body)
    assert _grants(body["token"]) == {
        ("repository", f"{treg}/app"): ["pull", "push"],
        ("repository", f"{treg}/other"): ["pull"],
    }


def test_every_token_has_its_own_jti(http, treg):
    scope = f"repository:{treg}/app:pull"
    jtis = {jwt_decode(http.token_for(scope))[1]["jti"] for _ in range(3)}
    assert len(jtis) == 3, jtis


def test_token_without_scope_grants_nothing(http):
    """What `docker login` asks for: a token, no access."""
    r = http.fetch_token()
    assert_status(r, 200)
    _, claims = jwt_decode(r.json()["token"])
    assert not claims.get("access"), claims


def test_the_token_requests_log_line_names_the_key_holder(server, http):
    """Like every authenticated request's, not 'anonymous'."""
    since = server.log_size()
    r = http.fetch_token()
    assert_status(r, 200)
    lines = [json.loads(l) for l in server.log_text(since).splitlines()
             if l.startswith("{") and '"route":"auth.token"' in l]
    assert lines and lines[-1]["user"] == "admin", lines


def test_a_token_gets_no_new_token_and_no_admin_api(http, treg):
    """A token is not a credential for a new one (it would be renewed forever,
    with every right of its key's user), nor for the admin API (its scope
    names repositories, not admin operations)."""
    token = http.token_for(f"repository:{treg}/app:pull")
    r = requests.get(http.url("/auth/token"), params={"service": "berth", "scope": f"repository:{treg}/app:pull,push,delete"},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=http.verify)
    assert r.status_code == 401 and r.json().get("error") == "invalid_client", describe(r)
    assert "token" not in r.json()
    bearer = http.with_token(token)
    assert_status(bearer.get_manifest(f"{treg}/app", "v1"), 200)
    for path in ("/api/v1/me", "/api/v1/registries", f"/api/v1/registries/{treg}"):
        assert_problem(bearer.get(path), 401, "UNAUTHORIZED")
    assert_problem(bearer.delete(f"/api/v1/registries/{treg}", params={"force": "true"}), 401, "UNAUTHORIZED")
    assert_status(http.get(f"/api/v1/registries/{treg}"), 200)


def test_post_password_grant(server, http, treg):
    form = {
        "grant_type": "password",
        "username": server.admin_creds[0],
        "password": server.admin_creds[1],
        "service": "berth",
        "scope": f"repository:{treg}/app:pull repository:{treg}/b:pull,push",
    }
    r = _session().post(server.url + "/auth/token", data=form, timeout=HTTP_TIMEOUT)
    assert_status(r, 200)
    body = r.json()
    assert {"token", "access_token", "expires_in", "issued_at"} <= set(body), body
    assert _grants(body["access_token"]) == {
        ("repository", f"{treg}/app"): ["pull"],
        ("repository", f"{treg}/b"): ["pull", "push"],
    }
    assert_status(server.client(token=body["access_token"]).get_manifest(f"{treg}/app", "v1"), 200)

    bad = _session().post(server.url + "/auth/token", data={**form, "password": wrong_secret(server.admin_creds)[1]},
                          timeout=HTTP_TIMEOUT)
    assert_status(bad, 401)
    assert "token" not in bad.text


def test_refresh_token_grant_is_refused(server):
    r = _session().post(
        server.url + "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "service": "berth", "client_id": "test"},
        timeout=HTTP_TIMEOUT,
    )
    assert_status(r, 400)
    assert "unsupported_grant_type" in r.text, describe(r)


def test_an_oversized_token_request_gets_an_oauth_error(server):
    """A form over 64 KiB, with its length declared (refused unread) and sent
    chunked (refused once read past the limit), gets 413 in the token
    endpoint's own error form, not a bare status."""
    body = b"grant_type=password&username=x&password=" + b"y" * (64 << 10)
    for label, data in (("declared", body), ("chunked", iter([body[: 1 << 15], body[1 << 15:]]))):
        r = _session().post(server.url + "/auth/token", data=data, timeout=HTTP_TIMEOUT,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413, (label, describe(r))
        assert r.headers["Content-Type"] == "application/json", label
        assert r.json()["error"] == "invalid_request" and "64 KiB" in r.json()["error_description"], (label, r.text)


@pytest.mark.parametrize("how", ["wrong-secret", "unknown-key", "malformed-basic"])
def test_bad_credentials_get_no_token(server, http, treg, how):
    if how == "wrong-secret":
        headers = basic_header(wrong_secret(server.admin_creds))
    elif how == "unknown-key":
        headers = basic_header(("AK" + "A" * 20, "x" * 40))
    else:
        headers = {"Authorization": "Basic !!!not-base64"}
    r = _session().get(server.url + "/auth/token", params={"service": "berth", "scope": f"repository:{treg}/app:pull"},
                       headers=headers, timeout=HTTP_TIMEOUT)
    assert_status(r, 401)
    assert "token" not in r.text


def test_a_token_mounts_from_another_registry_only_with_pull_there_in_its_scope(server, http, treg, new_registry):
    """A token scoped to rb/app must not copy ra's blobs into rb, where it could
    read them: without `repository:ra/...:pull` the mount is a plain upload
    session (202), as in Distribution. Within rb, the blob is rb's already."""
    source = new_registry("tkm")
    data = random_bytes(3000)
    digest = http.upload_blob(f"{source}/app", data)
    mount = f"/v2/{treg}/mounted/blobs/uploads/?mount={digest}&from={source}/app"
    narrow = http.with_token(http.token_for(f"repository:{treg}/mounted:pull,push"))
    r = narrow.post(mount, headers={"Content-Length": "0"})
    assert_status(r, 202)
    assert_status(http.head_blob(f"{treg}/mounted", digest), 404)
    assert_status(narrow.get_blob(f"{treg}/mounted", digest), 404)
    wide = http.with_token(http.token_for(f"repository:{treg}/mounted:pull,push", f"repository:{source}/app:pull"))
    r = wide.post(mount, headers={"Content-Length": "0"})
    assert_status(r, 201)
    assert r.headers.get("Docker-Content-Digest") == digest, describe(r)
    assert narrow.get_blob(f"{treg}/mounted", digest).content == data
    # From another repository of the token's own registry: mounted without naming it.
    r = narrow.post(f"/v2/{treg}/mounted/blobs/uploads/?mount={digest}&from={treg}/elsewhere", headers={"Content-Length": "0"})
    assert_status(r, 201)


def test_granted_is_intersection_of_request_and_rights(server, http, treg, new_registry):
    other = new_registry("tko")
    _, viewer = new_principal(http, "viewer", prefix="tv")
    _, scoped = new_principal(http, "uploader", treg, prefix="ts")
    c = server.client(creds=viewer)
    t = c.token_for(f"repository:{treg}/app:pull,push,delete", "registry:catalog:*")
    assert _grants(t) == {("repository", f"{treg}/app"): ["pull"], ("registry", "catalog"): ["*"]}

    # Scopes the user may not use are granted empty, not refused.
    c = server.client(creds=scoped)
    r = c.fetch_token(f"repository:{treg}/app:pull,push,delete", f"repository:{other}/app:pull")
    assert_status(r, 200)
    g = _grants(r.json()["token"])
    assert g[("repository", f"{treg}/app")] == ["pull", "push"], g
    assert g.get(("repository", f"{other}/app"), []) == [], g


def test_anonymous_token_grants_nothing_on_closed_registries(server, treg):
    anon = server.anon_client()
    r = anon.fetch_token(f"repository:{treg}/app:pull", "registry:catalog:*", creds=None)
    assert_status(r, 200)
    g = _grants(r.json()["token"])
    assert all(actions == [] for actions in g.values()), g
    bearer = server.client(token=r.json()["token"])
    r = bearer.get_manifest(f"{treg}/app", "v1")
    assert_status(r, 401)
    _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
    assert params.get("error") == "insufficient_scope", describe(r)


# ---------------------------------------------------------------------------
# Using tokens
# ---------------------------------------------------------------------------


def test_token_access_is_enforced_per_action_and_repository(server, http, treg, img):
    t = http.token_for(f"repository:{treg}/app:pull", f"repository:{treg}/w:pull,push")
    c = server.client(token=t)
    g = c.get_manifest(f"{treg}/app", "v1")
    assert_status(g, 200)
    assert g.content == img

    # Push needs push: 401 insufficient_scope naming what is needed.
    r = c.put_manifest(f"{treg}/app", "viatoken", img)
    assert_status(r, 401)
    _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
    assert params == {
        "realm": f"http://{server.host}/auth/token",
        "service": "berth",
        "scope": f"repository:{treg}/app:pull,push",
        "error": "insufficient_scope",
    }, r.headers
    # Delete needs delete.
    r = c.delete(f"/v2/{treg}/app/manifests/v1")
    assert_status(r, 401)
    _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
    assert params.get("error") == "insufficient_scope" and params.get("scope") == f"repository:{treg}/app:delete", r.headers
    assert_status(http.get_manifest(f"{treg}/app", "v1"), 200)

    # The repository granted pull,push takes the push.
    image = make_image(n_layers=1, layer_size=512)
    c.push_image(f"{treg}/w", image, "v1")
    assert http.get_manifest(f"{treg}/w", "v1").content == image.manifest


def test_token_with_delete_deletes(server, http, treg):
    image = make_image(n_layers=1, layer_size=256)
    http.push_image(f"{treg}/d", image, "gone")
    c = server.client(token=http.token_for(f"repository:{treg}/d:delete"))
    assert_status(c.delete(f"/v2/{treg}/d/manifests/{image.digest}"), 202)
    assert_status(http.get_manifest(f"{treg}/d", image.digest), 404)


def _forge(token: str, **changes) -> str:
    h, p, s = token.split(".")
    payload = json.loads(b64url_decode(p))
    payload.update(changes)
    return ".".join([h, b64url_encode(json.dumps(payload).encode()), s])


def test_forged_tokens_are_refused(server, http, treg, make_server):
    good = http.token_for(f"repository:{treg}/app:pull")
    assert_status(server.client(token=good).get_manifest(f"{treg}/app", "v1"), 200)
    _, claims = jwt_decode(good)

    widened = _forge(good, access=[{"type": "repository", "name": f"{treg}/app", "actions": ["pull", "push", "delete"]}])
    unsigned = ".".join([b64url_encode(b'{"alg":"none","typ":"JWT"}'), good.split(".")[1], ""])
    other = make_server(label="foreign-signer")
    foreign = other.client().token_for(f"repository:{treg}/app:pull")  # same iss/sub/aud, another key
    for name, token in (("widened", widened), ("alg-none", unsigned), ("foreign-key", foreign),
                        ("garbage", "not.a.token"), ("truncated", good[:-10])):
        r = server.client(token=token).get_manifest(f"{treg}/app", "v1")
        assert r.status_code == 401, f"{name} token: {describe(r)}"
        r = server.client(token=token).get("/v2/")
        assert r.status_code == 401, f"{name} token on /v2/: {describe(r)}"
    assert claims["sub"] == jwt_decode(foreign)[1]["sub"] == "admin"


def test_token_expires_after_token_ttl(spawn_server):
    srv = spawn_server("ttl", registries=["exp"], extra_args=["--token-ttl", "2"])
    try:
        image = make_image(n_layers=1, layer_size=256)
        srv.client().push_image("exp/app", image, "v1")
        r = srv.client().fetch_token("repository:exp/app:pull")
        got = time.monotonic()
        assert_status(r, 200)
        assert r.json()["expires_in"] == 2, r.json()
        token = r.json()["token"]
        _, claims = jwt_decode(token)
        assert claims["exp"] - claims["iat"] == pytest.approx(2, abs=0.01), claims
        c = srv.client(token=token)
        assert_status(c.get_manifest("exp/app", "v1"), 200)
        time.sleep(max(0.0, got + 3 - time.monotonic()))
        assert_status(c.get_manifest("exp/app", "v1"), 401)
        assert_status(c.get("/v2/"), 401)
    finally:
        srv.stop_quietly()


def test_token_ttl_above_the_maximum_is_not_honoured(make_server):
    """token_ttl is at most 43200: a larger value is either refused at start
    or capped."""
    srv = make_server(extra_args=["--token-ttl", "86400"], start=False, label="ttl-too-long")
    p = None
    try:
        srv.start()
    except RuntimeError as e:  # refused: it must say why
        p = str(e)
    if p is not None:
        assert "token" in p.lower() and "43200" in p, p
        return
    body = srv.client().fetch_token().json()
    _, claims = jwt_decode(body["token"])
    assert body["expires_in"] <= MAX_TTL and claims["exp"] - claims["iat"] <= MAX_TTL, (body, claims)


# ---------------------------------------------------------------------------
# Challenges
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tls_port", [False, True], ids=["http", "https"])
def test_challenge_format_on_repository_routes(server, treg, tls_port):
    anon = server.tls_client(creds=None) if tls_port else server.anon_client()
    base = server.tls_url if tls_port else server.url
    realm = f'Bearer realm="{base}/auth/token",service="berth"'
    name = f"{treg}/app"
    cases = [
        ("GET", f"/v2/{name}/manifests/v1", "pull"),
        ("HEAD", f"/v2/{name}/manifests/v1", "pull"),
        ("GET", f"/v2/{name}/tags/list", "pull"),
        ("POST", f"/v2/{name}/blobs/uploads/", "pull,push"),
        ("PUT", f"/v2/{name}/manifests/x", "pull,push"),
        ("DELETE", f"/v2/{name}/manifests/v1", "delete"),
    ]
    for method, path, actions in cases:
        r = anon.request(method, path, headers={"Content-Length": "0"})
        assert_status(r, 401)
        assert r.headers.get("WWW-Authenticate") == f'{realm},scope="repository:{name}:{actions}"', describe(r)
        if method != "HEAD":
            assert "UNAUTHORIZED" in oci_error_codes(r), describe(r)
    r = anon.get("/v2/")
    assert_status(r, 401)
    assert r.headers.get("WWW-Authenticate") == realm, describe(r)


@pytest.mark.parametrize("forwarded, scheme", [("https", "https"), ("HTTP", "http"), ("gopher", "http"), (None, "http")])
def test_challenge_realm_follows_a_tls_proxy(server, forwarded, scheme):
    """Behind a TLS-terminating proxy on the plain listener, the realm keeps
    the scheme the client used (X-Forwarded-Proto); anything else is ignored."""
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    r = server.anon_client().get("/v2/", headers=headers)
    assert_status(r, 401)
    assert r.headers.get("WWW-Authenticate") == f'Bearer realm="{scheme}://{server.host}/auth/token",service="berth"', describe(r)


def test_challenge_on_admin_api(server, http, treg):
    """Only Basic credentials work on /api/v1 and /metrics, so they challenge
    for Basic: a client that followed a Bearer challenge there would fetch a
    token only to be refused again."""
    basic = {"Basic": {"realm": "berth", "charset": "UTF-8"}}
    r = server.anon_client().get("/api/v1/registries")
    assert_problem(r, 401, "UNAUTHORIZED")
    assert parse_challenges(r.headers.get("WWW-Authenticate")) == basic, r.headers
    r = server.client(token=http.token_for(f"repository:{treg}/app:pull")).get("/api/v1/registries")
    assert_problem(r, 401, "UNAUTHORIZED")
    assert parse_challenges(r.headers.get("WWW-Authenticate")) == basic, r.headers
    r = server.client(creds=(server.admin_creds[0], "x" * 40)).get("/api/v1/registries")
    assert_problem(r, 401, "UNAUTHORIZED")
    assert parse_challenges(r.headers.get("WWW-Authenticate")) == basic, r.headers


def test_challenge_leads_a_client_to_a_working_token(server, http, treg, img):
    """Follow the challenge as Docker does: realm + service + scope, with Basic."""
    anon = server.anon_client()
    r = anon.get_manifest(f"{treg}/app", "v1")
    _, params = parse_challenge(r.headers.get("WWW-Authenticate"))
    t = _session().get(params["realm"], params={"service": params["service"], "scope": params["scope"]},
                       headers=basic_header(server.admin_creds), timeout=HTTP_TIMEOUT)
    assert_status(t, 200)
    g = server.client(token=t.json()["token"]).get_manifest(f"{treg}/app", "v1")
    assert_status(g, 200)
    assert g.content == img


def test_user_without_rights_is_denied_not_challenged(server, http, treg):
    """Good credentials without the right: 403 DENIED (Basic), while a token
    lacking the action is 401 insufficient_scope (so Docker asks again)."""
    user = api_create_user(http, unique("nr"))
    creds = api_create_key(http, user)
    c = server.client(creds=creds)
    assert_status(c.get("/v2/"), 200)
    r = c.get_manifest(f"{treg}/app", "v1")
    assert_status(r, 403)
    assert "DENIED" in oci_error_codes(r), describe(r)
    api_bind(http, user, "viewer", treg)
    assert_status(c.get_manifest(f"{treg}/app", "v1"), 200)
