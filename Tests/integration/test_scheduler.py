"""Schedules (docs/lifecycle.md, "Cron expressions" and the GC and cleanup
schedule endpoints): the default GC schedule, `--gc-schedule`, PUT/GET,
persistence across a restart, `{"cron": null}`, validation (400
`INVALID_CRON` naming the field), `next_run_at` checked against a small cron
evaluator written here, and one real scheduled GC run and cleanup run.

Readings of the contract these tests rely on:
- A schedule set by PUT is stored: it outlives a restart (also `null`), and
  wins over the `--gc-schedule` default the server was started with.
- `next_run_at` is the first minute strictly after "now" that matches, in UTC;
  null for a valid expression that never fires (api-spec/openapi.yaml).
- A valid expression is echoed back exactly as it was sent.
- `detail` of an `INVALID_CRON` names the field as in the contract's example
  (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`).
- The cleanup schedule takes the same expressions as the GC schedule.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (
    GC_RUNS,
    GC_SCHEDULE,
    KiB,
    api_get_json,
    api_list_all,
    api_registry_path,
    assert_oci_error,
    assert_problem,
    assert_status,
    create_cleanup_policy,
    gc_run_details,
    make_image,
    parse_rfc3339,
    push_tags,
    random_bytes,
    wait_until,
)

REG = "sch"
DEFAULT_CRON = "15 3 * * *"
CLOCK_SLACK = 2

# ---------------------------------------------------------------------------
# A reference cron evaluator (five fields, UTC, as in docs/lifecycle.md)
# ---------------------------------------------------------------------------

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
FIELDS = [  # name, lowest, highest, names (index 0 = lowest)
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 6, DAYS),
]


def _number(tok: str, lo: int, names) -> int:
    if names and tok.upper() in names:
        return lo + names.index(tok.upper())
    return int(tok)


def _field(text: str, lo: int, hi: int, names, day_field: bool) -> tuple[set[int], bool]:
    """(allowed values, restricted?) of one field."""
    if text == "*" or (day_field and text == "?"):
        return set(range(lo, hi + 1)), False
    values: set[int] = set()
    for item in text.split(","):
        rng, _, step = item.partition("/")
        step_n = int(step) if step else 1
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a, b = (_number(x, lo, names) for x in rng.split("-"))
        else:
            a = _number(rng, lo, names)
            b = hi if step else a
        assert lo <= a <= b <= hi and step_n > 0, f"reference evaluator: bad field {text!r}"
        values |= set(range(a, b + 1, step_n))
    return values, not text.startswith("*")  # Vixie cron: `*/n` leaves the day rule at "and"


def next_fire(expr: str, after: float) -> float:
    """The first whole minute strictly after `after` (epoch seconds) that
    `expr` matches, as epoch seconds."""
    parts = expr.split()
    assert len(parts) == 5
    (mins, _), (hours, _), (doms, dom_r), (months, _), (dows, dow_r) = (
        _field(p, lo, hi, names, i >= 2 and i != 3) for i, (p, (_, lo, hi, names)) in enumerate(zip(parts, FIELDS))
    )
    t = datetime.fromtimestamp(after, timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = t + timedelta(days=5 * 366)
    while t < limit:
        dow = (t.weekday() + 1) % 7  # cron: 0 = Sunday
        if dom_r and dow_r:
            day_ok = t.day in doms or dow in dows
        else:
            day_ok = t.day in doms and dow in dows
        if t.month not in months or not day_ok:
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)
        elif t.hour not in hours:
            t = (t + timedelta(hours=1)).replace(minute=0)
        elif t.minute not in mins:
            t += timedelta(minutes=1)
        else:
            return t.timestamp()
    raise AssertionError(f"{expr!r} never fires")


def test_reference_evaluator():
    """The evaluator itself, on fixed instants (2026-01-01 is a Thursday)."""
    base = datetime(2026, 1, 1, 10, 7, 30, tzinfo=timezone.utc).timestamp()

    def at(*a):
        return datetime(*a, tzinfo=timezone.utc).timestamp()

    assert next_fire("*/15 * * * *", base) == at(2026, 1, 1, 10, 15)
    assert next_fire("0 12 * * *", base) == at(2026, 1, 1, 12, 0)
    assert next_fire("0 9 * * *", base) == at(2026, 1, 2, 9, 0)
    assert next_fire("30 6 1 * *", base) == at(2026, 2, 1, 6, 30)
    assert next_fire("0 0 1 * mon", base) == at(2026, 1, 5, 0, 0)  # either day field
    assert next_fire("0 0 13 * fri", base) == at(2026, 1, 2, 0, 0)
    assert next_fire("5 4 * * sun", base) == at(2026, 1, 4, 4, 5)
    assert next_fire("0 12 ? JAN-MAR MON-FRI", base) == at(2026, 1, 1, 12, 0)
    assert next_fire("0 0 1 APR ?", base) == at(2026, 4, 1, 0, 0)
    assert next_fire("10/20 * * * *", base) == at(2026, 1, 1, 10, 10)
    assert next_fire("* * * * *", at(2026, 12, 31, 23, 59)) == at(2027, 1, 1, 0, 0)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def cleanup_schedule(registry: str) -> str:
    return api_registry_path(registry, "/cleanup/schedule")


def schedule_path(target: str) -> str:
    return GC_SCHEDULE if target == "gc" else cleanup_schedule(REG)


def assert_next_run(schedule: dict, expr: str, t0: float, t1: float) -> float:
    """`next_run_at` is the next minute matching `expr` after some instant
    between t0 (before the request) and t1 (after the answer)."""
    assert schedule["cron"] == expr, schedule
    assert schedule["next_run_at"] is not None, schedule
    got = parse_rfc3339(schedule["next_run_at"])
    expected = {next_fire(expr, t0), next_fire(expr, t1)}
    assert got in expected, (
        f"{expr!r}: next_run_at {schedule['next_run_at']}, expected one of "
        f"{sorted(datetime.fromtimestamp(e, timezone.utc).isoformat() for e in expected)}"
    )
    return got


def put_schedule(client, path: str, cron) -> tuple[dict, float, float]:
    t0 = time.time()
    r = client.put(path, json={"cron": cron})
    t1 = time.time()
    assert_status(r, 200)
    return r.json(), t0, t1


def get_schedule(client, path: str) -> tuple[dict, float, float]:
    t0 = time.time()
    body = api_get_json(client, path)
    return body, t0, time.time()


@pytest.fixture(scope="module")
def sched(spawn_server):
    """A server with the default GC schedule and grace (so scheduled runs
    delete nothing) and registry `sch`."""
    srv = spawn_server("sched", registries=[REG], extra_args=["--gc-after-delete", "0"])
    yield srv
    srv.stop_quietly()


# ---------------------------------------------------------------------------
# GC schedule: default, flag, PUT, restart, null
# ---------------------------------------------------------------------------


def test_gc_schedule_default_put_restart_and_null(make_server):
    srv = make_server(extra_args=["--gc-after-delete", "0"], label="sched-default")
    c = srv.client()

    body, t0, t1 = get_schedule(c, GC_SCHEDULE)
    assert set(body) == {"cron", "next_run_at"}, body
    nxt = assert_next_run(body, DEFAULT_CRON, t0, t1)
    when = datetime.fromtimestamp(nxt, timezone.utc)
    assert (when.hour, when.minute, when.second) == (3, 15, 0), body
    assert t0 < nxt <= t1 + 24 * 3600, body

    body, t0, t1 = put_schedule(c, GC_SCHEDULE, "*/15 * * * *")
    assert set(body) == {"cron", "next_run_at"}, body
    assert_next_run(body, "*/15 * * * *", t0, t1)
    body, t0, t1 = get_schedule(c, GC_SCHEDULE)
    assert_next_run(body, "*/15 * * * *", t0, t1)

    srv.restart()
    c = srv.client()
    body, t0, t1 = get_schedule(c, GC_SCHEDULE)
    assert_next_run(body, "*/15 * * * *", t0, t1)

    body, _, _ = put_schedule(c, GC_SCHEDULE, None)
    assert body == {"cron": None, "next_run_at": None}
    assert api_get_json(c, GC_SCHEDULE) == {"cron": None, "next_run_at": None}
    srv.restart()
    assert api_get_json(srv.client(), GC_SCHEDULE) == {"cron": None, "next_run_at": None}


def test_gc_schedule_flag(make_server):
    noon = make_server(extra_args=["--gc-after-delete", "0", "--gc-schedule", "0 12 * * *"], label="sched-flag")
    body, t0, t1 = get_schedule(noon.client(), GC_SCHEDULE)
    assert_next_run(body, "0 12 * * *", t0, t1)

    off = make_server(extra_args=["--gc-after-delete", "0", "--gc-schedule", "off"], label="sched-off")
    assert api_get_json(off.client(), GC_SCHEDULE) == {"cron": None, "next_run_at": None}


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

# expression -> the field the detail must name (None: not specified)
INVALID = {
    "60 * * * *": "minute",
    "* 24 * * *": "hour",
    "* * 0 * *": "day-of-month",
    "* * 32 * *": "day-of-month",
    "* * * 13 *": "month",
    "* * * 0 *": "month",
    "* * * * 7": "day-of-week",
    "* * * FOO *": "month",
    "* * * * FUNDAY": "day-of-week",
    "*/0 * * * *": "minute",
    "1-70 * * * *": "minute",
    "5-3 * * * *": "minute",  # a range running backwards
    "* * * * FRI-MON": "day-of-week",
    "? * * * *": "minute",
    "* ? * * *": "hour",
    "* * * * *,": "day-of-week",
    "* * * *": None,
    "* * * * * *": None,
    "": None,
    "   ": None,
    "@daily": None,
}

_FIELD_RE = {
    "minute": r"\bminute\b",
    "hour": r"\bhour\b",
    "day-of-month": r"\bday-of-month\b",
    "month": r"(?<!day-of-)\bmonth\b",
    "day-of-week": r"\bday-of-week\b",
}


@pytest.mark.parametrize("target", ["gc", "cleanup"])
@pytest.mark.parametrize("expr", list(INVALID))
def test_invalid_cron(sched, target, expr):
    c = sched.client()
    path = schedule_path(target)
    before = api_get_json(c, path)["cron"]
    body = assert_problem(c.put(path, json={"cron": expr}), 400, "INVALID_CRON")
    field = INVALID[expr]
    detail = body.get("detail")
    assert isinstance(detail, str) and detail, body
    if field is not None:
        assert re.search(_FIELD_RE[field], detail, re.IGNORECASE), f"{expr!r}: detail should name {field}: {detail!r}"
    assert api_get_json(c, path)["cron"] == before, "a refused schedule changes nothing"


@pytest.mark.parametrize("target", ["gc", "cleanup"])
@pytest.mark.parametrize("cron", [5, ["* * * * *"], {"cron": "* * * * *"}, True])
def test_cron_must_be_a_string_or_null(sched, target, cron):
    c = sched.client()
    path = schedule_path(target)
    before = api_get_json(c, path)["cron"]
    assert_problem(c.put(path, json={"cron": cron}), 400)
    assert api_get_json(c, path)["cron"] == before


VALID = [
    "*/15 * * * *",
    "0 0 1,15 * *",
    "0 12 ? JAN-MAR MON-FRI",
    "5 4 * * sun",
    "0 0-23/2 * * *",
    "0 12 * * *",
    "30 6 1 * *",
    "0 0 1 * mon",  # both day fields restricted: either matches
    "0 4 */2 * mon",  # a day field starting with '*' restricts nothing: odd days that are Mondays
    "10/20 * * * *",
    "0 9-17/4 * * 1-5",
    "59 23 31 dec *",
    "0 0 * * Sat,SUN",
    "0,30 1-3,22 * * *",
]


@pytest.mark.parametrize("target", ["gc", "cleanup"])
@pytest.mark.parametrize("expr", VALID)
def test_valid_cron_and_next_run_at(sched, target, expr):
    c = sched.client()
    path = schedule_path(target)
    body, t0, t1 = put_schedule(c, path, expr)
    assert set(body) == {"cron", "next_run_at"}, body
    assert_next_run(body, expr, t0, t1)
    body, t0, t1 = get_schedule(c, path)
    assert_next_run(body, expr, t0, t1)


@pytest.mark.parametrize("target", ["gc", "cleanup"])
def test_valid_cron_that_never_fires(sched, target):
    """February 30th is a valid expression that never comes: no next run."""
    c = sched.client()
    path = schedule_path(target)
    body, _, _ = put_schedule(c, path, "0 0 30 2 *")
    assert body == {"cron": "0 0 30 2 *", "next_run_at": None}, body
    assert api_get_json(c, path) == body


def test_cleanup_schedule_null_and_unknown_registry(sched):
    c = sched.client()
    put_schedule(c, cleanup_schedule(REG), "0 4 * * *")
    body, _, _ = put_schedule(c, cleanup_schedule(REG), None)
    assert body == {"cron": None, "next_run_at": None}
    assert api_get_json(c, cleanup_schedule(REG)) == {"cron": None, "next_run_at": None}
    assert_problem(c.get(cleanup_schedule("nosuchreg")), 404, "NOT_FOUND")
    assert_problem(c.put(cleanup_schedule("nosuchreg"), json={"cron": "0 4 * * *"}), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# Real scheduled runs
# ---------------------------------------------------------------------------


def test_scheduled_gc_and_cleanup_runs(make_server):
    """WAITS FOR A MINUTE BOUNDARY (up to ~70 s): both schedules are set to
    `* * * * *` at once so the wait is paid once for the GC run and the
    cleanup run."""
    srv = make_server(registries=[REG], extra_args=["--gc-grace", "0", "--gc-after-delete", "0", "--untagged-grace", "0"], label="sched-run")
    c = srv.client()
    name = f"{REG}/app"
    kept = make_image(n_layers=1, layer_size=KiB)
    untagged = make_image(n_layers=1, layer_size=KiB)
    push_tags(c, name, kept, "v1")
    push_tags(c, name, untagged)  # by digest only: an untagged artifact
    orphan = c.upload_blob(f"{REG}/up", random_bytes(3 * KiB))
    policy = create_cleanup_policy(c, REG, "**", "delete_untagged")
    assert policy["value"] is None and policy["enabled"] is True, policy

    cleanup_sched, t0, t1 = put_schedule(c, cleanup_schedule(REG), "* * * * *")
    cleanup_due = assert_next_run(cleanup_sched, "* * * * *", t0, t1)
    gc_sched, t0, t1 = put_schedule(c, GC_SCHEDULE, "* * * * *")
    gc_due = assert_next_run(gc_sched, "* * * * *", t0, t1)
    assert gc_due - time.time() <= 61

    def finished_scheduled_runs():
        gc = [r for r in api_list_all(c, GC_RUNS)[0] if r["trigger"] == "schedule" and r["status"] != "running"]
        cl = [
            r for r in api_list_all(c, api_registry_path(REG, "/cleanup/runs"))[0]
            if r["trigger"] == "schedule" and r["status"] != "running"
        ]
        return (gc[-1], cl[-1]) if gc and cl else None  # the oldest of each: the first scheduled one

    gc_run, cleanup_run = wait_until(
        finished_scheduled_runs, timeout=80, interval=1, message="a scheduled GC run and a scheduled cleanup run"
    )
    # Stop the schedules so no more runs start while this test checks.
    put_schedule(c, GC_SCHEDULE, None)
    put_schedule(c, cleanup_schedule(REG), None)

    assert gc_run["kind"] == "gc" and gc_run["registry"] is None and gc_run["dry_run"] is False, gc_run
    assert gc_run["status"] == "succeeded" and gc_run["error"] is None, gc_run
    assert parse_rfc3339(gc_run["started_at"]) >= gc_due - CLOCK_SLACK, (gc_run, gc_sched)
    assert gc_run["summary"]["errors"] == 0, gc_run
    assert orphan in {d["digest"] for d in gc_run_details(c, gc_run["id"])}, "grace 0: the orphan blob goes"
    assert_status(c.head_blob(f"{REG}/up", orphan), 404)

    assert cleanup_run["kind"] == "cleanup" and cleanup_run["registry"] == REG, cleanup_run
    assert cleanup_run["dry_run"] is False, cleanup_run
    assert cleanup_run["status"] == "succeeded" and cleanup_run["error"] is None, cleanup_run
    assert parse_rfc3339(cleanup_run["started_at"]) >= cleanup_due - CLOCK_SLACK, (cleanup_run, cleanup_sched)
    summary = cleanup_run["summary"]
    assert (summary["artifacts_deleted"], summary["tags_deleted"], summary["artifacts_protected"], summary["errors"]) == (
        1, 0, 0, 0,
    ), cleanup_run
    assert_oci_error(c.get_manifest(name, untagged.digest), 404, "MANIFEST_UNKNOWN")
    g = c.get_manifest(name, "v1")
    assert_status(g, 200)
    assert g.content == kept.manifest
