"""A backup images only the nested btrfs subvolumes it reads: none elsewhere on the volume (docker's,
snapper's), none of other tools' snapshots it leaves out, and the snapshots it leaves out are found
even when a tmpfs covers a directory that holds a nested subvolume."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shadowvault.shadow.path_map import nested_images
from tests.archive.test_nested_mounts import json_lines, listed, stored_manifest


def btrfs_run(*argv: str | Path) -> None:
    subprocess.run(["btrfs", "subvolume", *map(str, argv)], check=True, capture_output=True)


def subvolumes_of(mount: Path) -> set[str]:
    """Every subvolume of the filesystem, as `btrfs subvolume list` names them (ours would be here)."""
    out = subprocess.run(
        ["btrfs", "subvolume", "list", str(mount)], check=True, capture_output=True, text=True
    ).stdout
    return {line.split(" path ", 1)[1] for line in out.splitlines()}


def imaged(env: dict[str, str]) -> dict[str, str]:
    """Live path -> where it was read, for every nested subvolume the backup's shadow set imaged."""
    return {live: read for s in stored_manifest(env).shadows for live, read in nested_images(s).items()}


def warnings_of(stderr: str) -> list[str]:
    return [m["message"] for m in json_lines(stderr) if m["message_type"] == "warning"]


def test_a_backup_of_a_path_in_a_volume_images_only_the_subvolumes_it_reads(cli, env, btrfs, tmp_path):
    """A hundred docker subvolumes elsewhere on the volume get no snapshot when one directory is backed
    up: only the nested subvolumes below the path, and the one a path lies in, are imaged."""
    vol = btrfs.mount
    (vol / "projects").mkdir()
    (vol / "projects/plan.txt").write_text("on the volume\n")
    btrfs_run("create", vol / "projects/app")
    (vol / "projects/app/main.py").write_text("print('in a nested subvolume')\n")
    btrfs_run("create", vol / "projects/app/vendor")
    (vol / "projects/app/vendor/lib.py").write_text("two levels down\n")
    (vol / "docker/subvolumes").mkdir(parents=True)
    for n in range(12):
        btrfs_run("create", vol / f"docker/subvolumes/layer{n}")
        (vol / f"docker/subvolumes/layer{n}/f").write_text(f"layer {n}\n")
    btrfs_run("create", vol / "home")
    (vol / "home/notes").mkdir()
    (vol / "home/notes/todo.txt").write_text("inside a subvolume, below its root\n")
    btrfs_run("create", vol / "home/cache")
    users = subvolumes_of(vol)

    done = cli("backup", "--json", str(vol / "projects"), str(vol / "home/notes"), env=env)
    assert done.returncode == 0, done.stderr
    assert warnings_of(done.stderr) == []
    # home holds a path read, so it is read in its own image; home/cache and docker's are not read
    assert sorted(imaged(env)) == [f"{vol}/home", f"{vol}/projects/app", f"{vol}/projects/app/vendor"]
    names = listed(cli, env, vol / "projects") | listed(cli, env, vol / "home/notes")
    assert {f"{vol}/projects/app/main.py", f"{vol}/projects/app/vendor/lib.py"} <= names
    assert f"{vol}/home/notes/todo.txt" in names
    assert subvolumes_of(vol) == users  # every image deleted with its set
    assert list((vol / ".shadowvault").iterdir()) == []

    target = tmp_path / "restored"
    done = cli("restore", "latest", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    restored = target / str(vol).lstrip("/")
    assert (restored / "projects/plan.txt").read_text() == "on the volume\n"
    assert (restored / "projects/app/main.py").read_text() == "print('in a nested subvolume')\n"
    assert (restored / "projects/app/vendor/lib.py").read_text() == "two levels down\n"
    assert (restored / "home/notes/todo.txt").read_text() == "inside a subvolume, below its root\n"
    assert not (restored / "docker").exists()

    done = cli("backup", "--json", "--exclude", str(vol / "projects/app/vendor"), str(vol), env=env)
    assert done.returncode == 0, done.stderr
    assert f"{vol}/projects/app/vendor" not in imaged(env)  # excluded: not read, not imaged
    assert f"{vol}/docker/subvolumes/layer11" in imaged(env)  # the whole volume: every other one
    assert f"{vol}/docker/subvolumes/layer11/f" in listed(cli, env, vol / "docker/subvolumes/layer11")
    assert subvolumes_of(vol) == users


def test_other_tools_snapshots_left_out_get_no_image(cli, env, btrfs):
    """snapper's read-only snapshots are left out of the backup, so the shadow set takes none of them
    in (nor what lies below them); --include-snapshots reads them, through the set as before."""
    data = btrfs.mount / "data"
    btrfs_run("create", data)
    (data / "f").write_text("live data\n")
    btrfs_run("create", data / ".snapshots")
    for n in (1, 2):
        (data / f".snapshots/{n}").mkdir()
        btrfs_run("snapshot", "-r", data, data / f".snapshots/{n}/snapshot")
    users = subvolumes_of(btrfs.mount)

    done = cli("backup", "--json", str(data), env=env)
    assert done.returncode == 0, done.stderr
    [warning] = warnings_of(done.stderr)
    assert warning.startswith("2 read-only btrfs snapshots below the backed-up paths not read")
    assert sorted(imaged(env)) == [str(data), f"{data}/.snapshots"]
    assert warning in stored_manifest(env).notes
    assert f"{data}/.snapshots/1/snapshot/f" not in listed(cli, env, data)
    assert subvolumes_of(btrfs.mount) == users

    done = cli("backup", "--json", "--include-snapshots", str(data), env=env)
    assert done.returncode == 0, done.stderr
    assert warnings_of(done.stderr) == []
    assert {f"{data}/.snapshots/1/snapshot", f"{data}/.snapshots/2/snapshot"} <= set(imaged(env))
    assert f"{data}/.snapshots/2/snapshot/f" in listed(cli, env, data)
    assert subvolumes_of(btrfs.mount) == users


def test_snapshots_are_left_out_when_a_tmpfs_covers_a_nested_subvolume(cli, env, btrfs, mounts, tmp_path):
    """A tmpfs over a directory that holds a nested subvolume (a cache, a runtime directory) made the
    listing of the volume's subvolumes fail as a whole, and every other tool's snapshot was read."""
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "f").write_text("live data\n")
    btrfs_run("create", data / "cache")
    btrfs_run("create", data / "cache/sub")
    (data / ".snapshots/1").mkdir(parents=True)
    btrfs_run("snapshot", "-r", data / "cache", data / ".snapshots/1/snapshot")
    mounts("-t", "tmpfs", "tmpfs", data / "cache")
    (data / "cache/on-tmpfs").write_text("in the tmpfs\n")
    users = subvolumes_of(btrfs.mount)

    done = cli("backup", "--json", str(data), env=env)
    assert done.returncode == 0, done.stderr
    warned = warnings_of(done.stderr)
    assert any(
        w.startswith("1 read-only btrfs snapshot below") and f"({data}/.snapshots/1/snapshot)" in w
        for w in warned
    ), done.stderr
    names = listed(cli, env, data)
    assert f"{data}/.snapshots/1/snapshot" in names and f"{data}/cache/on-tmpfs" in names
    assert not any(n.startswith(f"{data}/.snapshots/1/snapshot/") for n in names)
    assert imaged(env) == {}  # cache is under the tmpfs, the snapshot is left out
    assert subvolumes_of(btrfs.mount) == users

    target = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(target), env=env).returncode == 0
    restored = target / str(data).lstrip("/")
    assert (restored / "f").read_text() == "live data\n"
    assert (restored / "cache/on-tmpfs").read_text() == "in the tmpfs\n"
