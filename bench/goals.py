"""Issue 15's goals for Shadowvault, checked against one run's results (met / not met, with the ratio).

Kept apart from the timed tests on purpose: speed targets live in bench/, never in a test that fails.
The 2 GiB set (compare.py) and the million-file set (compare.py --scale) each have their list.
"""

from __future__ import annotations

import functools

SV = "shadowvault"


def _rows(results: dict, phase: str) -> dict:
    return results["phases"].get(phase, {})


def ratio(results: dict, phase: str, field: str, other: str = "restic") -> float | None:
    """Shadowvault's `field` in `phase` divided by `other`'s (None when either is missing)."""
    rows = _rows(results, phase)
    ours, theirs = rows.get(SV), rows.get(other)
    if not ours or not theirs or ours.get(field) is None or not theirs.get(field):
        return None
    return float(ours[field]) / float(theirs[field])


def worst_rss(results: dict, phases: list[str]) -> tuple[float | None, str]:
    """The largest per-phase ratio of Shadowvault's peak RSS to restic's, and that phase."""
    worst: tuple[float | None, str] = (None, "")
    for phase in phases:
        value = ratio(results, phase, "peak_rss_mib")
        if value is not None and (worst[0] is None or value > worst[0]):
            worst = (value, phase)
    return worst


def _floor(results: dict, phase: str, floor: str) -> float | None:
    ours = _rows(results, phase).get(SV)
    base = results.get("floors", {}).get(floor)
    if not ours or not base or not base.get("wall_s"):
        return None
    return float(ours["wall_s"]) / float(base["wall_s"])


def _check(name: str, value: float | None, op: str, limit: float, also: bool = True) -> dict:
    met = None if value is None else (value >= limit if op == ">=" else value <= limit) and also
    return {"goal": name, "ratio": None if value is None else round(value, 2), "met": met}


def default_goals(results: dict) -> list[dict]:
    """The 2 GiB set: throughput and time against restic, memory, repository size, the floors."""
    r, fl = functools.partial(ratio, results), functools.partial(_floor, results)
    verified = _rows(results, "restore").get(SV, {}).get("verified", False)
    rss, phase = worst_rss(results, ["first", "unchanged", "changed", "restore"])
    return [
        _check("first backup throughput >= 1.5x restic's", r("first", "mib_per_s"), ">=", 1.5),
        _check(
            "full restore throughput >= 1.5x restic's (and verified)",
            r("restore", "mib_per_s"),
            ">=",
            1.5,
            verified,
        ),
        _check("no-change incremental time <= 0.5x restic's", r("unchanged", "wall_s"), "<=", 0.5),
        _check("5%-changed incremental time <= 0.6x restic's", r("changed", "wall_s"), "<=", 0.6),
        _check(f"peak RSS <= 0.7x restic's in every phase (worst: {phase or '-'})", rss, "<=", 0.7),
        _check("repository size <= 1.0x restic's (after 3 backups)", r("changed", "repo_mib"), "<=", 1.0),
        _check("first backup within 1.5x of the cold read floor", fl("first", "read"), "<=", 1.5),
        _check(
            "full restore within 1.5x of the cold copy floor (and verified)",
            fl("restore", "copy"),
            "<=",
            1.5,
            verified,
        ),
    ]


def scale_goals(results: dict) -> list[dict]:
    """The million-file set: the same speed goals where they apply, check and prune under restic's,
    and a backup's memory that does not grow with the repository."""
    r, fl = functools.partial(ratio, results), functools.partial(_floor, results)
    verified = _rows(results, "restore_dir").get(SV, {}).get("verified", False)
    rss, phase = worst_rss(results, ["first", "unchanged", "check", "changed", "forget", "restore_dir"])
    probe = results.get("memory", {}).get(SV, {})
    return [
        _check("first backup throughput >= 1.5x restic's", r("first", "mib_per_s"), ">=", 1.5),
        _check("no-change incremental time <= 0.5x restic's", r("unchanged", "wall_s"), "<=", 0.5),
        _check("check time < restic's", r("check", "wall_s"), "<=", 1.0),
        _check("check peak RSS < restic's", r("check", "peak_rss_mib"), "<=", 1.0),
        _check("forget --prune time < restic's", r("forget", "wall_s"), "<=", 1.0),
        _check("forget --prune peak RSS < restic's", r("forget", "peak_rss_mib"), "<=", 1.0),
        _check(
            "one-directory restore time <= restic's (and verified)",
            r("restore_dir", "wall_s"),
            "<=",
            1.0,
            verified,
        ),
        _check(f"peak RSS <= 0.7x restic's in every phase (worst: {phase or '-'})", rss, "<=", 0.7),
        _check(
            "small backup's peak RSS does not grow with the repository (full / empty <= 1.2x)",
            probe.get("full_vs_empty"),
            "<=",
            1.2,
        ),
        _check("first backup within 1.5x of the cold read floor", fl("first", "read"), "<=", 1.5),
        _check(
            "one-directory restore within 1.5x of its cold copy floor",
            fl("restore_dir", "copy"),
            "<=",
            1.5,
            verified,
        ),
    ]


def print_goals(checks: list[dict], title: str) -> None:
    print(title)
    for c in checks:
        state = {True: "met", False: "NOT met", None: "n/a"}[c["met"]]
        value = "-" if c["ratio"] is None else f"{c['ratio']:.2f}x"
        print(f"  [{state:>7}] {c['goal']}: {value}")
