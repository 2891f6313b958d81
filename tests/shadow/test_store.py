"""The shadow-set store: records, lookup by prefix, release, the per-volume limit, reaping, exposure."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shadowvault.errors import ConfigError, NotFoundError, ProviderError, UsageError
from shadowvault.shadow.exposure import expose, exposures, is_mount_point, unexpose
from shadowvault.shadow.liveness import process_alive
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.store import ShadowStore, max_shadows_per_volume
from tests.fixtures.loopfs import unmount_tree
from tests.shadow.store_helpers import alive_pid, dead_pid, make_set


def _bare(store: ShadowStore, **fields) -> ShadowSetManifest:
    manifest = ShadowSetManifest(id=store.new_id(), created=time.time(), host=socket.gethostname(), **fields)
    store.save(manifest)
    return manifest


def test_round_trip_and_lookup_by_prefix(private_dirs):
    store = ShadowStore()
    assert store.root == private_dirs / "state" / "sets"
    saved = _bare(store, state="created", notes=["hello"])
    assert store.load(saved.id) == saved
    assert store.load(saved.id[:-2]).id == saved.id
    assert [m.id for m in store.list()] == [saved.id]
    assert (store.root / f"{saved.id}.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(NotFoundError, match="no shadow set nope"):
        store.load("nope")
    with pytest.raises(NotFoundError):
        store.load("../etc/passwd")


def test_ids_sort_by_time_and_ambiguous_prefix_is_a_usage_error():
    store = ShadowStore()
    first = _bare(store)
    second = _bare(store)
    assert first.id != second.id
    assert first.id[:15] <= second.id[:15]
    assert [m.id for m in store.list()] == [first.id, second.id]
    with pytest.raises(UsageError, match="ambiguous"):
        store.load(first.id[:4])


def test_release_deletes_the_snapshot_and_the_record(btrfs):
    store = ShadowStore()
    manifest = make_set(store, [str(btrfs.mount)], "btrfs")
    snapshot = Path(manifest.shadows[0].path)
    assert snapshot.is_dir()
    store.release(manifest.id)
    assert not snapshot.exists()
    assert store.list() == []
    store.release(manifest.id)  # idempotent


def test_release_of_a_reflink_set_on_two_volumes(btrfs, xfs):
    (xfs.mount / "f").write_bytes(b"x" * 10000)
    store = ShadowStore()
    manifest = make_set(store, [str(xfs.mount), str(btrfs.mount)], "reflink")
    paths = [Path(s.path) for s in manifest.shadows]
    assert (paths[0] / "f").read_bytes() == b"x" * 10000
    store.delete_all()
    assert not any(p.exists() for p in paths)


def test_enforce_limit_evicts_the_oldest_sets_of_that_volume(btrfs, ext4):
    store = ShadowStore()
    now = time.time()
    sets = [make_set(store, [str(btrfs.mount)], "btrfs", created=now - 100 + i) for i in range(3)]
    other = make_set(store, [str(ext4.mount)], "live", created=now - 200)
    released = store.enforce_limit(str(btrfs.mount), max_per_volume=2)
    assert released == [sets[0].id, sets[1].id]  # two remain below a limit of 2 only when one goes
    assert not Path(sets[0].shadows[0].path).exists()
    assert {m.id for m in store.list()} == {sets[2].id, other.id}
    assert store.enforce_limit(str(btrfs.mount), max_per_volume=2) == []


def test_enforce_limit_never_evicts_a_set_being_created(ext4):
    store = ShadowStore()
    busy = _bare(store, state="creating", requester_pid=alive_pid())
    busy.shadows = make_set(store, [str(ext4.mount)], "live").shadows
    store.save(busy)
    released = store.enforce_limit(str(ext4.mount), max_per_volume=1)
    assert busy.id not in released and len(released) == 1


def test_limit_comes_from_the_configuration(private_dirs):
    assert max_shadows_per_volume() == 64
    config = private_dirs / "config" / "shadowvault.toml"
    config.write_text("max_shadows_per_volume = 3\n")
    assert max_shadows_per_volume() == 3
    config.write_text("max_shadows_per_volume = 0\n")
    with pytest.raises(ConfigError, match="max_shadows_per_volume"):
        max_shadows_per_volume()
    config.write_text("max_shadows_per_volume = [\n")
    with pytest.raises(ConfigError, match=r"shadowvault\.toml"):
        max_shadows_per_volume()


def test_reap_releases_sets_of_ended_requesters_but_keeps_persistent_ones(btrfs):
    store = ShadowStore()
    gone = dead_pid()
    orphan = make_set(store, [str(btrfs.mount)], "btrfs", requester_pid=gone)
    persistent = make_set(store, [str(btrfs.mount)], "btrfs", requester_pid=gone, persistent=True)
    unfinished = make_set(
        store, [str(btrfs.mount)], "btrfs", requester_pid=gone, persistent=True, state="creating"
    )
    running = make_set(store, [str(btrfs.mount)], "btrfs", requester_pid=alive_pid())
    assert sorted(store.reap()) == sorted([orphan.id, unfinished.id])
    assert not Path(orphan.shadows[0].path).exists()
    assert {m.id for m in store.list()} == {persistent.id, running.id}


def test_process_alive_sees_zombies_and_reused_pids():
    child = subprocess.Popen(["true"])
    for _ in range(100):  # not yet waited for: a zombie
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert not process_alive(child.pid)
    child.wait()
    assert process_alive(os.getpid())
    assert not process_alive(os.getpid(), since=time.time() - 10**7)  # "started after the set": reused
    assert not process_alive(None)


def test_two_processes_save_and_release_concurrently():
    """Records written and released from several processes at once all land; none is lost or torn."""
    script = (
        "import socket, sys, time\n"
        "from shadowvault.shadow.store import ShadowStore\n"
        "from shadowvault.shadow.manifest import ShadowSetManifest\n"
        "s = ShadowStore()\n"
        "ids = []\n"
        "for i in range(40):\n"
        "    m = ShadowSetManifest(id=s.new_id(), created=time.time(), host='h', state='created')\n"
        "    s.save(m); ids.append(m.id)\n"
        "for i in ids[::2]:\n"
        "    s.release(i)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert len(ShadowStore().list()) == 60


def test_lock_is_reentrant_within_a_process():
    store = ShadowStore()
    with store.locked(), store.locked():
        _bare(store)
    assert len(store.list()) == 1


def test_expose_is_read_only_and_release_unexposes(btrfs, xfs):
    (btrfs.mount / "f").write_bytes(b"snapshot\n")
    (xfs.mount / "g").write_bytes(b"copy\n")
    store = ShadowStore()
    manifest = make_set(store, [str(btrfs.mount), str(xfs.mount)], "reflink")
    base = Path(tempfile.mkdtemp(prefix="sv-expose-"))
    try:
        first = expose(store, manifest.id[:10], None, base / "one")
        second = expose(store, manifest.id, str(xfs.mount), base / "two")
        assert first.volume == str(btrfs.mount) and second.index == 1
        assert (base / "one/f").read_bytes() == b"snapshot\n"
        assert (base / "two/g").read_bytes() == b"copy\n"
        with pytest.raises(OSError) as err:
            (base / "two/g").write_bytes(b"no")
        assert err.value.errno == errno.EROFS
        with pytest.raises(UsageError, match="already exposes"):
            expose(store, manifest.id, 0, base / "one")
        with pytest.raises(UsageError, match="no shadow of"):
            expose(store, manifest.id, "/nowhere", base / "three")

        assert unexpose(store, at=base / "one") == [str(base / "one")]
        assert not is_mount_point(str(base / "one")) and not (base / "one").exists()
        with pytest.raises(NotFoundError):
            unexpose(store, at=base / "one")

        store.release(manifest.id)  # unexposes "two" first
        assert not is_mount_point(str(base / "two"))
        assert exposures(store) == []
        assert not Path(manifest.shadows[1].path).exists()
    finally:
        unmount_tree(base)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def test_a_busy_exposure_keeps_the_set(btrfs):
    store = ShadowStore()
    manifest = make_set(store, [str(btrfs.mount)], "btrfs")
    base = Path(tempfile.mkdtemp(prefix="sv-expose-"))
    try:
        expose(store, manifest.id, None, base / "at")
        holder = subprocess.Popen(["sleep", "60"], cwd=base / "at")
        try:
            with pytest.raises(ProviderError, match="busy"):
                store.release(manifest.id)
            assert store.load(manifest.id).shadows  # nothing deleted under a reader
            assert Path(manifest.shadows[0].path).exists()
        finally:
            holder.kill()
            holder.wait()
        store.release(manifest.id)
        assert store.list() == []
    finally:
        unmount_tree(base)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def test_a_forked_child_does_not_keep_the_lock():
    """A child forked while the lock is held (the coordinator's watchdog) must not hold it after."""
    store = ShadowStore()
    read_end, write_end = os.pipe()
    with store.locked():
        pid = os.fork()
        if pid == 0:  # the child outlives the parent's lock by sleeping on the pipe
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
    try:
        script = "from shadowvault.shadow.store import ShadowStore as S\nwith S().locked(): print('ok')\n"
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
        assert done.stdout.strip() == "ok"
    finally:
        os.close(write_end)
        os.close(read_end)
        os.waitpid(pid, 0)


def test_release_never_deletes_on_another_filesystem_mounted_in_its_place(btrfs, xfs, caplog):
    """If the shadowed volume was replaced at its mount point, its image is left alone, not a namesake."""
    store = ShadowStore()
    manifest = make_set(store, [str(xfs.mount)], "reflink")
    copy_name = Path(manifest.shadows[0].path).name
    subprocess.run(["umount", str(xfs.mount)], check=True)
    subprocess.run(["mount", btrfs.device, str(xfs.mount)], check=True)
    try:
        decoy = xfs.mount / ".shadowvault" / copy_name
        decoy.mkdir(parents=True)
        (decoy / "precious").write_bytes(b"not ours\n")
        store.release(manifest.id)
        assert (decoy / "precious").read_bytes() == b"not ours\n"
        assert store.list() == []
        assert "another filesystem" in caplog.text
    finally:
        unmount_tree(xfs.mount)
        subprocess.run(["mount", xfs.device, str(xfs.mount)], check=True)
