"""A component restore cancelled in the daemon while it lays the component's files down: it stops
before its plan is applied, so the target root is as it was, and its staging directory is gone.

A real daemon restores the `files` component into a target root on a loop ext4 filesystem, which
the test freezes once some files are staged, so that the cancel lands midway whatever the
machine's speed (the restore waits in a write; the cancel comes; the filesystem thaws).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from shadowvault.client import Client
from shadowvault.service.runs import FINISHED
from tests.archive.helpers import PASSWORD
from tests.components.roots import make_root
from tests.fixtures.loopfs import frozen
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled, ended
from tests.writers.test_restore_cli import repo_env

FILES = 1000  # files of the component, of SIZE random bytes each
SIZE = 16 << 10


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry below `root`: relative path -> (mode, size)."""
    found = {}
    for directory, dirnames, names in os.walk(root):
        for name in dirnames + names:
            st = os.lstat(Path(directory) / name)
            found[os.path.relpath(Path(directory) / name, root)] = (st.st_mode, st.st_size)
    return found


def _staged(root: Path) -> int:
    return sum(len(names) for d, _, names in os.walk(root) if ".shadowvault-staging-" in d)


def test_a_component_restore_cancelled_while_staging_leaves_the_target_root_as_it_was(
    ext4, tmp_path: Path, cli
) -> None:
    source = make_root(tmp_path / "old")
    data = source / "srv" / "data"
    data.mkdir(parents=True)
    for i in range(FILES):
        (data / f"f{i:04}").write_bytes(os.urandom(SIZE))
    env = {**repo_env(tmp_path / "repo"), "SHADOWVAULT_NO_DAEMON": "1"}
    done = cli("backup", "--json", "--component", "files", "--source-root", source, "/srv/data", env=env)
    assert done.returncode == 0, done.stderr
    snapshot = [json.loads(line) for line in done.stdout.splitlines()][-1]["snapshot_id"]
    target = make_root(ext4.mount / "root")
    before = _tree(target)
    restore = {"snapshot": snapshot, "component": "files", "options": {"target_root": str(target)}}
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_component_restore(env["SHADOWVAULT_REPOSITORY"], restore, password=PASSWORD)
        deadline = time.monotonic() + BOUND
        while _staged(target) <= 2:
            assert client.run(run["id"])["state"] not in FINISHED, client.run(run["id"])
            assert time.monotonic() < deadline, "the files were never being staged"
            time.sleep(0.005)
        with frozen(ext4.mount):
            assert client.run(run["id"])["state"] == "running"
            assert client.cancel_run(run["id"])["state"] == "cancelling"
        assert_cancelled(ended(client, run["id"]))
        assert _tree(target) == before, "no file of the component, no staging directory"
