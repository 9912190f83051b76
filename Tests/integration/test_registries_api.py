"""The minimal registries management API (/api/v1) and the offline
`berth registry create` CLI."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from helpers import (
    SESSION_REGISTRY,
    KiB,
    assert_oci_error,
    assert_status,
    describe,
    make_image,
    random_bytes,
    run,
    sha256_digest,
    unique,
    with_query,
)

PROBLEM_JSON = "application/problem+json"

# name -> words of which at least one must appear in the problem `detail`
# (or the CLI's output), so that the message says which rule failed.
RULE_VIOLATIONS = [
    pytest.param("UPPER", ("lowercase", "uppercase", "upper", "lower"), id="uppercase"),
    pytest.param("-leading", ("start", "begin", "lead", "first"), id="leading-dash"),
    pytest.param("a" * 256, ("255", "256", "long", "length", "characters", "exceed", "at most", "max"), id="256-chars"),
    # Names no Docker or OCI client can parse as a path component.
    pytest.param("team-", ("path component",), id="trailing-dash"),
    pytest.param("a..b", ("path component",), id="double-dot"),
    pytest.param("a._b", ("path component",), id="mixed-separators"),
]


def _names(http, limit: int | None = None) -> list[str]:
    """All registry names, following `next_cursor` until it is null."""
    names: list[str] = []
    cursor = None
    for _ in range(10_000):
        params = {}
        if limit:
            params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        r = http.get("/api/v1/registries", params=params)
        assert_status(r, 200)
        body = r.json()
        assert "items" in body and "next_cursor" in body, body
        if limit:
            assert len(body["items"]) <= limit, body
        names += [item["name"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return names
        assert body["items"], "a page with a next_cursor must not be empty"
    raise AssertionError("registry listing does not terminate")


def test_create_get_list(http):
    name = unique("api")
    r = http.create_registry(name)
    assert_status(r, 201)
    assert r.json()["name"] == name

    info = http.registry_info(name)
    assert info["name"] == name
    assert info["usage"]["logical_bytes"] == 0 and info["usage"]["blobs"] == 0, info

    assert name in _names(http)


def test_list_pagination(http):
    made = sorted(unique("pg") for _ in range(3))
    for name in made:
        assert_status(http.create_registry(name), 201)
    everything = _names(http)
    assert len(everything) == len(set(everything))
    assert set(made) <= set(everything)

    paged = _names(http, limit=1)
    assert paged == everything, "limit=1 pages must concatenate to the full list"
    paged2 = _names(http, limit=2)
    assert paged2 == everything

    r = http.get("/api/v1/registries", params={"limit": "1"})
    assert_status(r, 200)
    assert len(r.json()["items"]) == 1
    assert r.json()["next_cursor"], r.json()


def test_cli_created_registry_is_listed(http):
    assert SESSION_REGISTRY in _names(http)
    assert http.registry_info(SESSION_REGISTRY)["name"] == SESSION_REGISTRY


def test_duplicate_is_409(http):
    name = unique("dup")
    assert_status(http.create_registry(name), 201)
    assert_status(http.create_registry(name), 409)
    assert_status(http.create_registry(SESSION_REGISTRY), 409)
    assert _names(http).count(name) == 1


@pytest.mark.parametrize("bad,rule_words", RULE_VIOLATIONS)
def test_bad_name_is_400_problem_json_naming_the_rule(http, bad, rule_words):
    r = http.create_registry(bad)
    assert_status(r, 400)
    assert r.headers.get("Content-Type", "").startswith(PROBLEM_JSON), describe(r)
    body = r.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    detail = body.get("detail")
    assert isinstance(detail, str) and detail, body
    assert any(w in detail.lower() for w in rule_words), f"detail should name the violated rule {rule_words}: {detail!r}"
    assert bad not in _names(http)


@pytest.mark.parametrize("bad", ["", "has space", "with/slash", "tab\tname", "ümlaut"])
def test_other_bad_names_are_400(http, bad):
    r = http.create_registry(bad)
    assert_status(r, 400)
    assert r.headers.get("Content-Type", "").startswith(PROBLEM_JSON), describe(r)
    assert r.json().get("code"), r.text


def test_get_and_delete_unknown_registry(http):
    missing = unique("missing")
    assert_status(http.get(f"/api/v1/registries/{missing}"), 404)
    assert_status(http.delete(f"/api/v1/registries/{missing}"), 404)


def test_delete_empty_registry(http):
    name = unique("del")
    assert_status(http.create_registry(name), 201)
    assert_status(http.delete(f"/api/v1/registries/{name}"), 204)
    assert_status(http.get(f"/api/v1/registries/{name}"), 404)
    assert name not in _names(http)
    # The name is free again.
    assert_status(http.create_registry(name), 201)


def test_delete_registry_with_images_requires_force(http):
    name = unique("full")
    assert_status(http.create_registry(name), 201)
    img = make_image(n_layers=1, layer_size=4 * KiB)
    http.push_image(f"{name}/app", img, "v1")

    r = http.delete(f"/api/v1/registries/{name}")
    assert_status(r, 409)
    assert http.get_manifest(f"{name}/app", "v1").content == img.manifest

    assert_status(http.delete(f"/api/v1/registries/{name}?force=true"), 204)
    assert_status(http.get(f"/api/v1/registries/{name}"), 404)
    assert name not in _names(http)
    assert_oci_error(http.get_manifest(f"{name}/app", "v1"), 404, "NAME_UNKNOWN")
    assert_oci_error(http.start_upload(f"{name}/app"), 404, "NAME_UNKNOWN")

    # Recreating the registry does not resurrect the old content.
    assert_status(http.create_registry(name), 201)
    assert_status(http.get_manifest(f"{name}/app", "v1"), 404)
    assert http.registry_info(name)["usage"]["blobs"] == 0


def test_upload_from_a_deleted_registry_does_not_land_in_its_successor(http):
    name = unique("succ")
    assert_status(http.create_registry(name), 201)
    data = random_bytes(4 * KiB)
    r = http.start_upload(f"{name}/app")
    assert_status(r, 202)
    location = http.abs_location(r)
    assert_status(http.delete(f"/api/v1/registries/{name}?force=true"), 204)
    assert_status(http.create_registry(name), 201)
    r = http.patch(location, data=data, headers={"Content-Type": "application/octet-stream"})
    assert_oci_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = http.put(with_query(location, digest=sha256_digest(data)), data=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert_oci_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert http.registry_info(name)["usage"]["blobs"] == 0
    # An upload started in the new registry works.
    http.upload_blob(f"{name}/app", data)
    assert http.registry_info(name)["usage"]["blobs"] == 1


def test_delete_discards_uploads_in_progress(http):
    """An upload left open in a deleted registry gives its bytes back with the
    registry, not hours later when it would expire."""
    name = unique("open")
    assert_status(http.create_registry(name), 201)
    before = http.system_usage()
    r = http.start_upload(f"{name}/app")
    assert_status(r, 202)
    location = http.abs_location(r)
    r = http.patch(location, data=random_bytes(300 * KiB),
                   headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{300 * KiB - 1}"})
    assert_status(r, 202)
    during = http.system_usage()
    assert during["open_uploads"] == before["open_uploads"] + 1, (before, during)
    assert during["upload_bytes"] == before["upload_bytes"] + 300 * KiB, (before, during)

    assert_status(http.delete(f"/api/v1/registries/{name}"), 204)
    after = http.system_usage()
    assert (after["open_uploads"], after["upload_bytes"]) == (before["open_uploads"], before["upload_bytes"]), after
    assert_oci_error(http.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_an_upload_being_written_when_its_registry_goes_takes_no_more(server, http):
    """The delete skips an upload whose PATCH is in flight; that PATCH ends as
    it began, but the upload takes nothing more: its registry is gone."""
    name = unique("inflight")
    assert_status(http.create_registry(name), 201)
    r = http.start_upload(f"{name}/app")
    assert_status(r, 202)
    location = http.abs_location(r)
    path = location.split(str(server.http_port), 1)[1]
    head = (f"PATCH {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {2 * 65536}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in http.auth_headers().items()) + "\r\n")
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(head.encode() + b"a" * 65536)
        time.sleep(0.3)
        assert_status(http.delete(f"/api/v1/registries/{name}?force=true"), 204)
        sock.sendall(b"b" * 65536)
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 "), response
    r = http.patch(location, data=b"c" * 1024, headers={"Content-Type": "application/octet-stream"})
    assert_oci_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(http.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_force_delete_during_pushes_leaves_nothing_behind(http):
    """Pushes racing a forced delete either land before it (and are deleted
    with the rest) or fail cleanly after it: nothing written into the
    registry survives to turn up when a registry of the same name is created."""
    name = unique("race")
    outcomes: list[int] = []
    pushed = threading.Event()
    stop = threading.Event()

    def pusher(worker: int) -> None:
        client = http.with_creds(http.creds)
        n = 0
        while not stop.is_set():
            n += 1
            img = make_image(n_layers=1, layer_size=1 * KiB)
            repo = f"{name}/app{worker}"
            statuses = []
            for blob in img.blobs:
                r = client.start_upload(repo)
                statuses.append(r.status_code)
                if r.status_code != 202:
                    break
                r = client.put(with_query(client.abs_location(r), digest=sha256_digest(blob)),
                               data=blob, headers={"Content-Type": "application/octet-stream"})
                statuses.append(r.status_code)
            else:
                r = client.put_manifest(repo, f"t{n}", img.manifest, img.media_type)
                statuses.append(r.status_code)
                if r.status_code == 201:
                    pushed.set()
            outcomes.extend(statuses)

    for _ in range(5):
        assert_status(http.create_registry(name), 201)
        pushed.clear()
        stop.clear()
        workers = [threading.Thread(target=pusher, args=(i,)) for i in range(6)]
        for w in workers:
            w.start()
        assert pushed.wait(30), "no push succeeded"
        time.sleep(0.2)
        assert_status(http.delete(f"/api/v1/registries/{name}?force=true"), 204)
        time.sleep(0.3)  # pushes go on against the deleted registry
        stop.set()
        for w in workers:
            w.join(60)
        assert not any(s >= 500 for s in outcomes), sorted(set(outcomes))

        assert_status(http.create_registry(name), 201)
        usage = http.get(f"/api/v1/registries/{name}/usage").json()
        assert usage == {"logical_bytes": 0, "blobs": 0, "images": 0, "artifacts": 0, "tags": 0}, usage
        r = http.get(f"/api/v1/registries/{name}/images")
        assert_status(r, 200)
        assert r.json()["items"] == [], r.text
        assert_status(http.delete(f"/api/v1/registries/{name}"), 204)


def test_registry_usage_counts_blobs(http):
    name = unique("use")
    assert_status(http.create_registry(name), 201)
    blobs = [random_bytes(10 * KiB), random_bytes(20 * KiB)]
    for b in blobs:
        http.upload_blob(f"{name}/x", b)
    usage = http.registry_info(name)["usage"]
    assert usage["blobs"] == 2, usage
    assert usage["logical_bytes"] == 30 * KiB, usage


def test_system_usage(http):
    before = http.system_usage()
    for key in ("logical_bytes", "physical_bytes", "open_uploads", "upload_bytes"):
        assert isinstance(before[key], int) and before[key] >= 0, before

    name = unique("sys")
    assert_status(http.create_registry(name), 201)
    size = 256 * KiB
    http.upload_blob(f"{name}/x", random_bytes(size))
    after = http.system_usage()
    assert after["logical_bytes"] - before["logical_bytes"] == size, (before, after)
    assert after["physical_bytes"] - before["physical_bytes"] >= size, (before, after)


# ---------------------------------------------------------------------------
# Offline CLI
# ---------------------------------------------------------------------------


def test_cli_create_then_serve(make_server):
    srv = make_server(start=False, label="cli")
    p = srv.cli("registry", "create", "clireg")
    assert p.returncode == 0
    p = srv.cli("registry", "create", "clireg2")
    assert p.returncode == 0
    srv.start()
    c = srv.client()
    names = _names(c)
    assert {"clireg", "clireg2"} <= set(names)
    assert c.registry_info("clireg")["usage"]["blobs"] == 0
    # Usable for pushes right away.
    img = make_image(n_layers=1, layer_size=KiB)
    c.push_image("clireg/app", img, "v1")
    assert c.get_manifest("clireg/app", "v1").content == img.manifest


def test_cli_duplicate_fails(make_server):
    srv = make_server(start=False, label="cli-dup")
    srv.cli("registry", "create", "once")
    p = srv.cli("registry", "create", "once", check=False)
    assert p.returncode != 0
    assert (p.stdout + p.stderr).strip(), "a failing CLI command should say why"


@pytest.mark.parametrize("bad,rule_words", RULE_VIOLATIONS)
def test_cli_rejects_bad_names(make_server, bad, rule_words):
    srv = make_server(start=False, label="cli-bad")
    # "--" so that "-leading" reaches the name validation instead of being
    # parsed as an unknown option.
    p = run([srv.binary, "registry", "create", "--data-dir", str(srv.data_dir), "--", bad], check=False)
    assert p.returncode != 0
    out = (p.stdout + p.stderr).lower()
    assert any(w in out for w in rule_words), f"CLI output should name the violated rule {rule_words}: {out!r}"
    srv.start()
    assert bad not in _names(srv.client())
