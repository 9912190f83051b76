"""Throttling of failed authentications (docs/identity.md, "Throttling"), on
a server of its own started with --auth-failure-limit 3.

Each test talks from its own loopback source address (127.0.0.x; Linux
routes all of 127/8 to lo, so the server sees distinct remote addresses) and
uses its own keys, so the tests neither see nor cause each other's throttling.

How this reads the doc: once more than `limit` failures came from a source
(or against a key) within 60 s, *every* further attempt from that source (or
with that key, except from a source the key authenticated from lately) is
answered 429, correct credentials included, until the window has passed;
"successful requests are not throttled" means successes never count towards
the limit. Whether the attempt that makes the count
exceed the limit is itself answered 401 or 429 is left open.
"""

from __future__ import annotations

import socket

import pytest
import requests
from requests.adapters import HTTPAdapter

from helpers import (
    HTTP_TIMEOUT,
    Registry,
    assert_status,
    basic_header,
    describe,
    new_principal,
    oci_error_codes,
    wrong_secret,
)

LIMIT = 3


def _can_bind(ip: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _can_bind("127.0.0.10"), reason="no 127.0.0.x source addresses besides 127.0.0.1")


class _SourceAdapter(HTTPAdapter):
    def __init__(self, source_ip: str, **kw):
        self.source_ip = source_ip
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kw):
        kw["source_address"] = (self.source_ip, 0)
        return super().init_poolmanager(*args, **kw)


def from_source(client: Registry, ip: str) -> Registry:
    client.session.mount("http://", _SourceAdapter(ip))
    return client


@pytest.fixture(scope="module")
def tsrv(spawn_server):
    srv = spawn_server("throttle", registries=["th"], extra_args=["--auth-failure-limit", str(LIMIT)])
    yield srv
    srv.stop_quietly()


@pytest.fixture
def user_key(tsrv):
    """factory: a new global viewer's key."""
    return lambda: new_principal(tsrv.client(), "viewer", prefix="th")[1]


def _token(tsrv, ip: str, creds) -> requests.Response:
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", _SourceAdapter(ip))
    return s.get(tsrv.url + "/auth/token", params={"service": "berth", "scope": "repository:th/app:pull"},
                 headers=basic_header(creds) if creds else {}, timeout=HTTP_TIMEOUT)


def _fail_until_throttled(do, what: str) -> requests.Response:
    """`LIMIT` failures are plain 401s; at the latest the attempt after the
    one that exceeds the limit is a 429, which is returned."""
    for i in range(LIMIT):
        r = do()
        assert r.status_code == 401, f"{what}: failure {i + 1} of {LIMIT} must still be a plain 401:\n{describe(r)}"
    r = do()
    assert r.status_code in (401, 429), describe(r)
    if r.status_code == 401:
        r = do()
    assert_status(r, 429)
    return r


def _assert_retry_after(r: requests.Response) -> int:
    value = r.headers.get("Retry-After", "")
    assert value.isdigit(), f"Retry-After must be a number of seconds:\n{describe(r)}"
    assert 1 <= int(value) <= 60, describe(r)
    return int(value)


def test_successful_requests_are_not_throttled(tsrv, user_key):
    c = from_source(tsrv.client(creds=user_key()), "127.0.0.10")
    for _ in range(4 * LIMIT):
        assert_status(c.get("/v2/"), 200)
        assert_status(c.get("/api/v1/me"), 200)
    for _ in range(2 * LIMIT):
        assert_status(_token(tsrv, "127.0.0.10", c.creds), 200)


def test_requests_without_credentials_are_not_failed_authentications(tsrv, user_key):
    """Clients (docker, skopeo, oras) ask without credentials first to get the
    challenge; those 401s must not get the source throttled."""
    anon = from_source(tsrv.anon_client(), "127.0.0.11")
    for _ in range(3 * LIMIT):
        assert_status(anon.get("/v2/"), 401)
        assert_status(anon.get("/v2/th/app/tags/list"), 401)
    assert_status(from_source(tsrv.client(creds=user_key()), "127.0.0.11").get("/v2/"), 200)


def test_failures_from_one_source_throttle_that_source(tsrv, user_key):
    bad = from_source(tsrv.client(creds=wrong_secret(user_key())), "127.0.0.12")
    r = _fail_until_throttled(lambda: bad.get("/v2/"), "wrong secret on /v2/")
    assert "TOOMANYREQUESTS" in oci_error_codes(r), describe(r)
    _assert_retry_after(r)

    # Correct credentials of another, untouched key from the same source: the
    # source is throttled, on /v2, /api/v1 and /auth/token alike.
    good_creds = user_key()
    good = from_source(tsrv.client(creds=good_creds), "127.0.0.12")
    r = good.get("/v2/th/app/tags/list")
    assert_status(r, 429)
    assert "TOOMANYREQUESTS" in oci_error_codes(r), describe(r)
    _assert_retry_after(r)
    # HEAD too, without a body, and with the API version header every /v2 answer carries.
    r = good.head("/v2/th/app/manifests/v1")
    assert_status(r, 429)
    assert r.content == b"" and r.headers.get("Docker-Distribution-API-Version") == "registry/2.0", describe(r)
    _assert_retry_after(r)
    r = good.get("/api/v1/me")
    assert_status(r, 429)
    assert r.headers.get("Content-Type", "").startswith("application/problem+json"), describe(r)
    _assert_retry_after(r)
    r = _token(tsrv, "127.0.0.12", good_creds)
    assert_status(r, 429)
    _assert_retry_after(r)

    # The same key from another source is fine: neither is throttled.
    assert_status(from_source(tsrv.client(creds=good_creds), "127.0.0.13").get("/v2/"), 200)


def test_failures_against_one_key_throttle_that_key_everywhere(tsrv, user_key):
    victim = user_key()
    # Failures spread over sources, each below the limit on its own.
    attempts = [from_source(tsrv.client(creds=wrong_secret(victim)), f"127.0.0.{20 + i}") for i in range(LIMIT + 2)]
    statuses = [c.get("/v2/").status_code for c in attempts]
    assert statuses[:LIMIT] == [401] * LIMIT, statuses
    assert statuses[-1] == 429, statuses
    # The key itself is throttled now, even with its right secret and from a fresh source...
    r = from_source(tsrv.client(creds=victim), "127.0.0.30").get("/v2/")
    assert_status(r, 429)
    _assert_retry_after(r)
    # ...while that source is not.
    assert_status(from_source(tsrv.client(creds=user_key()), "127.0.0.30").get("/v2/"), 200)


def test_a_key_held_at_429_still_works_from_where_it_is_used(tsrv, user_key):
    victim = user_key()
    home = from_source(tsrv.client(creds=victim), "127.0.0.60")
    assert_status(home.get("/v2/"), 200)
    # Someone who knows the key's id sends bad secrets on it, from sources of their own.
    attempts = [from_source(tsrv.client(creds=wrong_secret(victim)), f"127.0.0.{61 + i}") for i in range(LIMIT + 2)]
    statuses = [c.get("/v2/").status_code for c in attempts]
    assert statuses[-1] == 429, statuses
    # The key is held off from a source it has not worked from...
    assert_status(from_source(tsrv.client(creds=victim), "127.0.0.70").get("/v2/"), 429)
    # ...but not where it authenticated before, on /v2, /auth/token and the admin API.
    assert_status(home.get("/v2/"), 200)
    assert_status(_token(tsrv, "127.0.0.60", victim), 200)
    assert_status(home.get("/api/v1/me"), 200)
    # A wrong secret from there still counts against that source.
    bad_home = from_source(tsrv.client(creds=wrong_secret(victim)), "127.0.0.60")
    _fail_until_throttled(lambda: bad_home.get("/v2/"), "wrong secret from the key's own source")
    assert_status(home.get("/v2/"), 429)


def test_failures_on_the_token_endpoint_count(tsrv, user_key):
    creds = user_key()
    r = _fail_until_throttled(lambda: _token(tsrv, "127.0.0.40", wrong_secret(creds)), "wrong secret on /auth/token")
    _assert_retry_after(r)
    assert_status(_token(tsrv, "127.0.0.40", user_key()), 429)


def test_failures_on_the_admin_api_count(tsrv, user_key):
    bad = from_source(tsrv.client(creds=wrong_secret(user_key())), "127.0.0.50")
    r = _fail_until_throttled(lambda: bad.get("/api/v1/me"), "wrong secret on /api/v1/me")
    assert r.headers.get("Content-Type", "").startswith("application/problem+json"), describe(r)
    _assert_retry_after(r)
