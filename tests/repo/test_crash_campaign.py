"""The crash campaign, kept as a test: `kill -9` the real `shadowvault backup` and `prune` commands at
random moments, a few dozen times; after every kill `check` passes, and in the end every snapshot
that was saved restores byte-identical to what was backed up.

The seed is printed on failure (pytest shows the parametrized id), so a failing run replays.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shadowvault.repo.check import check
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD

KILLS = 30
KILL_SHARE = 0.75  # of the rounds: the others end, so that snapshots are saved


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), root): Path(d, f).read_bytes()
        for d, _, files in os.walk(root)
        for f in files
    }


def _mutate(src: Path, rnd: random.Random, round_no: int) -> None:
    """Change a few files, add one, remove one: each backup has new data and shared data."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for path in rnd.sample(files, min(3, len(files))):
        path.write_bytes(rnd.randbytes(rnd.randrange(1_000, 400_000)))
    (src / f"d{round_no % 4}").mkdir(exist_ok=True)
    (src / f"d{round_no % 4}" / f"new{round_no}.bin").write_bytes(rnd.randbytes(rnd.randrange(10, 900_000)))
    if len(files) > 12:
        rnd.choice(files).unlink()


def _command(repo: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}
    return subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.timeout(900)  # a few dozen processes started and killed: minutes on a loaded machine
@pytest.mark.parametrize("seed", [20261128])
def test_kill_9_during_backup_and_prune_never_breaks_a_snapshot(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}.bin").write_bytes(rnd.randbytes(rnd.randrange(1_000, 600_000)))
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF, pack_size=128 << 10).close()

    expected: dict[str, dict[str, bytes]] = {}  # snapshot id -> the source it was made from
    # how long each command last took when it ran to its end: a kill is aimed within that, so the
    # campaign takes about the same number of rounds on a fast machine as on a loaded one (a fixed
    # window let most commands end first on a quick one: 77 rounds for 30 kills, once minutes)
    lasted = {"backup": 1.0, "prune": 1.0}
    kills = 0
    round_no = 0
    while kills < KILLS:
        round_no += 1
        _mutate(src, rnd, round_no)
        prune_round = round_no % 4 == 0
        args = ("prune",) if prune_round else ("backup", "--provider", "none", "--json", str(src))
        before = _tree_bytes(src)
        started = time.monotonic()
        proc = _command(repo, *args)
        if rnd.random() < KILL_SHARE:  # some die early, most mid-way; the others run to their end
            time.sleep(rnd.uniform(0.1, 0.95) * lasted[args[0]])
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        out, err = proc.communicate()
        if proc.returncode == 0:
            lasted[args[0]] = time.monotonic() - started
        if proc.returncode == 0 and not prune_round:
            summary = [json.loads(line) for line in out.splitlines() if b'"summary"' in line][-1]
            expected[summary["snapshot_id"]] = before
        elif proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"round {round_no} ({args[0]}) failed: {err.decode()}")
        with Repository.open(repo, PASSWORD) as opened:
            report = check(opened, record=False)
        assert report.ok, f"round {round_no}, after a kill of {args[0]}: {report.errors}"
        if len(expected) > 4 and rnd.random() < 0.3:  # forget an old snapshot so prune has work
            victim = next(iter(expected))
            with Repository.open(repo, PASSWORD) as opened:
                opened.remove_snapshot(victim)
            del expected[victim]

    # One complete backup and prune after all that, then everything is checked and restored.
    final = _command(repo, "backup", "--provider", "none", "--json", str(src))
    out, err = final.communicate()
    assert final.returncode == 0, err.decode()
    summary = [json.loads(line) for line in out.splitlines() if b'"summary"' in line][-1]
    expected[summary["snapshot_id"]] = _tree_bytes(src)
    pruned = _command(repo, "prune")
    assert pruned.wait() == 0, pruned.stderr.read().decode() if pruned.stderr else ""
    with Repository.open(repo, PASSWORD) as opened:
        report = check(opened, read_data_fraction=1.0, record=False)
    assert report.ok, report.errors
    assert os.listdir(repo / "tmp") == []  # prune removed the killed writers' temp files
    for snapshot_id, files in expected.items():
        target = tmp_path / "restored"
        shutil.rmtree(target, ignore_errors=True)
        done = _command(repo, "restore", f"{snapshot_id}:{src}", "--target", str(target))
        _, err = done.communicate()
        assert done.returncode == 0, err.decode()
        assert _tree_bytes(target) == files, f"snapshot {snapshot_id[:8]} differs from its source"
