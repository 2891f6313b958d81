"""`exec` with real backup programs, and bad input through the CLI: one line, non-zero, nothing frozen."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

from shadowvault.shadow.store import ShadowStore
from tests.fixtures.tools import require_tools
from tests.shadow.frozen_probe import write_completes
from tests.shadow.test_coordinator import leftover_shadows, rows
from tests.shadow.test_writers import make_db

# Written by the command itself, on the live volume, after the set was made and before it archives.
LATE_WRITES = (
    "echo late > {mount}/late.txt; echo after > {mount}/notes.txt; "
    "python3 -c \"import sqlite3; c = sqlite3.connect('{mount}/app.db'); "
    "c.execute('INSERT INTO t VALUES (9999)'); c.commit()\"; "
)


def prepare(mount: Path) -> Path:
    db = mount / "app.db"
    make_db(db, "wal")
    (mount / "notes.txt").write_text("before\n")
    return db


def test_exec_tar_archives_the_shadow_not_later_writes(btrfs, tmp_path, cli):
    require_tools("tar")
    db = prepare(btrfs.mount)
    archive = tmp_path / "backup.tar"
    script = LATE_WRITES.format(mount=btrfs.mount) + f"tar -C {{shadow}} -cf {archive} ."
    done = cli("exec", "--volume", btrfs.mount, "--writer", f"sqlite:{db}", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert "freeze window" in done.stderr
    out = tmp_path / "out"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(out, filter="data")
    assert "./late.txt" not in names
    assert (out / "notes.txt").read_text() == "before\n"
    assert rows(out / "app.db") == 100  # not the row inserted afterwards
    assert (btrfs.mount / "late.txt").exists()
    assert ShadowStore().list() == [] and leftover_shadows(btrfs.mount) == []


def test_exec_restic_backs_up_the_shadow(xfs, tmp_path, cli):
    require_tools("restic")
    db = prepare(xfs.mount)
    env = {
        "RESTIC_REPOSITORY": str(tmp_path / "repo"),
        "RESTIC_PASSWORD": "correct horse",
        "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
    }
    subprocess.run(["restic", "init", "--quiet"], env={**os.environ, **env}, check=True, capture_output=True)
    script = LATE_WRITES.format(mount=xfs.mount) + 'restic backup --quiet "$SHADOWVAULT_SHADOW_ROOT"'
    done = cli(
        "exec",
        "--volume",
        xfs.mount,
        "--provider",
        "reflink",
        "--writer",
        f"sqlite:{db}",
        "--",
        "sh",
        "-c",
        script,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    target = tmp_path / "restored"
    subprocess.run(
        ["restic", "restore", "latest", "--target", str(target)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    [notes] = target.rglob("notes.txt")
    assert notes.read_text() == "before\n"
    assert not list(target.rglob("late.txt"))
    assert rows(notes.parent / "app.db") == 100
    assert leftover_shadows(xfs.mount) == []


def test_exec_passes_environment_placeholders_and_status(btrfs, ext4, tmp_path, cli):
    report = tmp_path / "env.txt"
    script = (
        'echo "$SHADOWVAULT_SET_ID|$SHADOWVAULT_SHADOW_ROOT|$SHADOWVAULT_SHADOW_1|'
        f'$SHADOWVAULT_VOLUME_1|$1|$2" > {report}; exit 7'
    )
    done = cli(
        "exec",
        "--volume",
        btrfs.mount,
        "--volume",
        ext4.mount,
        "--",
        "sh",
        "-c",
        script,
        "sh",
        "{shadow}",
        "{shadow:1}",
    )
    assert done.returncode == 7
    set_id, root, second, volume1, arg1, arg2 = report.read_text().strip().split("|")
    assert set_id and root == arg1 and root.startswith(f"{btrfs.mount}/.shadowvault/")
    assert volume1 == str(ext4.mount)
    assert second == arg2 and second.startswith(os.environ["SHADOWVAULT_STATE_DIR"] + "/fanotify/")  # ext4


def test_exec_command_not_found_is_127_and_one_line(btrfs, cli):
    done = cli("exec", "--volume", btrfs.mount, "--", "no-such-program-xyz", "arg")
    assert done.returncode == 127
    assert done.stderr == "shadowvault: error: no-such-program-xyz: command not found\n"
    assert ShadowStore().list() == []


def test_cli_refuses_a_path_that_is_not_a_mount_point(xfs, cli):
    (xfs.mount / "sub").mkdir()
    done = cli(
        "shadows", "create", "--volume", xfs.mount / "sub", "--writer", "fsfreeze", "--provider", "live"
    )
    assert done.returncode == 2
    assert (
        done.stderr == f"shadowvault: error: {xfs.mount}/sub is not a mount point (it lies on the volume "
        f"mounted at {xfs.mount})\n"
    )
    assert write_completes(xfs.mount)


def test_cli_refuses_a_volume_that_does_not_exist(tmp_path, cli):
    done = cli("exec", "--volume", tmp_path / "nope", "--", "true")
    assert done.returncode == 1
    assert done.stderr == f"shadowvault: error: {tmp_path}/nope: no such file or directory\n"


def test_cli_refuses_to_freeze_the_root_filesystem(cli):
    done = cli("shadows", "create", "--volume", "/", "--writer", "fsfreeze", "--provider", "live")
    assert done.returncode == 2
    assert "refusing to freeze /: it holds the root filesystem" in done.stderr
    assert done.stderr.count("\n") == 1


NON_ROOT_FREEZE = textwrap.dedent(
    """
    import os, sys
    # Everything the command needs is imported while still root: the interpreter lives under /root.
    import shadowvault.cli.main as main
    main.load_command("shadows")  # commands are imported when used: this one now, as root
    import shadowvault.client  # the daemon probe (http.client), imported when the command asks
    import shadowvault.shadow.coordinator, shadowvault.shadow.store
    import shadowvault.shadow.providers.registry, shadowvault.shadow.writers.registry
    import shadowvault.shadow.writers.fsfreeze, shadowvault.shadow.writers.sqlite
    os.setegid(65534)
    os.seteuid(65534)
    sys.argv = ["shadowvault", "shadows", "create", "--volume", sys.argv[1], "--writer", "fsfreeze",
                "--provider", "live"]
    main.main()
    """
)


def test_non_root_user_asking_to_freeze_gets_one_line(xfs, tmp_path):
    state = xfs.mount.parent / "state"  # beside the fixture's image: a directory the user can reach
    state.mkdir(mode=0o777)
    state.chmod(0o1777)
    xfs.mount.parent.chmod(0o755)  # the fixture's own directory: let the user reach the mount point
    config = xfs.mount.parent / "config"  # a configuration directory the user may read, as /etc's is
    config.mkdir(mode=0o755)
    done = subprocess.run(
        [sys.executable, "-c", NON_ROOT_FREEZE, str(xfs.mount)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SHADOWVAULT_STATE_DIR": str(state), "SHADOWVAULT_CONFIG_DIR": str(config)},
        cwd="/",
    )
    assert done.returncode == 1
    assert done.stderr == (
        "shadowvault: error: writer fsfreeze failed at prepare_backup: freezing a filesystem needs root "
        "(CAP_SYS_ADMIN); run as root or leave out --writer fsfreeze\n"
    )
    assert write_completes(xfs.mount)


def test_shadows_create_keeps_a_persistent_set_and_prints_it(btrfs, cli):
    db = prepare(btrfs.mount)
    done = cli("shadows", "create", "--volume", btrfs.mount, "--writer", f"sqlite:{db}")
    assert done.returncode == 0, done.stderr
    [stored] = ShadowStore().list()
    assert stored.persistent and stored.state == "created"
    assert f"shadow set {stored.id}" in done.stdout and "freeze window:" in done.stdout
    assert stored.shadows[0].path in done.stdout and "application" in done.stdout
    assert rows(Path(stored.shadows[0].path) / "app.db") == 100
    ShadowStore().release(stored.id)


def test_shadows_create_auto_release_keeps_nothing(btrfs, cli):
    done = cli("shadows", "create", "--volume", btrfs.mount, "--auto-release", "--json")
    assert done.returncode == 0, done.stderr
    assert '"state":"released"' in done.stdout and '"freeze_window":' in done.stdout
    assert ShadowStore().list() == [] and leftover_shadows(btrfs.mount) == []
    told = cli("shadows", "create", "--volume", btrfs.mount, "--auto-release")
    assert told.returncode == 0, told.stderr
    assert told.stdout.splitlines()[0].endswith("(released)"), told.stdout  # not "released, persistent"
    assert '"persistent":false' in done.stdout
    assert ShadowStore().list() == [] and leftover_shadows(btrfs.mount) == []
