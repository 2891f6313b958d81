"""Sets made at once: serialized when they share a volume or a writer, side by side when disjoint.

Each set is made by its own `shadowvault shadows create` process, started together. Every set has
a writers.d script writer whose freeze records when it started and ended (in files outside the
frozen filesystems) and, in between, waits for the other set's freeze to start, up to a bound: two
sets made side by side therefore meet inside their freezes, and two serialized ones never do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.loopfs import LoopFs, loop_filesystem
from tests.shadow.test_writers import write_config, write_script

SIDE_BY_SIDE_BOUND = 60.0  # how long a freeze waits for the other set's (it ends as soon as that starts)
SERIALIZED_BOUND = 2.0  # a serialized first set waits this long in vain, then ends


def _rendezvous(records: Path, me: str, them: str, bound: float) -> str:
    """Shell: record my freeze's start, wait for theirs (up to `bound` seconds), record my end. Each
    record appears whole (written aside, renamed): a start file seen while still empty let the other
    side end before the time written into it."""
    theirs, tenths = f"{records}/{them}.start", int(bound * 10)
    wait = f"i=0; while [ ! -e {theirs} ] && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done"
    return (
        f"date +%s.%N > {records}/{me}.start.tmp && mv {records}/{me}.start.tmp {records}/{me}.start\n"
        f"{wait}\n"
        f"date +%s.%N > {records}/{me}.end.tmp && mv {records}/{me}.end.tmp {records}/{me}.end"
    )


def _rendezvous_writer(config_dir: Path, records: Path, name: str, other: str, bound: float, volume: Path):
    """A script writer `name` of `volume` whose freeze meets `other`'s (see _rendezvous)."""
    freeze = write_script(records / f"{name}-freeze.sh", _rendezvous(records, name, other, bound))
    write_config(
        config_dir, name, f'freeze = ["{freeze}"]\ntimeout = {bound * 2 + 30:g}\nvolumes = ["{volume}"]\n'
    )


def _create(volume: Path, *writers: str) -> subprocess.Popen[str]:
    """Start `shadows create` of `volume` with only `writers` (no discovery), released once made."""
    argv = [sys.executable, "-m", "shadowvault.cli.launch", "shadows", "create", "--volume", str(volume)]
    for writer in writers:
        argv += ["--writer", writer]
    argv += ["--no-auto-writers", "--auto-release", "--freeze-timeout", "300", "--json"]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )


def _both_made(*runs: subprocess.Popen[str]) -> None:
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        manifest = json.loads(out)
        assert manifest["state"] in ("created", "released"), manifest
        assert all(w["failure"] is None for w in manifest["writers"]), manifest["writers"]


def _interval(records: Path, name: str) -> tuple[float, float]:
    return float((records / f"{name}.start").read_text()), float((records / f"{name}.end").read_text())


def test_sets_of_disjoint_volumes_freeze_side_by_side(private_dirs, btrfs: LoopFs, tmp_path):
    records = tmp_path
    with loop_filesystem("btrfs") as other:
        config = private_dirs / "config"
        _rendezvous_writer(config, records, "app-a", "app-b", SIDE_BY_SIDE_BOUND, btrfs.mount)
        _rendezvous_writer(config, records, "app-b", "app-a", SIDE_BY_SIDE_BOUND, other.mount)
        _both_made(_create(btrfs.mount, "script:app-a"), _create(other.mount, "script:app-b"))
    start_a, end_a = _interval(records, "app-a")
    start_b, end_b = _interval(records, "app-b")
    assert start_a < end_b and start_b < end_a, (
        f"the freezes did not overlap: a {start_a}-{end_a}, b {start_b}-{end_b}"
    )


@pytest.mark.parametrize("second_mount", [False, True], ids=["one-mount", "bind-mount"])
def test_sets_sharing_a_volume_are_serialized(private_dirs, btrfs: LoopFs, tmp_path, second_mount):
    """One filesystem, through one mount point or two (a bind mount freezes with its original)."""
    records = tmp_path / "records"
    records.mkdir()
    other = btrfs.mount
    if second_mount:
        other = tmp_path / "again"
        other.mkdir()
        subprocess.run(["mount", "--bind", str(btrfs.mount), str(other)], check=True, timeout=60)
    try:
        config = private_dirs / "config"
        _rendezvous_writer(config, records, "app-a", "app-b", SERIALIZED_BOUND, btrfs.mount)
        _rendezvous_writer(config, records, "app-b", "app-a", SERIALIZED_BOUND, other)
        _both_made(_create(btrfs.mount, "script:app-a"), _create(other, "script:app-b"))
    finally:
        if second_mount:
            subprocess.run(["umount", str(other)], check=True, timeout=60)
    (_, first_end), (second_start, _) = sorted([_interval(records, "app-a"), _interval(records, "app-b")])
    assert first_end <= second_start, "two sets of one filesystem froze at once"


def test_sets_sharing_a_writer_are_serialized_even_on_disjoint_volumes(private_dirs, btrfs: LoopFs, tmp_path):
    """One application writer serves both volumes: it is never asked to freeze twice at once."""
    records = tmp_path
    with loop_filesystem("btrfs") as other:
        # The shared writer's freeze records each run under its own name: the set's volume, from
        # SHADOWVAULT_VOLUMES, picks the name (a on the first volume, b on the other).
        pick = f'case "$SHADOWVAULT_VOLUMES" in *{btrfs.mount}*) me=a; them=b;; *) me=b; them=a;; esac'
        body = pick + "\n" + _rendezvous(records, "$me", "$them", SERIALIZED_BOUND)
        freeze = write_script(records / "shared-freeze.sh", body)
        write_config(private_dirs / "config", "shared", f'freeze = ["{freeze}"]\ntimeout = 60\n')
        _both_made(_create(btrfs.mount, "script:shared"), _create(other.mount, "script:shared"))
    (_, first_end), (second_start, _) = sorted([_interval(records, "a"), _interval(records, "b")])
    assert first_end <= second_start, "one writer was frozen by two sets at once"
