"""Shadows left by a killed requester: the store learns a shadow before it exists, and reaps what no set owns.

Every test kills a real `shadowvault` process at a point it announces itself (a marker file written by
a writer's freeze or thaw script, or by a provider), then checks what a user would: what `btrfs
subvolume list` shows, what `shadows list` says, and that the filesystem still takes writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.providers.registry import get_provider
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.volumes import find_volume
from tests.fixtures.tools import require_tools
from tests.repo.helpers import env_for
from tests.shadow.frozen_probe import write_completes
from tests.shadow.store_helpers import alive_pid, dead_pid
from tests.shadow.test_watchdog import wait_for
from tests.shadow.test_writers import write_config, write_script

SHADOW_DIR = ".shadowvault"
STRAY_ID = "20200101T000000-abcdef"  # the store's id format, from a set no store knows


def subvolumes(mount: Path) -> list[str]:
    """Paths (relative to `mount`) of every subvolume on the filesystem, as `btrfs subvolume list` says."""
    require_tools("btrfs")
    done = subprocess.run(
        ["btrfs", "subvolume", "list", str(mount)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"btrfs subvolume list {mount}: {done.stderr}"
    return sorted(line.split(" path ", 1)[1] for line in done.stdout.splitlines() if " path " in line)


def ours(mount: Path) -> list[str]:
    return [path for path in subvolumes(mount) if path.split("/", 1)[0] == SHADOW_DIR]


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`shadowvault ARGS` in its own session, as a service manager would run it."""
    return subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def slow_writer(private_dirs: Path, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A script writer `slow`: its freeze and its thaw each announce themselves, then take 4 s."""
    markers = {"frozen": tmp_path / "frozen", "thawing": tmp_path / "thawing", "done": tmp_path / "thawed"}
    freeze = write_script(tmp_path / "freeze.sh", f"touch {markers['frozen']}; sleep 4")
    thaw = write_script(tmp_path / "thaw.sh", f"touch {markers['thawing']}; sleep 4; touch {markers['done']}")
    write_config(private_dirs / "config", "slow", f'freeze = ["{freeze}"]\nthaw = ["{thaw}"]\ntimeout = 30\n')
    yield markers


def create_until(btrfs, marker: Path) -> subprocess.Popen[str]:
    """Start `shadows create` on the btrfs volume with the slow writer; return once `marker` appears."""
    child = start_cli(
        "shadows", "create", "--volume", str(btrfs.mount), "--provider", "btrfs", "--writer", "script:slow"
    )
    return wait_for_marker(child, marker)


def wait_for_marker(child: subprocess.Popen[str], marker: Path) -> subprocess.Popen[str]:
    if not wait_for(lambda: marker.exists() or child.poll() is not None, 60) or not marker.exists():
        child.kill()
        _, stderr = child.communicate(timeout=30)
        pytest.fail(f"shadowvault never reached {marker.name}: {stderr}")
    return child


def test_sigkill_during_the_thaw_leaves_an_orphan_that_shadows_list_removes(btrfs, slow_writer, cli):
    child = create_until(btrfs, slow_writer["thawing"])  # the snapshot is made, the thaw takes 4 s
    try:
        assert len(ours(btrfs.mount)) == 1, "the snapshot should exist when the thaw starts"
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL

        done = cli("shadows", "list", "--json")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]"
        assert ours(btrfs.mount) == []
        assert ShadowStore().list() == []
        assert write_completes(btrfs.mount)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize(
    ("signum", "marker"),
    [
        (signal.SIGTERM, "thawing"),  # the snapshot exists, the application is being thawed
        (signal.SIGTERM, "frozen"),  # the application is held, the snapshot is next
        (signal.SIGHUP, "thawing"),
        (signal.SIGHUP, "frozen"),
    ],
    ids=["SIGTERM-at-thaw", "SIGTERM-at-freeze", "SIGHUP-at-thaw", "SIGHUP-at-freeze"],
)
def test_sigterm_and_sighup_clean_up_like_ctrl_c(btrfs, slow_writer, signum, marker):
    child = create_until(btrfs, slow_writer[marker])
    try:
        os.kill(child.pid, signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    name = signal.Signals(signum).name
    assert child.returncode == 128 + signum
    assert stderr == f"shadowvault: error: terminated by {name}\n"
    assert slow_writer["done"].exists(), "the application's thaw did not run to its end"
    assert ours(btrfs.mount) == []
    assert ShadowStore().list() == []  # the process removed its own record: no reaping needed
    assert write_completes(btrfs.mount)


def test_sigterm_during_a_backups_thaw_leaves_nothing(btrfs, slow_writer, tmp_path, cli):
    (btrfs.mount / "f").write_text("data")
    env = env_for(tmp_path / "repo")
    assert cli("init", env=env).returncode == 0
    child = start_cli(
        "backup",
        str(btrfs.mount),
        "--provider",
        "btrfs",
        "--writer",
        "script:slow",
        env=env,
    )
    wait_for_marker(child, slow_writer["thawing"])
    try:
        os.kill(child.pid, signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 128 + signal.SIGTERM
    assert (
        stderr.splitlines()[-1:] == ["shadowvault: error: terminated by SIGTERM"]
        and "Traceback" not in stderr
    )
    assert slow_writer["done"].exists()
    assert ours(btrfs.mount) == [] and ShadowStore().list() == []
    assert write_completes(btrfs.mount)


SLOW_COMMIT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shadowvault import interrupts
    from shadowvault.shadow.coordinator import SetOptions, create_shadow_set
    from shadowvault.shadow.providers.btrfs import BtrfsProvider

    class SlowBtrfs(BtrfsProvider):
        def create(self, volume, set_id, index, *scope):
            shadow = super().create(volume, set_id, index, *scope)
            Path(sys.argv[2]).write_text("committing")
            time.sleep(2)  # the signal arrives here: the snapshot exists, the commit has not returned
            return shadow

    interrupts.install_handlers()
    try:
        create_shadow_set([sys.argv[1]], SetOptions(provider=SlowBtrfs(), auto_writers=False))
    except interrupts.Terminated as err:
        sys.exit(err.exit_code)
    """
)


def test_sigterm_during_the_commit_deletes_the_snapshot_not_yet_returned(btrfs, tmp_path, private_dirs):
    committing = tmp_path / "committing"
    script = tmp_path / "requester.py"
    script.write_text(SLOW_COMMIT)
    child = subprocess.Popen(
        [sys.executable, str(script), str(btrfs.mount), str(committing)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: committing.exists() or child.poll() is not None, 60)
        assert committing.exists(), child.communicate(timeout=30)[1]
        assert len(ours(btrfs.mount)) == 1
        os.kill(child.pid, signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert ours(btrfs.mount) == []
    assert ShadowStore().list() == []


def stray_subvolume(btrfs, name: str) -> None:
    hidden = btrfs.mount / SHADOW_DIR
    hidden.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(btrfs.mount), str(hidden / name)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def user_subvolumes(btrfs) -> list[str]:
    """User subvolumes: one named like a shadow but outside our directory, one in it but not named as ours."""
    names = ["data", f"{STRAY_ID}-0"]
    for name in names:
        subprocess.run(
            ["btrfs", "subvolume", "create", str(btrfs.mount / name)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    (btrfs.mount / "data" / "file").write_text("mine")
    stray_subvolume(btrfs, "kept-by-hand")  # in our directory, but not named as we name shadows
    return sorted([*names, f"{SHADOW_DIR}/kept-by-hand"])


def test_an_image_no_set_knows_is_removed_by_shadows_list(btrfs, cli):
    made = cli("shadows", "create", "--volume", btrfs.mount, "--provider", "btrfs", "--json")
    assert made.returncode == 0, made.stderr
    [kept] = ShadowStore().list()
    mine = user_subvolumes(btrfs)
    stray_subvolume(btrfs, f"{STRAY_ID}-0")
    stray_subvolume(btrfs, f"{STRAY_ID}-1")

    done = cli("shadows", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert kept.id in done.stdout
    assert subvolumes(btrfs.mount) == sorted([*mine, f"{SHADOW_DIR}/{kept.id}-0"])
    assert (btrfs.mount / "data" / "file").read_text() == "mine"


def test_an_image_no_set_knows_is_removed_when_a_set_is_created_on_its_volume(btrfs, cli):
    mine = user_subvolumes(btrfs)
    stray_subvolume(btrfs, f"{STRAY_ID}-0")
    done = cli("shadows", "create", "--volume", btrfs.mount, "--provider", "btrfs", "--auto-release")
    assert done.returncode == 0, done.stderr
    assert subvolumes(btrfs.mount) == mine


def unfinished_set(store: ShadowStore, mount: Path, provider: str, requester_pid: int) -> ShadowSetManifest:
    """A set as a requester leaves it when killed during the commit: recorded, its image made, not listed."""
    manifest = ShadowSetManifest(
        id=store.new_id(), created=time.time(), host="test", requester_pid=requester_pid, provider=provider
    )
    store.save(manifest)
    volume = find_volume(str(mount))
    store.record_intent(manifest.id, [get_provider(provider).planned(volume, manifest.id, 0)])
    get_provider(provider).create(volume, manifest.id, 0)
    return manifest


@pytest.mark.parametrize("provider", ["btrfs", "reflink"])
def test_reap_deletes_what_a_dead_requesters_intent_names(btrfs, provider):
    (btrfs.mount / "f").write_text("data")
    store = ShadowStore()
    dead = unfinished_set(store, btrfs.mount, provider, dead_pid())
    alive = unfinished_set(store, btrfs.mount, provider, alive_pid())
    hidden = btrfs.mount / SHADOW_DIR
    assert sorted(os.listdir(hidden)) == sorted([f"{dead.id}-0", f"{alive.id}-0"])
    assert store.reap() == [dead.id]
    assert os.listdir(hidden) == [f"{alive.id}-0"]  # a creator still at work keeps its shadow
    assert [m.id for m in store.list()] == [alive.id]
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{alive.id}.json", f"{alive.id}.intent"]
    )


def test_orphan_copies_and_half_made_copies_are_removed_only_in_our_place(xfs, cli):
    (xfs.mount / "f").write_text("data")
    hidden = xfs.mount / SHADOW_DIR
    hidden.mkdir(mode=0o700)
    (hidden / f"{STRAY_ID}-0").mkdir()
    (hidden / f"{STRAY_ID}-0" / "f").write_text("copy")
    (hidden / f".{STRAY_ID}-1.partial-{dead_pid()}").mkdir()
    (hidden / f".{STRAY_ID}-2.partial-{alive_pid()}").mkdir()  # a copy still being made
    (hidden / "notes").mkdir()
    (xfs.mount / f"{STRAY_ID}-0").mkdir()
    done = cli("shadows", "create", "--volume", xfs.mount, "--provider", "reflink", "--auto-release")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(hidden)) == sorted([f".{STRAY_ID}-2.partial-{alive_pid()}", "notes"])
    assert (xfs.mount / f"{STRAY_ID}-0").is_dir()


def test_shadows_list_leaves_volumes_this_store_never_used_alone(btrfs, cli):
    """Another state directory's shadows (a second installation, a test) are not ours to judge."""
    stray_subvolume(btrfs, f"{STRAY_ID}-0")
    done = cli("shadows", "list")
    assert done.returncode == 0, done.stderr
    assert ours(btrfs.mount) == [f"{SHADOW_DIR}/{STRAY_ID}-0"]


def test_a_damaged_intent_does_not_keep_a_dead_set_or_its_image(btrfs):
    store = ShadowStore()
    dead = unfinished_set(store, btrfs.mount, "btrfs", dead_pid())
    (store.root / f"{dead.id}.intent").write_text("{not json")
    assert store.reap() == [dead.id]
    assert ours(btrfs.mount) == []
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == []
