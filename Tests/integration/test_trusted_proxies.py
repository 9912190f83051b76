"""trusted_proxies: behind a TLS-terminating proxy the client is the one its
X-Forwarded-For names, for the auth throttle and the audit log; from a peer
that is not a trusted proxy the header is ignored (docs/identity.md,
"Throttling"). A server of its own trusts 127.0.0.50 only, with an auth
failure limit of 3."""

from __future__ import annotations

import pytest

from helpers import assert_status, new_principal, wrong_secret
from test_throttling import _can_bind, from_source

LIMIT = 3
PROXY = "127.0.0.50"
pytestmark = pytest.mark.skipif(not _can_bind(PROXY), reason="no 127.0.0.x source addresses besides 127.0.0.1")


@pytest.fixture(scope="module")
def psrv(spawn_server):
    srv = spawn_server("proxies", extra_args=["--auth-failure-limit", str(LIMIT), "--trusted-proxy", f"{PROXY}/32",
                                              "--trusted-proxy", "10.9.0.0/16"])
    yield srv
    srv.stop_quietly()


def _through(client, forwarded: str | None):
    if forwarded is not None:
        client.session.headers["X-Forwarded-For"] = forwarded
    return client


def test_clients_behind_a_trusted_proxy_are_throttled_apart(psrv):
    creds = new_principal(psrv.client(), "viewer", prefix="px")[1]
    bad = _through(from_source(psrv.client(creds=wrong_secret(creds)), PROXY), "198.51.100.7")
    statuses = [bad.get("/v2/").status_code for _ in range(LIMIT + 2)]
    assert statuses[-1] == 429, statuses
    # Another client through the same proxy, with a key of its own (keys are throttled too),
    # is not held up by the first one's failures.
    other = new_principal(psrv.client(), "viewer", prefix="px")[1]
    good = _through(from_source(psrv.client(creds=other), PROXY), "198.51.100.8")
    assert_status(good.get("/v2/"), 200)
    # The proxy's own hops (10.9/16) are skipped: the client is the right-most address not trusted.
    assert_status(_through(from_source(psrv.client(creds=other), PROXY), "198.51.100.7, 10.9.1.2").get("/v2/"), 429)
    assert_status(_through(from_source(psrv.client(creds=other), PROXY), "198.51.100.7, 198.51.100.9").get("/v2/"), 200)


def test_the_audit_log_names_the_forwarded_client(psrv):
    creds = new_principal(psrv.client(), "viewer", prefix="pa")[1]
    assert_status(_through(from_source(psrv.client(creds=wrong_secret(creds)), PROXY), "2001:db8::77").get("/v2/"), 401)
    entries = psrv.client().get("/api/v1/audit-logs", params={"action": "auth.failure", "limit": 10}).json()["items"]
    assert any(e["source"] == "2001:db8::77" for e in entries), entries


def test_a_peer_that_is_not_trusted_cannot_pick_its_address(psrv):
    creds = new_principal(psrv.client(), "viewer", prefix="pn")[1]
    # Failures from an untrusted peer count against the peer, whatever the header says.
    spoofer = "127.0.0.51"
    for i in range(LIMIT + 2):
        _through(from_source(psrv.client(creds=wrong_secret(creds)), spoofer), f"192.0.2.{i}").get("/v2/")
    other = new_principal(psrv.client(), "viewer", prefix="pn")[1]
    assert_status(_through(from_source(psrv.client(creds=other), spoofer), "192.0.2.200").get("/v2/"), 429)
    # A garbled header from the trusted proxy leaves the client unknown: the proxy's own address counts.
    entries_before = psrv.client().get("/api/v1/audit-logs", params={"action": "auth.failure", "limit": 1}).json()["items"]
    assert_status(_through(from_source(psrv.client(creds=wrong_secret(other)), PROXY), "unknown").get("/v2/"), 401)
    last = psrv.client().get("/api/v1/audit-logs", params={"action": "auth.failure", "limit": 1}).json()["items"]
    assert last != entries_before and last[0]["source"] == PROXY, last
