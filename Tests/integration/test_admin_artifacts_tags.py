"""Admin API for artifacts and tags (docs/admin-api.md): artifact listing
(size, tags, platforms, referrers), one artifact (manifest, config summary,
layers), artifact delete, tag listing/creation/deletion, and tag mutability on
both the admin API and the data plane.

Every test pushes into a registry of its own on the shared server.
"""

from __future__ import annotations

import json
import time

from helpers import (
    small_image,
    EMPTY_JSON,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    KiB,
    api_get_json,
    api_image_path,
    api_list_all,
    assert_oci_error,
    assert_problem,
    assert_status,
    canonical_json,
    diff_id,
    make_artifact,
    make_image,
    make_layer,
    parse_rfc3339,
    push_index,
    push_tags,
    random_bytes,
    sha256_digest,
)

CLOCK_SLACK = 2

ARTIFACT_FIELDS = {
    "digest", "media_type", "artifact_type", "size", "tags", "pushed_at",
    "pull_count", "last_pulled_at", "platforms", "referrers",
}
TAG_FIELDS = {"name", "digest", "updated_at"}



def content_size(img) -> int:
    """`size` of an image manifest's artifact: config plus layers."""
    return len(img.config) + sum(len(l) for l in img.layers)


def tag_names(value) -> list[str]:
    """An artifact's `tags` (tag names, api-spec/openapi.yaml), sorted."""
    assert isinstance(value, list) and all(isinstance(t, str) for t in value), value
    return sorted(value)


def norm_platform(p: dict) -> dict:
    """`variant` is optional: absent and null are the same."""
    return {k: v for k, v in p.items() if v is not None}


def artifacts(client, reg: str, image: str) -> dict[str, dict]:
    items, _ = api_list_all(client, api_image_path(reg, image, "/artifacts"))
    by = {i["digest"]: i for i in items}
    assert len(by) == len(items), f"a digest is listed twice: {items}"
    return by


def tags(client, reg: str, image: str, **params) -> list[dict]:
    items, _ = api_list_all(client, api_image_path(reg, image, "/tags"), params)
    return items


def tag_map(client, reg: str, image: str) -> dict[str, str]:
    return {t["name"]: t["digest"] for t in tags(client, reg, image)}


def post_tag(client, reg: str, image: str, name: str, digest: str):
    return client.post(api_image_path(reg, image, "/tags"), json={"name": name, "digest": digest})


def in_window(value: str, lo: float, hi: float) -> None:
    t = parse_rfc3339(value)
    assert lo - CLOCK_SLACK <= t <= hi + CLOCK_SLACK, f"{value} not within [{lo}, {hi}]"


# ---------------------------------------------------------------------------
# Artifact listing
# ---------------------------------------------------------------------------


def test_artifacts_list_fields(http, new_registry):
    reg = new_registry("al")
    img = make_image(layers=[make_layer(3 * KiB, "a"), make_layer(5 * KiB, "b")])
    untagged = small_image()
    t0 = time.time()
    push_tags(http, f"{reg}/team/app", img, "v1", "latest")
    push_tags(http, f"{reg}/team/app", untagged)
    t1 = time.time()

    by = artifacts(http, reg, "team/app")
    assert set(by) == {img.digest, untagged.digest}
    item = by[img.digest]
    assert ARTIFACT_FIELDS <= set(item), item
    assert item["media_type"] == MT_OCI_MANIFEST
    # No artifactType in the manifest: null, or (as the referrers API does) the config media type.
    assert item["artifact_type"] in (None, MT_OCI_CONFIG), item
    assert item["size"] == content_size(img) == len(img.config) + len(img.layers[0]) + len(img.layers[1])
    assert tag_names(item["tags"]) == ["latest", "v1"]
    in_window(item["pushed_at"], t0, t1)
    assert (item["pull_count"], item["last_pulled_at"]) == (0, None), item
    assert item["platforms"] == [], item
    assert item["referrers"] == 0, item

    assert tag_names(by[untagged.digest]["tags"]) == []
    assert by[untagged.digest]["size"] == content_size(untagged)


def test_artifacts_multiarch_index(http, new_registry):
    reg = new_registry("ai")
    amd = small_image(arch="amd64")
    arm = make_image(n_layers=2, layer_size=2 * KiB, arch="arm64")
    index = push_index(
        http, f"{reg}/multi",
        [(amd, {"architecture": "amd64", "os": "linux"}),
         (arm, {"architecture": "arm64", "os": "linux", "variant": "v8"})],
        tag="latest",
    )
    idx_digest = sha256_digest(index)

    by = artifacts(http, reg, "multi")
    # One artifact per manifest: the index and both children.
    assert set(by) == {idx_digest, amd.digest, arm.digest}, by
    item = by[idx_digest]
    assert item["media_type"] == MT_OCI_INDEX
    assert [norm_platform(p) for p in item["platforms"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    ], item
    # An index's size is the sum of its children's (each: config + layers).
    assert item["size"] == content_size(amd) + content_size(arm), item
    assert tag_names(item["tags"]) == ["latest"]
    for child in (amd, arm):
        c = by[child.digest]
        assert c["media_type"] == MT_OCI_MANIFEST and c["platforms"] == [] and tag_names(c["tags"]) == [], c
        assert c["size"] == content_size(child), c

    one = api_get_json(http, api_image_path(reg, "multi", f"/artifacts/{idx_digest}"))
    assert one["manifest"] == json.loads(index)
    assert one["config"] is None, one
    assert one["layers"] == [], one
    img = api_get_json(http, api_image_path(reg, "multi"))
    assert (img["artifacts"], img["tags"]) == (3, 1), img


def test_artifacts_referrers_count(http, new_registry):
    reg = new_registry("ar")
    name = f"{reg}/app"
    subject = small_image()
    push_tags(http, name, subject, "v1")
    sig = make_artifact("application/vnd.example.signature.v1", subject.descriptor(), payload=random_bytes(300))
    sbom = make_artifact("application/spdx+json", subject.descriptor(), payload=random_bytes(700))
    http.push_image(name, sig)

    assert artifacts(http, reg, "app")[subject.digest]["referrers"] == 1
    http.push_image(name, sbom)
    by = artifacts(http, reg, "app")
    assert set(by) == {subject.digest, sig.digest, sbom.digest}
    assert by[subject.digest]["referrers"] == 2, by[subject.digest]
    for art, atype, payload in ((sig, "application/vnd.example.signature.v1", 300), (sbom, "application/spdx+json", 700)):
        item = by[art.digest]
        assert item["artifact_type"] == atype, item
        assert item["referrers"] == 0, item
        assert item["size"] == len(EMPTY_JSON) + payload, item
        assert tag_names(item["tags"]) == [] and item["platforms"] == [], item
        one = api_get_json(http, api_image_path(reg, "app", f"/artifacts/{art.digest}"))
        assert one["config"] is None, "an empty config is not an image config"
        assert one["manifest"] == art.manifest_json
        assert one["layers"] == [{"digest": sha256_digest(art.layers[0]), "media_type": "application/octet-stream",
                                  "size": payload}], one

    # A referrer in another image of the registry does not count here.
    other = small_image()
    push_tags(http, f"{reg}/other", other, "v1")
    http.push_image(f"{reg}/other", make_artifact("application/vnd.example.x", other.descriptor()))
    assert artifacts(http, reg, "app")[subject.digest]["referrers"] == 2


# ---------------------------------------------------------------------------
# One artifact
# ---------------------------------------------------------------------------


def test_get_artifact_with_config_summary_and_layers(http, new_registry):
    reg = new_registry("ag")
    layers = [make_layer(2 * KiB, "one"), make_layer(4 * KiB, "two")]
    labels = {"org.opencontainers.image.title": "demo", "maintainer": "berth tests <t@example.com>", "empty": ""}
    config = canonical_json({
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "created": "2023-04-05T06:07:08Z",
        "config": {"Labels": labels, "Cmd": ["/bin/demo"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id(l) for l in layers]},
    })
    img = make_image(config=config, layers=layers, annotations={"org.example.note": "hi"})
    t0 = time.time()
    push_tags(http, f"{reg}/team/app", img, "v1")
    t1 = time.time()

    r = http.get(api_image_path(reg, "team/app", f"/artifacts/{img.digest}"))
    assert_status(r, 200)
    one = r.json()
    assert ARTIFACT_FIELDS | {"manifest", "config", "layers"} <= set(one), one
    assert one["digest"] == img.digest
    assert one["media_type"] == MT_OCI_MANIFEST
    assert one["size"] == content_size(img) == len(config) + len(layers[0]) + len(layers[1])
    assert tag_names(one["tags"]) == ["v1"]
    in_window(one["pushed_at"], t0, t1)
    assert one["manifest"] == json.loads(img.manifest)
    cfg = one["config"]
    assert isinstance(cfg, dict), one
    assert {k: cfg.get(k) for k in ("os", "architecture", "created", "labels")} == {
        "os": "linux", "architecture": "arm64", "created": "2023-04-05T06:07:08Z", "labels": labels,
    }, cfg
    assert one["layers"] == [
        {"digest": sha256_digest(l), "media_type": "application/vnd.oci.image.layer.v1.tar+gzip", "size": len(l)}
        for l in layers
    ], one["layers"]

    # A config without labels.
    plain = small_image(arch="s390x")
    push_tags(http, f"{reg}/team/app", plain, "plain")
    cfg = api_get_json(http, api_image_path(reg, "team/app", f"/artifacts/{plain.digest}"))["config"]
    assert (cfg["os"], cfg["architecture"], cfg["created"]) == ("linux", "s390x", "2024-01-01T00:00:00Z"), cfg
    assert cfg["labels"] == {}, cfg


def test_get_unknown_artifact(http, new_registry):
    reg = new_registry("au")
    img, elsewhere = small_image(), small_image()
    push_tags(http, f"{reg}/app", img, "v1")
    push_tags(http, f"{reg}/other", elsewhere, "v1")
    missing = sha256_digest(b"no such manifest")
    assert_problem(http.get(api_image_path(reg, "app", f"/artifacts/{missing}")), 404, "NOT_FOUND")
    # An artifact of another image of the same registry is not one of this image.
    assert_problem(http.get(api_image_path(reg, "app", f"/artifacts/{elsewhere.digest}")), 404, "NOT_FOUND")
    assert_problem(http.get(api_image_path(reg, "app", f"/artifacts/{missing}/tags")), 404, "NOT_FOUND")
    assert_problem(http.get(api_image_path(reg, "ghost", f"/artifacts/{img.digest}")), 404, "NOT_FOUND")
    assert_problem(http.get(api_image_path(reg, "ghost", "/artifacts")), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# Artifact delete
# ---------------------------------------------------------------------------


def test_delete_artifact_takes_its_tags(http, new_registry):
    reg = new_registry("ad")
    name = f"{reg}/app"
    a, b = small_image(), small_image()
    push_tags(http, name, a, "v1", "latest")
    push_tags(http, name, b, "v2")

    assert_status(http.delete(api_image_path(reg, "app", f"/artifacts/{a.digest}")), 204)

    for ref in ("v1", "latest", a.digest):
        assert_status(http.get_manifest(name, ref), 404)
    assert http.get_manifest(name, "v2").content == b.manifest
    assert set(artifacts(http, reg, "app")) == {b.digest}
    assert tag_map(http, reg, "app") == {"v2": b.digest}
    assert_problem(http.get(api_image_path(reg, "app", f"/artifacts/{a.digest}")), 404, "NOT_FOUND")
    img = api_get_json(http, api_image_path(reg, "app"))
    assert (img["artifacts"], img["tags"]) == (1, 1), img

    assert_problem(http.delete(api_image_path(reg, "app", f"/artifacts/{a.digest}")), 404, "NOT_FOUND")
    # It can be pushed again, and comes back without its old tags.
    push_tags(http, name, a)
    assert tag_names(artifacts(http, reg, "app")[a.digest]["tags"]) == []


# ---------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------


def test_tags_list_q_and_pagination(http, new_registry):
    reg = new_registry("tl")
    a, b = small_image(), small_image()
    t0 = time.time()
    push_tags(http, f"{reg}/team/app", a, "alpha", "v1.0", "v1.1")
    push_tags(http, f"{reg}/team/app", b, "beta", "v2.0", "latest")
    t1 = time.time()

    full = tags(http, reg, "team/app")
    assert [t["name"] for t in full] == ["alpha", "beta", "latest", "v1.0", "v1.1", "v2.0"]
    for t in full:
        assert TAG_FIELDS <= set(t), t
        assert t["digest"] == (a.digest if t["name"] in ("alpha", "v1.0", "v1.1") else b.digest), t
        in_window(t["updated_at"], t0, t1)

    assert [t["name"] for t in tags(http, reg, "team/app", q="v1")] == ["v1.0", "v1.1"]
    assert [t["name"] for t in tags(http, reg, "team/app", q="a")] == ["alpha", "beta", "latest"]
    assert [t["name"] for t in tags(http, reg, "team/app", q=".0")] == ["v1.0", "v2.0"]
    assert tags(http, reg, "team/app", q="zzz") == []

    for limit in (1, 2, 4):
        items, pages = api_list_all(http, api_image_path(reg, "team/app", "/tags"), limit=limit)
        assert items == full, limit
        assert pages >= -(-len(full) // limit)
    items, _ = api_list_all(http, api_image_path(reg, "team/app", "/tags"), {"q": "v"}, limit=1)
    assert [t["name"] for t in items] == ["v1.0", "v1.1", "v2.0"]


def test_tags_of_one_artifact(http, new_registry):
    reg = new_registry("ta")
    a, b, c = small_image(), small_image(), small_image()
    push_tags(http, f"{reg}/app", a, "v1", "stable", "latest")
    push_tags(http, f"{reg}/app", b, "v2")
    push_tags(http, f"{reg}/app", c)

    items, _ = api_list_all(http, api_image_path(reg, "app", f"/artifacts/{a.digest}/tags"))
    assert [t["name"] for t in items] == ["latest", "stable", "v1"]
    assert all(t["digest"] == a.digest and TAG_FIELDS <= set(t) for t in items), items
    items, _ = api_list_all(http, api_image_path(reg, "app", f"/artifacts/{b.digest}/tags"))
    assert [(t["name"], t["digest"]) for t in items] == [("v2", b.digest)]
    items, _ = api_list_all(http, api_image_path(reg, "app", f"/artifacts/{c.digest}/tags"))
    assert items == []


def test_create_tag(http, new_registry):
    reg = new_registry("tc")
    name = f"{reg}/team/app"
    a, b, elsewhere = small_image(), small_image(), small_image()
    push_tags(http, name, a, "v1")
    push_tags(http, name, b, "v2")
    push_tags(http, f"{reg}/other", elsewhere, "v1")

    t0 = time.time()
    r = post_tag(http, reg, "team/app", "prod", a.digest)
    assert_status(r, 201)
    body = r.json()
    assert (body["name"], body["digest"]) == ("prod", a.digest), body
    in_window(body["updated_at"], t0, time.time())
    assert http.get_manifest(name, "prod").content == a.manifest
    listed = {t["name"]: t for t in tags(http, reg, "team/app")}
    assert listed["prod"]["digest"] == a.digest

    # The same digest again: 201, and nothing changes.
    r = post_tag(http, reg, "team/app", "prod", a.digest)
    assert_status(r, 201)
    assert r.json()["digest"] == a.digest
    again = {t["name"]: t for t in tags(http, reg, "team/app")}
    assert again == listed, "re-pointing a tag at its own digest changes nothing"

    # Mutable image: moving a tag is allowed.
    assert_status(post_tag(http, reg, "team/app", "prod", b.digest), 201)
    assert http.get_manifest(name, "prod").content == b.manifest
    assert tag_map(http, reg, "team/app") == {"v1": a.digest, "v2": b.digest, "prod": b.digest}

    # Longest and underscore-led names are valid.
    for ok in ("t" * 128, "_private", "0.1-rc_2"):
        assert_status(post_tag(http, reg, "team/app", ok, a.digest), 201)
        assert http.get_manifest(name, ok).content == a.manifest


def test_create_tag_failures(http, new_registry):
    reg = new_registry("tf")
    a, elsewhere = small_image(), small_image()
    push_tags(http, f"{reg}/app", a, "v1")
    push_tags(http, f"{reg}/other", elsewhere, "v1")

    for bad in ("Upper", "-lead", ".dot", "t" * 129, "with space", "", "a/b", "ünï"):
        assert_problem(post_tag(http, reg, "app", bad, a.digest), 400, "TAG_INVALID")
    for bad_digest in ("sha256:xyz", "latest", ""):
        assert_problem(post_tag(http, reg, "app", "ok", bad_digest), 400)
    assert_problem(post_tag(http, reg, "app", "ok", sha256_digest(b"nothing")), 404, "NOT_FOUND")
    # A digest of another image of the registry is unknown here.
    assert_problem(post_tag(http, reg, "app", "ok", elsewhere.digest), 404, "NOT_FOUND")
    assert_problem(post_tag(http, reg, "ghost", "ok", a.digest), 404, "NOT_FOUND")
    assert tag_map(http, reg, "app") == {"v1": a.digest}
    assert_status(http.get_manifest(f"{reg}/app", "ok"), 404)


def test_delete_tag_keeps_artifact(http, new_registry):
    reg = new_registry("td")
    name = f"{reg}/team/app"
    a = small_image()
    push_tags(http, name, a, "v1", "keep")

    assert_status(http.delete(api_image_path(reg, "team/app", "/tags/v1")), 204)
    assert_status(http.get_manifest(name, "v1"), 404)
    assert http.get_manifest(name, a.digest).content == a.manifest
    assert http.get_manifest(name, "keep").content == a.manifest
    assert tag_map(http, reg, "team/app") == {"keep": a.digest}
    assert tag_names(artifacts(http, reg, "team/app")[a.digest]["tags"]) == ["keep"]
    assert_problem(http.delete(api_image_path(reg, "team/app", "/tags/v1")), 404, "NOT_FOUND")

    # The last tag goes; the artifact stays, untagged.
    assert_status(http.delete(api_image_path(reg, "team/app", "/tags/keep")), 204)
    assert tag_names(artifacts(http, reg, "team/app")[a.digest]["tags"]) == []
    img = api_get_json(http, api_image_path(reg, "team/app"))
    assert (img["artifacts"], img["tags"]) == (1, 0), img
    assert http.get_manifest(name, a.digest).content == a.manifest
    assert_problem(http.delete(api_image_path(reg, "ghost", "/tags/keep")), 404, "NOT_FOUND")

    # A digest is not a tag: the artifact (and its tags) stay.
    push_tags(http, name, a, "again")
    assert_problem(http.delete(api_image_path(reg, "team/app", f"/tags/{a.digest}")), 400)
    assert http.get_manifest(name, "again").content == a.manifest


# ---------------------------------------------------------------------------
# Tag mutability
# ---------------------------------------------------------------------------


def test_immutable_tags_on_the_data_plane(http, new_registry):
    reg = new_registry("im")
    name = f"{reg}/team/app"
    a, b = small_image(), small_image()
    push_tags(http, name, a, "v1")
    r = http.patch(api_image_path(reg, "team/app"), json={"tag_mutability": "immutable"})
    assert_status(r, 200)

    http.upload_blobs(name, b.blobs)
    r = http.put_manifest(name, "v1", b.manifest)
    err = assert_oci_error(r, 403, "DENIED")
    msg = err.get("message", "")
    assert "v1" in msg and a.digest in msg and "team/app" in msg, f"the message should name the tag: {msg!r}"
    assert http.get_manifest(name, "v1").content == a.manifest
    assert tag_map(http, reg, "team/app") == {"v1": a.digest}

    # The same manifest again under the same tag is fine.
    assert_status(http.put_manifest(name, "v1", a.manifest), 201)
    # New tags, and pushes by digest, are accepted.
    assert_status(http.put_manifest(name, "v2", b.manifest), 201)
    assert_status(http.put_manifest(name, b.digest, b.manifest), 201)
    assert tag_map(http, reg, "team/app") == {"v1": a.digest, "v2": b.digest}
    # Still refused once b is known.
    assert_oci_error(http.put_manifest(name, "v1", b.manifest), 403, "DENIED")
    assert http.get_manifest(name, "v1").content == a.manifest

    # Back to mutable: the tag moves.
    assert_status(http.patch(api_image_path(reg, "team/app"), json={"tag_mutability": "mutable"}), 200)
    assert_status(http.put_manifest(name, "v1", b.manifest), 201)
    assert http.get_manifest(name, "v1").content == b.manifest


def test_immutable_tags_on_the_admin_api(http, new_registry):
    reg = new_registry("ia")
    name = f"{reg}/app"
    a, b = small_image(), small_image()
    push_tags(http, name, a, "v1")
    push_tags(http, name, b, "v2")
    assert_status(http.patch(api_image_path(reg, "app"), json={"tag_mutability": "immutable"}), 200)

    assert_problem(post_tag(http, reg, "app", "v1", b.digest), 409, "TAG_IMMUTABLE")
    assert http.get_manifest(name, "v1").content == a.manifest
    assert_status(post_tag(http, reg, "app", "v1", a.digest), 201)  # same digest: fine
    assert_status(post_tag(http, reg, "app", "v3", b.digest), 201)  # new tag: fine
    assert tag_map(http, reg, "app") == {"v1": a.digest, "v2": b.digest, "v3": b.digest}
    # Immutability does not weaken the other checks.
    assert_problem(post_tag(http, reg, "app", "Bad", a.digest), 400, "TAG_INVALID")
    assert_problem(post_tag(http, reg, "app", "v4", sha256_digest(b"none")), 404, "NOT_FOUND")

    assert_status(http.patch(api_image_path(reg, "app"), json={"tag_mutability": "mutable"}), 200)
    assert_status(post_tag(http, reg, "app", "v1", b.digest), 201)
    assert http.get_manifest(name, "v1").content == b.manifest


def test_mutability_is_per_image(http, new_registry):
    reg = new_registry("ip")
    a, b = small_image(), small_image()
    for image in ("locked", "free"):
        push_tags(http, f"{reg}/{image}", a, "v1")
        http.upload_blobs(f"{reg}/{image}", b.blobs)
    assert_status(http.patch(api_image_path(reg, "locked"), json={"tag_mutability": "immutable"}), 200)
    assert_oci_error(http.put_manifest(f"{reg}/locked", "v1", b.manifest), 403, "DENIED")
    assert_status(http.put_manifest(f"{reg}/free", "v1", b.manifest), 201)
    assert http.get_manifest(f"{reg}/free", "v1").content == b.manifest
