"""A restore through a writer cancelled in the daemon: never inside pre_restore or post_restore; stopped
while the files are laid down (each file whole or absent), the application is left as pre_restore
left it, and the run's error says so.

A real daemon runs an external writer (a script with the writer SDK) whose pre_restore waits until
the test says go: the cancel comes while pre_restore runs, which must finish all the same; then the
files are laid down into a loop ext4 filesystem, which the test freezes once some are there, so
that the cancel of the second case lands midway whatever the machine's speed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shadowvault.client import Client
from shadowvault.service.runs import FINISHED
from tests.archive.helpers import PASSWORD, whole_files
from tests.fixtures.loopfs import frozen
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled, ended
from tests.writers.test_external import processes_running
from tests.writers.test_restore_cli import backup, repo_env

FILES = 1000  # files of the writer's component, of SIZE random bytes each
SIZE = 16 << 10

GATED_WRITER = """
from shadowvault import writer_sdk as sdk
import os, time

class W(sdk.Writer):
    def identify(self, req):
        return [{"name": "data", "paths": [self.config["data"]],
                 "restore_method": "restore_to_alternate_location"}]

    def freeze(self, req):
        pass

    def thaw(self, req):
        pass

    def _log(self, what):
        with open(self.config["log"], "a") as f:
            f.write(what + "\\n")

    def pre_restore(self, req):
        self._log("pre_restore started")
        while not os.path.exists(self.config["go"]):  # the application takes its time to stop
            time.sleep(0.01)
        self._log("pre_restore done")

    def post_restore(self, req):
        self._log("post_restore")

sdk.run(W)
"""


@dataclass
class Gated:
    """A snapshot of the writer `app` (FILES files in `app`), which the script `writer` answers for:
    it logs its restore events to `log`, and its pre_restore waits for the file `go`."""

    repo: str
    snapshot: str
    app: Path
    writer: Path
    log: Path
    go: Path


@pytest.fixture
def gated(btrfs, tmp_path: Path, private_dirs: Path, cli) -> Iterator[Gated]:
    app = btrfs.mount / "app"
    app.mkdir()
    for i in range(FILES):
        (app / f"f{i:04}").write_bytes(os.urandom(SIZE))
    writer = tmp_path / "gated_writer.py"
    writer.write_text(GATED_WRITER)
    log, go = tmp_path / "restore.log", tmp_path / "go"
    config = private_dirs / "config" / "writers.d" / "app.toml"
    config.write_text(
        f'type = "external"\ncommand = ["{sys.executable}", "{writer}"]\npaths = ["{app}"]\n'
        f'[timeouts]\npre_restore = {BOUND}\n[options]\ndata = "{app}"\nlog = "{log}"\ngo = "{go}"\n'
    )
    config.chmod(0o644)
    env = repo_env(tmp_path / "repo")
    snapshot = backup(cli, {**env, "SHADOWVAULT_NO_DAEMON": "1"}, "app", app)
    yield Gated(env["SHADOWVAULT_REPOSITORY"], snapshot, app, writer, log, go)
    go.touch()  # whatever failed: the writer's pre_restore ends


def _until(seen: Callable[[], bool], client: Client, run: dict[str, Any], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not seen():
        assert client.run(run["id"])["state"] not in FINISHED, client.run(run["id"])
        assert time.monotonic() < deadline, f"{what} was never seen"
        time.sleep(0.005)


def _files_below(root: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(root) for n in names]


@pytest.mark.parametrize("when", ["in pre_restore", "laying files down"])
def test_a_writer_restore_cancelled_stops_between_pre_and_post_restore_and_says_so(
    gated: Gated, ext4, when: str
) -> None:
    target = ext4.mount / "restored"
    restored = target / str(gated.app).lstrip("/")
    order = {"request": {"snapshot": gated.snapshot, "target_root": str(target)}}
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_writer_restore(gated.repo, order, password=PASSWORD)
        _until(
            lambda: gated.log.exists() and "pre_restore started" in gated.log.read_text(),
            client,
            run,
            "pre_restore",
        )
        if when == "in pre_restore":
            assert client.cancel_run(run["id"])["state"] == "cancelling"
            assert processes_running(gated.writer), "the writer is not stopped inside pre_restore"
            assert client.run(run["id"])["state"] == "cancelling", "the run waits for pre_restore to end"
            gated.go.touch()
        else:
            gated.go.touch()
            _until(lambda: len(_files_below(restored)) > 2, client, run, "files laid down")
            with frozen(ext4.mount):
                assert client.run(run["id"])["state"] == "running"
                assert client.cancel_run(run["id"])["state"] == "cancelling"
        report = ended(client, run["id"])
        assert_cancelled(report)
        assert "writer external:app are partly restored" in report["error"], report["error"]
        assert "its application is left as pre_restore left it" in report["error"], report["error"]
        assert gated.log.read_text().splitlines() == ["pre_restore started", "pre_restore done"], (
            "no post_restore"
        )
        deadline = time.monotonic() + BOUND
        while processes_running(gated.writer):  # its input closed: it ends, without an event
            assert time.monotonic() < deadline, "the writer process is left"
            time.sleep(0.05)
    laid = whole_files(restored, gated.app) if restored.exists() else 0
    assert laid < FILES, "the restore stopped before its end"
    if when == "in pre_restore":
        assert laid == 0, "the cancel came before any file"
    assert list(target.rglob(".svtmp-*")) == [], "no temporary file is left"
