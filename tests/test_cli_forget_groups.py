"""forget --keep-within (restic's durations, relative to the newest snapshot of each group),
--keep-within-daily and friends, and --group-by (issue 16), through the CLI as a user runs them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import msgspec
import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD
from tests.inprocess_cli import Shadowvault

DAY = 86_400.0
NEWEST = 1_781_524_800.0  # 2026-06-15 12:00 UTC

# name -> (days before NEWEST, host, path, tags)
PLAN = {
    "a0": (0, "web", "/srv/a", ["daily"]),
    "a1": (1, "web", "/srv/a", ["daily"]),
    "a1b": (1.1, "web", "/srv/a", ["daily"]),  # the same day as a1, a little earlier
    "a3": (3, "web", "/srv/a", ["daily"]),
    "a10": (10, "web", "/srv/a", ["weekly"]),
    "a40": (40, "web", "/srv/a", ["weekly"]),
    "b100": (100, "web", "/srv/b", ["daily"]),
    "b101": (101, "web", "/srv/b", ["daily"]),
    "b130": (130, "web", "/srv/b", ["daily"]),
    "db2": (2, "db", "/srv/a", ["daily"]),
}


@pytest.fixture
def utc() -> Iterator[None]:
    """Days as the test counts them: forget buckets snapshots by local days, here UTC ones."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def made(sv: Shadowvault, utc: None, tmp_path) -> dict[str, str]:
    """The snapshots of PLAN (copies of one real backup with other times, hosts, paths and tags):
    name -> snapshot id."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("data\n")
    assert sv("backup", "--provider", "none", str(src)).exit_code == 0
    ids = {}
    with Repository.open(sv.env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        [(first, snap)] = repo.list_snapshots()
        for name, (days, host, path, tags) in PLAN.items():
            copy = msgspec.structs.replace(snap, time=NEWEST - days * DAY, host=host, paths=[path], tags=tags)
            ids[name] = repo.save_snapshot(copy)
        repo.remove_snapshot(first)
    return ids


def forget(sv: Shadowvault, *args: str) -> dict:
    done = sv("forget", "--json", *args)
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


def kept(result: dict, made: dict[str, str]) -> set[str]:
    names = {sid: name for name, sid in made.items()}
    return {names[k["id"]] for g in result["groups"] for k in g["keep"]}


def test_keep_within_counts_back_from_the_newest_snapshot_of_each_group(sv, made):
    result = forget(sv, "--keep-within", "5d", "--dry-run")
    # /srv/a on web: within 5 days of a0; /srv/b: within 5 days of b100 (its own newest), not of today
    assert kept(result, made) == {"a0", "a1", "a1b", "a3", "b100", "b101", "db2"}
    groups = {(g["host"], tuple(g["paths"])): g for g in result["groups"]}
    assert set(groups) == {("web", ("/srv/a",)), ("web", ("/srv/b",)), ("db", ("/srv/a",))}
    assert groups["web", ("/srv/a",)]["keep"][0]["reasons"] == ["within 5d"]
    assert {r["id"] for r in groups["web", ("/srv/a",)]["remove"]} == {made["a10"], made["a40"]}

    result = forget(sv, "--keep-within", "1m5d", "--dry-run")  # a calendar month and 5 days
    assert "a40" not in kept(result, made) and "a10" in kept(result, made)

    result = forget(sv, "--keep-within-daily", "7d", "--dry-run")  # one per day, within 7 days
    assert kept(result, made) == {"a0", "a1", "a3", "b100", "b101", "db2"}
    reasons = {r for g in result["groups"] for k in g["keep"] for r in k["reasons"]}
    assert reasons == {"daily within 7d"}
    assert len(json.loads(sv("snapshots", "--json").stdout)) == len(PLAN)  # dry runs


def test_group_by_decides_what_keep_last_counts(sv, made):
    by_path = forget(sv, "--keep-last", "1", "--dry-run")  # default host,paths
    assert kept(by_path, made) == {"a0", "b100", "db2"}

    by_path_only = forget(sv, "--keep-last", "1", "--group-by", "paths", "--dry-run")
    assert kept(by_path_only, made) == {"a0", "b100"}
    assert {g["group_key"]["host"] for g in by_path_only["groups"]} == {None}

    by_tags = forget(sv, "--keep-last", "1", "--group-by", "host,tags", "--dry-run")
    assert kept(by_tags, made) == {"a0", "a10", "db2"}
    assert {tuple(g["group_key"]["tags"]) for g in by_tags["groups"]} == {("daily",), ("weekly",)}

    everything = forget(sv, "--keep-last", "2", "--group-by", "", "--dry-run")
    assert kept(everything, made) == {"a0", "a1"} and len(everything["groups"]) == 1

    done = sv("forget", "--keep-last", "1", "--keep-within", "2d", "--group-by", "host,paths")
    assert done.exit_code == 0, done.stderr
    assert "removed 4 snapshots" in done.stdout
    left = {s["id"] for s in json.loads(sv("snapshots", "--json").stdout)}
    assert left == {made[n] for n in ("a0", "a1", "a1b", "b100", "b101", "db2")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-within", "5x"], "--keep-within"),
        (["--keep-within", "d"], "--keep-within"),
        (["--keep-within-weekly", "2w"], "--keep-within-weekly"),
        (["--keep-last", "1", "--group-by", "color"], "--group-by"),
    ],
)
def test_bad_durations_and_groupings_are_one_clear_line(sv, args, message):
    done = sv("forget", *args)
    assert done.exit_code == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def _blocks(text: str) -> list[list[str]]:
    """forget's text output split at its blank lines: the policy, then per group a block of what it
    keeps (named first) and one of what it removes (the count line last)."""
    return [block.splitlines() for block in text.strip("\n").split("\n\n")]


def test_the_text_output_names_each_group_with_its_kept_and_removed_snapshots(sv, made):
    """As restic's: the policy, then per group a line naming it, the kept snapshots with their
    reasons, the removed."""
    done = sv("forget", "--keep-last", "1", "--dry-run")
    assert done.exit_code == 0, done.stderr
    policy, *blocks = _blocks(done.stdout)
    assert policy == ["applying policy: keep 1 latest"]
    titles = [block[0] for block in blocks if block[0].startswith("snapshots of ")]
    assert titles == [
        "snapshots of host db, paths /srv/a:",
        "snapshots of host web, paths /srv/a:",
        "snapshots of host web, paths /srv/b:",
    ]
    assert [block[0] for block in blocks[:2]] == [titles[0], titles[1]]  # db's group removes nothing
    web_a_keep, web_a_remove = blocks[1:3]
    assert web_a_keep[1] == "keep 1 snapshot:"
    assert web_a_keep[2].split() == ["ID", "Time", "Host", "Tags", "Paths", "Reasons"]
    assert web_a_keep[3].startswith(made["a0"][:8]) and web_a_keep[3].endswith("/srv/a  last")
    assert web_a_remove[0] == "remove 5 snapshots:"
    assert web_a_remove[1].split() == ["ID", "Time", "Host", "Tags", "Paths"]
    removed = [line[:8] for line in web_a_remove[2:7]]
    assert removed == [made[n][:8] for n in ("a40", "a10", "a3", "a1b", "a1")]  # oldest first
    assert blocks[-1][-1] == "would remove 7 snapshots"

    by_tags = _blocks(sv("forget", "--keep-last", "1", "--group-by", "tags", "--dry-run").stdout)
    by_tags_titles = [block[0] for block in by_tags if block[0].startswith("snapshots of ")]
    assert by_tags_titles == ["snapshots of tags daily:", "snapshots of tags weekly:"]

    everything = sv("forget", "--keep-last", "1", "--group-by", "", "--dry-run").stdout
    assert everything.splitlines()[2] == "keep 1 snapshot:"  # one group: nothing to name

    named = sv("forget", made["b130"][:8], made["db2"][:8], "--dry-run").stdout.splitlines()
    assert named[0] == "remove 2 snapshots:" and named[-1] == "would remove 2 snapshots"  # no policy


def test_the_policy_is_said_in_words_before_what_it_decided(sv, made):
    args = ["--keep-last", "2", "--keep-daily", "-1", "--keep-within-weekly", "1y", "--keep-tag", "weekly"]
    done = sv("forget", *args, "--keep-within", "5d", "--dry-run")
    assert done.exit_code == 0, done.stderr
    words = "keep 2 latest, all daily, all within 5d of the newest, weekly within 1y, all tagged weekly"
    assert done.stdout.splitlines()[0] == f"applying policy: {words}"
    assert forget(sv, *args, "--keep-within", "5d", "--dry-run")["policy"] == words


def test_snapshots_group_by_lists_a_table_per_group(sv, made):
    done = sv("snapshots", "--group-by", "host,tags")
    assert done.exit_code == 0, done.stderr
    blocks = _blocks(done.stdout)
    assert [block[0] for block in blocks] == [
        "snapshots of host db, tags daily:",
        "snapshots of host web, tags daily:",
        "snapshots of host web, tags weekly:",
    ]
    assert [block[-1] for block in blocks] == ["1 snapshot", "7 snapshots", "2 snapshots"]
    weekly = [line[:8] for line in blocks[2][2:-1]]
    assert weekly == [made["a40"][:8], made["a10"][:8]]  # oldest first, as without groups

    latest = json.loads(sv("snapshots", "--group-by", "paths", "--latest", "1", "--json").stdout)
    assert [(g["group_key"], [s["id"] for s in g["snapshots"]]) for g in latest] == [
        ({"host": None, "paths": ["/srv/a"], "tags": None}, [made["a0"]]),
        ({"host": None, "paths": ["/srv/b"], "tags": None}, [made["b100"]]),
    ]
    bad = sv("snapshots", "--group-by", "hots")
    assert bad.exit_code == 2 and "--group-by" in bad.stderr and bad.stderr.count("\n") == 1


def test_json_groups_name_what_they_share_as_the_text_does(sv, made):
    result = forget(sv, "--keep-last", "1", "--group-by", "host,tags", "--dry-run")
    assert [(g["host"], g["paths"], g["tags"]) for g in result["groups"]] == [
        ("db", None, ["daily"]),
        ("web", None, ["daily"]),
        ("web", None, ["weekly"]),
    ]
    web_weekly = result["groups"][2]
    assert [k["id"] for k in web_weekly["keep"]] == [made["a10"]]
    assert web_weekly["keep"][0]["reasons"] == ["last"] and web_weekly["keep"][0]["tags"] == ["weekly"]
    assert [(r["id"], r["paths"]) for r in web_weekly["remove"]] == [(made["a40"], ["/srv/a"])]

    named = forget(sv, made["b130"], "--dry-run")
    assert named["groups"] == [
        {
            "host": None,
            "paths": None,
            "tags": None,
            "group_key": None,
            "keep": [],
            "remove": [
                {
                    "id": made["b130"],
                    "time": NEWEST - 130 * DAY,
                    "host": "web",
                    "paths": ["/srv/b"],
                    "tags": ["daily"],
                }
            ],
        }
    ]
