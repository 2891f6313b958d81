"""Mounts inside a backed-up path (issue 16, "Honest output" 1): read through their own shadow unless
--one-file-system; whatever is skipped is warned about and noted in the manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.path_map import nested_images
from tests.archive.helpers import PASSWORD


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stored_manifest(env: dict[str, str]) -> manifest_doc.ShadowSetManifest:
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:
        _, snap = repo.find_snapshot("latest")
        return manifest_doc.decode(repo.load_blob(snap.manifest))


def listed(cli, env, path: Path) -> set[str]:
    done = cli("ls", "latest", str(path), env=env)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines())


def test_a_tmpfs_under_a_shadowed_volume_is_read_through_its_own_shadow(cli, env, btrfs, mounts):
    data = btrfs.mount / "data"
    (data / "cache").mkdir(parents=True)
    (data / "kept").write_text("on btrfs\n")
    mounts("-t", "tmpfs", "tmpfs", data / "cache")
    (data / "cache" / "inside").write_text("on tmpfs\n")

    done = cli("backup", "--json", str(data), env=env)
    assert done.returncode == 0, done.stderr
    assert f"{data}/cache/inside" in listed(cli, env, data)
    live_notes = [m["message"] for m in json_lines(done.stderr) if "live" in m.get("message", "")]
    assert live_notes and all(f"{data}/cache" in note for note in live_notes), done.stderr  # which volume
    shadows = {(s.volume, s.provider) for s in stored_manifest(env).shadows}
    assert shadows == {(str(btrfs.mount), "btrfs"), (str(data / "cache"), "live")}

    done = cli("backup", "--json", "--one-file-system", str(data), env=env)
    assert done.returncode == 0, done.stderr
    warned = [m["message"] for m in json_lines(done.stderr) if m["message_type"] == "warning"]
    assert any(f"{data}/cache" in w and "--one-file-system" in w for w in warned), done.stderr
    summary = [m for m in json_lines(done.stdout) if m["message_type"] == "summary"][-1]
    assert summary["warnings"] == len(warned)  # the summary counts what was said
    names = listed(cli, env, data)
    assert f"{data}/cache" in names and f"{data}/cache/inside" not in names
    manifest = stored_manifest(env)
    assert any(f"{data}/cache" in note and "--one-file-system" in note for note in manifest.notes)
    assert {s.volume for s in manifest.shadows} == {str(btrfs.mount)}


def test_mounts_under_a_live_path_are_read_through_their_shadows_and_pseudo_filesystems_skipped(
    cli, env, tmp_path, btrfs, mounts
):
    src = tmp_path / "src"  # on the machine's root filesystem: read live
    (src / "vol").mkdir(parents=True)
    (src / "proc").mkdir()
    (src / "top").write_text("on the root filesystem\n")
    (btrfs.mount / "inner").write_text("on btrfs\n")
    mounts("--bind", btrfs.mount, src / "vol")
    mounts("-t", "proc", "proc", src / "proc")

    done = cli("backup", "--json", str(src), env=env)
    assert done.returncode == 0, done.stderr
    names = listed(cli, env, src)
    assert {f"{src}/top", f"{src}/vol/inner", f"{src}/proc"} <= names
    assert not any(name.startswith(f"{src}/proc/") for name in names)
    manifest = stored_manifest(env)
    assert {(s.volume, s.provider) for s in manifest.shadows} == {(str(src / "vol"), "btrfs")}
    warned = [m["message"] for m in json_lines(done.stderr) if m["message_type"] == "warning"]
    assert any(f"{src}/proc" in w and "proc" in w for w in warned), done.stderr
    assert any(f"{src}/proc" in note for note in manifest.notes)


def test_nested_btrfs_subvolumes_are_backed_up_through_their_own_snapshots(cli, env, btrfs, tmp_path):
    """A snapshot of a btrfs volume shows nested subvolumes (systemd's /var/lib/machines, docker's,
    snapper's) as empty directories: their files are read through snapshots of their own, whether the
    backup names the volume or a path inside a nested subvolume."""
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "top.txt").write_text("on the volume\n")
    for sub in ("sub", "sub/deeper"):
        subprocess.run(["btrfs", "subvolume", "create", str(data / sub)], check=True, capture_output=True)
    (data / "sub/f").write_text("in a nested subvolume\n")
    (data / "sub/deeper/g").write_text("two levels down\n")

    done = cli("backup", "--json", str(data), env=env)
    assert done.returncode == 0, done.stderr
    summary = [m for m in json_lines(done.stdout) if m["message_type"] == "summary"][-1]
    assert summary["warnings"] == 0, done.stderr
    assert {f"{data}/sub/f", f"{data}/sub/deeper/g", f"{data}/top.txt"} <= listed(cli, env, data)

    target = tmp_path / "restored"
    done = cli("restore", "latest", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    restored = target / str(data).lstrip("/")
    assert (restored / "sub/f").read_text() == "in a nested subvolume\n"
    assert (restored / "sub/deeper/g").read_text() == "two levels down\n"

    done = cli("backup", "--json", str(data / "sub"), env=env)  # a path inside a nested subvolume
    assert done.returncode == 0, done.stderr
    assert {f"{data}/sub/f", f"{data}/sub/deeper/g"} <= listed(cli, env, data / "sub")
    assert sorted((btrfs.mount / ".shadowvault").iterdir()) == []  # every image deleted with its set


def test_other_tools_read_only_snapshots_are_left_out_unless_asked_for(cli, env, btrfs, tmp_path):
    """snapper's /.snapshots/N/snapshot is a read-only snapshot of another subvolume: a copy of history
    the backup would read once more per snapshot. It is recorded empty, named in one warning and noted
    in the manifest; a read-only subvolume made as such is data and is read; --include-snapshots reads all."""
    data = btrfs.mount / "data"

    def btrfs_run(*argv: str | Path) -> None:
        subprocess.run(["btrfs", "subvolume", *map(str, argv)], check=True, capture_output=True)

    btrfs_run("create", data)
    (data / "f").write_text("live data\n")
    btrfs_run("create", data / ".snapshots")
    (data / ".snapshots" / "1").mkdir()
    btrfs_run("snapshot", "-r", data, data / ".snapshots/1/snapshot")
    btrfs_run("create", data / "archive")
    (data / "archive" / "kept").write_text("read-only data\n")
    subprocess.run(["btrfs", "property", "set", str(data / "archive"), "ro", "true"], check=True)

    done = cli("backup", "--json", str(data), env=env)
    assert done.returncode == 0, done.stderr
    [warning] = [m["message"] for m in json_lines(done.stderr) if "btrfs snapshot" in m.get("message", "")]
    assert "1 read-only btrfs snapshot below the backed-up paths not read" in warning
    assert f"({data}/.snapshots/1/snapshot)" in warning and "--include-snapshots" in warning
    assert warning in stored_manifest(env).notes
    stored = listed(cli, env, data)
    assert f"{data}/.snapshots/1/snapshot" in stored  # the directory, empty
    assert f"{data}/.snapshots/1/snapshot/f" not in stored
    assert f"{data}/archive/kept" in stored and f"{data}/f" in stored

    done = cli("backup", "--json", "--include-snapshots", str(data), env=env)
    assert done.returncode == 0, done.stderr
    assert "btrfs snapshot" not in done.stderr
    assert f"{data}/.snapshots/1/snapshot/f" in listed(cli, env, data)
    target = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(target), env=env).returncode == 0
    assert (target / str(data).lstrip("/") / ".snapshots/1/snapshot/f").read_text() == "live data\n"


def test_a_nested_subvolume_mounted_at_its_place_is_shadowed_once(cli, env, btrfs, mounts, tmp_path):
    """A nested subvolume also mounted at its own place (a `home` subvolume inside the root's, mounted
    at /home) is a mount below the paths: the set shadows it as a volume of its own, and the image of
    the volume around it leaves it out, so it is snapshotted once, said once, and restored whole."""
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "top.txt").write_text("on the volume\n")
    for sub in ("sub", "sub/deeper"):
        subprocess.run(["btrfs", "subvolume", "create", str(data / sub)], check=True, capture_output=True)
    (data / "sub/f").write_text("in the mounted subvolume\n")
    (data / "sub/deeper/g").write_text("in a subvolume nested in it\n")
    mounts("-o", "subvol=data/sub", btrfs.device, data / "sub")

    done = cli("backup", "--dry-run", str(data), env=env)
    assert done.returncode == 0, done.stderr
    would_add = [line for line in done.stdout.splitlines() if line.startswith("would add ")]
    assert len(would_add) == len(set(would_add))
    assert {f"would add {data}/sub/f", f"would add {data}/sub/deeper/g"} <= set(would_add)

    done = cli("backup", "--json", str(data), env=env)
    assert done.returncode == 0, done.stderr
    manifest = stored_manifest(env)
    assert sorted((s.volume, s.provider) for s in manifest.shadows) == [
        (str(btrfs.mount), "btrfs"),
        (str(data / "sub"), "btrfs"),
    ]
    imaged = [(s.volume, live) for s in manifest.shadows for live in nested_images(s)]
    assert imaged == [(str(data / "sub"), f"{data}/sub/deeper")]  # by the mounted subvolume's shadow alone
    [warning] = [m["message"] for m in json_lines(done.stderr) if m["message_type"] == "warning"]
    assert f"the volumes {btrfs.mount}, {data}/sub were shadowed one after another" in warning
    assert {f"{data}/top.txt", f"{data}/sub/f", f"{data}/sub/deeper/g"} <= listed(cli, env, data)
    assert [*(btrfs.mount / ".shadowvault").iterdir(), *(data / "sub/.shadowvault").iterdir()] == []

    target = tmp_path / "restored"
    done = cli("restore", "latest", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    restored = target / str(data).lstrip("/")
    assert (restored / "sub/f").read_text() == "in the mounted subvolume\n"
    assert (restored / "sub/deeper/g").read_text() == "in a subvolume nested in it\n"
