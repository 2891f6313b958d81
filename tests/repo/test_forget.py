"""Retention policies on synthetic snapshot times (restic's semantics), and the forget command."""

from __future__ import annotations

import calendar
import json
import time

import pytest

from shadowvault.repo.forget import KeepPolicy, apply_policy
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.repo.helpers import PASSWORD, env_for, make_snapshot


def _at(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def _snaps(times: list[str], host: str = "h", paths: list[str] | None = None) -> list[tuple[str, Snapshot]]:
    return [
        (f"{host}{i:03d}", Snapshot(time=_at(t), host=host, paths=paths or ["/data"]))
        for i, t in enumerate(times)
    ]


def _kept(snaps, policy) -> list[str]:
    return sorted(d.snapshot_id for g in apply_policy(snaps, policy, utc=True) for d in g.decisions if d.keep)


HOURLY_FOR_3_DAYS = [
    f"2024-03-{d:02d} {h:02d}:{m:02d}:00" for d in (1, 2, 3) for h in range(0, 24, 6) for m in (10, 40)
]


def test_keep_last():
    snaps = _snaps(HOURLY_FOR_3_DAYS)
    assert _kept(snaps, KeepPolicy(last=3)) == [s[0] for s in snaps[-3:]]
    assert len(_kept(snaps, KeepPolicy(last=-1))) == len(snaps)


def test_keep_daily_keeps_the_newest_of_each_day():
    snaps = _snaps(HOURLY_FOR_3_DAYS)
    kept = _kept(snaps, KeepPolicy(daily=2))
    assert [next(s for i, s in snaps if i == k).time for k in kept] == [
        _at("2024-03-02 18:40:00"),
        _at("2024-03-03 18:40:00"),
    ]


def test_keep_hourly_and_last_combine():
    snaps = _snaps(HOURLY_FOR_3_DAYS)
    kept = _kept(snaps, KeepPolicy(last=1, hourly=3))
    # newest hour buckets: 03-03 18h, 12h, 06h -> the :40 snapshot of each
    assert [next(s for i, s in snaps if i == k).time for k in kept] == [
        _at("2024-03-03 06:40:00"),
        _at("2024-03-03 12:40:00"),
        _at("2024-03-03 18:40:00"),
    ]


def test_weekly_monthly_yearly():
    times = [
        "2022-06-01 00:00:00",
        "2023-01-02 00:00:00",
        "2023-01-03 00:00:00",
        "2023-01-09 00:00:00",
        "2023-02-01 00:00:00",
        "2023-02-20 00:00:00",
        "2024-01-01 00:00:00",
    ]
    snaps = _snaps(times)
    at = {sid: s.time for sid, s in snaps}
    weekly = _kept(snaps, KeepPolicy(weekly=3))
    assert sorted(at[k] for k in weekly) == [
        _at("2023-02-01 00:00:00"),
        _at("2023-02-20 00:00:00"),
        _at("2024-01-01 00:00:00"),
    ]
    monthly = _kept(snaps, KeepPolicy(monthly=3))
    assert sorted(at[k] for k in monthly) == [
        _at("2023-01-09 00:00:00"),
        _at("2023-02-20 00:00:00"),
        _at("2024-01-01 00:00:00"),
    ]
    yearly = _kept(snaps, KeepPolicy(yearly=10))
    assert sorted(at[k] for k in yearly) == [
        _at("2022-06-01 00:00:00"),
        _at("2023-02-20 00:00:00"),
        _at("2024-01-01 00:00:00"),
    ]


def test_groups_by_host_and_paths_and_keep_tag():
    snaps = (
        _snaps(["2024-01-01 00:00:00", "2024-01-02 00:00:00"], host="a")
        + _snaps(["2024-01-01 00:00:00", "2024-01-02 00:00:00"], host="b")
        + [("tagged", Snapshot(time=_at("2020-01-01 00:00:00"), host="a", paths=["/data"], tags=["keep"]))]
    )
    kept = _kept(snaps, KeepPolicy(last=1, tags=("keep",)))
    assert kept == ["a001", "b001", "tagged"]
    groups = apply_policy(snaps, KeepPolicy(last=1), utc=True)
    assert [(g.host, g.paths) for g in groups] == [("a", ["/data"]), ("b", ["/data"])]
    reasons = {
        d.snapshot_id: d.reasons
        for g in apply_policy(snaps, KeepPolicy(last=1, tags=("keep",)), utc=True)
        for d in g.decisions
    }
    assert reasons["tagged"] == ["tag keep"] and reasons["a001"] == ["last"]


def test_cli_forget(tmp_path, cli):
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        ids = [
            make_snapshot(repo, {"f": str(i).encode()}, when=1_700_000_000.0 + i * 3600)[0] for i in range(4)
        ]
    env = env_for(tmp_path / "repo")
    none = cli("forget", env=env)
    assert none.returncode == 2 and "no policy" in none.stderr
    dry = cli("forget", "--keep-last", "2", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    [group] = json.loads(dry.stdout)["groups"]
    assert sorted(e["id"] for e in group["remove"]) == sorted(ids[:2])
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert len(repo.list_snapshots()) == 4
    done = cli("forget", "--keep-last", "2", "--prune", "--json", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert sorted(out["removed"]) == sorted(ids[:2]) and out["prune"]["packs_deleted"] >= 0
    by_id = cli("forget", ids[2][:10], env=env)
    assert by_id.returncode == 0, by_id.stderr
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert [sid for sid, _ in repo.list_snapshots()] == [ids[3]]


@pytest.mark.parametrize("bad", [["--keep-last", "-2"], ["--keep-daily", "x"]])
def test_cli_forget_rejects_bad_counts(tmp_path, cli, bad):
    Repository.init(tmp_path / "repo", PASSWORD).close()
    result = cli("forget", *bad, env=env_for(tmp_path / "repo"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
