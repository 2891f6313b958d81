"""An explicit --provider that cannot serve a path is an error, and a btrfs root filesystem is shadowed
with a snapshot (issue 16, "Honest output" 2). Freezing / stays refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.loopfs import loop_filesystem

PROJECT = Path(__file__).resolve().parents[2]


def root_fstype() -> str:
    return subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "/"], capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.parametrize("provider", ["btrfs", "reflink"])
def test_an_explicit_provider_that_cannot_serve_the_root_filesystem_is_an_error(cli, env, tmp_path, provider):
    assert root_fstype() != "btrfs", "this test needs a machine whose / is not btrfs"
    src = tmp_path / "src"  # on the machine's root filesystem
    src.mkdir()
    (src / "file").write_text("x")
    done = cli("backup", "--provider", provider, str(src), env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert f"--provider {provider}" in line and "root filesystem" in line and "--provider none" in line
    assert json.loads(cli("snapshots", "--json", env=env).stdout) == []
    auto = cli("backup", "--provider", "auto", str(src), env=env)  # auto reads it live, and says so
    assert auto.returncode == 0, auto.stderr
    assert "root filesystem" in auto.stderr


def test_an_explicit_provider_that_cannot_serve_a_volume_is_an_error(cli, env, ext4):
    (ext4.mount / "file").write_text("x")
    done = cli("backup", "--provider", "btrfs", str(ext4.mount), env=env)
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert "btrfs" in line and "ext4" in line


HOST_DIRS = ("/usr", "/etc", str(Path(sys.executable).resolve().parents[1]), str(PROJECT))


def in_btrfs_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a private mount namespace chrooted into `root` (a btrfs loop filesystem), with the
    host's /usr, /etc, Python and this project bound read-only and /proc mounted inside. Nothing of
    it is visible outside the namespace, which ends with the command."""
    binds = "\n".join(
        f"mkdir -p {root}{d} && mount --bind -o ro {d} {root}{d}" for d in HOST_DIRS if os.path.isdir(d)
    )
    script = f"""set -e
{binds}
mkdir -p {root}/dev {root}/proc && mount --bind /dev {root}/dev && mount -t proc proc {root}/proc
exec chroot {root} "$@"
"""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_btrfs_root_filesystem_is_shadowed_by_a_snapshot_and_never_frozen():
    with loop_filesystem("btrfs") as fs:
        root = fs.mount
        for name in ("bin", "lib", "lib64", "sbin"):  # the host's merged-/usr layout
            if os.path.islink(f"/{name}"):
                os.symlink(os.readlink(f"/{name}"), root / name)
        (root / "data").mkdir()
        (root / "data" / "file").write_text("on the btrfs root\n")
        (root / "sv" / "config" / "writers.d").mkdir(parents=True)
        (root / "sv" / "state").mkdir()
        Repository.init(root / "sv" / "repo", PASSWORD, kdf_params=FAST_KDF).close()
        # the process's / must be the loop filesystem before anything is shadowed
        seen = in_btrfs_root(root, "findmnt", "-n", "-o", "FSTYPE,SOURCE", "/")
        assert seen.stdout.split() == ["btrfs", fs.device], seen.stderr
        cli = [
            "env",
            "SHADOWVAULT_REPOSITORY=/sv/repo",
            f"SHADOWVAULT_PASSWORD={PASSWORD}",
            "SHADOWVAULT_NO_DAEMON=1",
            "SHADOWVAULT_CONFIG_DIR=/sv/config",
            "SHADOWVAULT_STATE_DIR=/sv/state",
            "PYTHONDONTWRITEBYTECODE=1",
            sys.executable,
            "-m",
            "shadowvault.cli.launch",
        ]

        done = in_btrfs_root(root, *cli, "backup", "--json", "/data")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.splitlines()[-1])
        assert summary["consistency"] == {"files": "crash"}
        assert "root filesystem" not in done.stderr
        with Repository.open(root / "sv" / "repo", PASSWORD) as repo:
            _, snap = repo.find_snapshot("latest")
            stored = manifest_doc.decode(repo.load_blob(snap.manifest))
        assert [(s.provider, s.volume) for s in stored.shadows] == [("btrfs", "/")]
        assert [w.name for w in stored.writers if w.name == "fsfreeze"] == []
        assert list((root / ".shadowvault").iterdir()) == []  # the snapshot is released

        frozen = in_btrfs_root(root, *cli, "backup", "--writer", "fsfreeze", "/data")
        assert frozen.returncode == 2
        assert "fsfreeze" in frozen.stderr and len(frozen.stderr.splitlines()) == 1
        restored = in_btrfs_root(root, *cli, "restore", "latest:/data", "--target", "/restored")
        assert restored.returncode == 0, restored.stderr
        assert (root / "restored" / "file").read_text() == "on the btrfs root\n"
