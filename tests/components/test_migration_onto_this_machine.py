"""A data-only migration onto the machine being restored (issue 16, "Honest output" 8): `restore SNAP
--component files --map SRC=DST` needs neither --target-root nor --yes-really, and --dry-run lists
what it will write. "This machine" is a private mount namespace whose / is a loop filesystem made
for the test (the machine's own root is never written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.loopfs import loop_filesystem

PROJECT = Path(__file__).resolve().parents[2]
HOST_DIRS = ("/usr", "/etc", str(Path(sys.executable).resolve().parents[1]), str(PROJECT))


def as_root_of(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `argv` chrooted into `root` in a private mount namespace (host /usr, /etc, Python and the
    project bound read-only, /proc mounted inside); nothing of it is visible outside."""
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


def test_a_files_restore_with_map_onto_this_machine(cli, tmp_path):
    old = tmp_path / "srv" / "data"  # the old server's data
    (old / "site").mkdir(parents=True)
    (old / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (old / "app.db").write_bytes(b"db")
    other = tmp_path / "etc-app"
    other.mkdir()
    (other / "app.conf").write_text("conf\n")
    with loop_filesystem("ext4") as fs:
        root = fs.mount
        for name in ("bin", "lib", "lib64", "sbin"):
            if os.path.islink(f"/{name}"):
                os.symlink(os.readlink(f"/{name}"), root / name)
        (root / "sv" / "config" / "writers.d").mkdir(parents=True)
        (root / "sv" / "state").mkdir()
        Repository.init(root / "sv" / "repo", PASSWORD, kdf_params=FAST_KDF).close()
        host_env = {"SHADOWVAULT_REPOSITORY": str(root / "sv" / "repo"), "SHADOWVAULT_PASSWORD": PASSWORD}
        done = cli("backup", "--provider", "none", str(old), str(other), env=host_env)
        assert done.returncode == 0, done.stderr
        seen = as_root_of(root, "findmnt", "-n", "-o", "SOURCE", "/")
        assert seen.stdout.split() == [fs.device], seen.stderr  # "this machine" is the loop filesystem
        shadowvault = [
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
            "restore",
            "latest",
            "--component",
            "files",
        ]
        both_maps = ["--map", f"{old}=/data", "--map", f"{other}=/opt/app"]

        dry = as_root_of(root, *shadowvault, *both_maps, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "/data/site/index.html" in dry.stdout and "/opt/app/app.conf" in dry.stdout, dry.stdout
        assert not (root / "data").exists() and not (root / "opt").exists()  # a dry run writes nothing

        unmapped = as_root_of(root, *shadowvault, "--map", f"{old}=/data")
        assert unmapped.returncode == 2
        (line,) = unmapped.stderr.splitlines()
        assert str(other) in line and "--map" in line
        accounts = as_root_of(root, *shadowvault, *both_maps, "--create-missing-accounts")
        assert accounts.returncode == 2 and "--yes-really" in accounts.stderr

        done = as_root_of(root, *shadowvault, *both_maps)
        assert done.returncode == 0, done.stderr
        assert "created   file     /data/site/index.html" in done.stdout  # what was done, not a plan
        assert "restored files -> /: " in done.stderr and " created" in done.stderr, done.stderr
        assert (root / "data" / "site" / "index.html").read_text() == "<h1>hi</h1>\n"
        assert (root / "data" / "app.db").read_bytes() == b"db"
        assert (root / "opt" / "app" / "app.conf").read_text() == "conf\n"
        assert not (root / str(old).lstrip("/")).exists()
