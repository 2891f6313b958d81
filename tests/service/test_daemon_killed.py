"""The daemon SIGKILLed mid-freeze: the watchdog thaws the filesystem, and a new daemon starts cleanly.

The set has two writers: a writers.d script writer standing for an application whose quiesce
freezes the filesystem and then holds (it never returns while the daemon lives), and fsfreeze, so the
watchdog holds a descriptor of the volume to thaw. The daemon is killed while the script holds; what
brings the filesystem back is the watchdog's thaw, not the test and not the script's thaw command
(which only ends the hold). Whether the filesystem is frozen is only ever tried from a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shadowvault.client import Client
from tests.fixtures.loopfs import LoopFs, thaw_quietly
from tests.fixtures.tools import require_tools
from tests.service.daemon import running_daemon
from tests.shadow.frozen_probe import is_blocked, start_write, write_completes
from tests.shadow.test_writers import write_config, write_script

PROJECT = Path(__file__).resolve().parents[2]
LIMIT = 60.0  # a generous bound on each wait for a condition (never a timing)

REQUESTER = """
import sys
from shadowvault.client import Client
from shadowvault.errors import ShadowvaultError
try:
    Client(sys.argv[1]).create_shadow_set(
        [sys.argv[2]], writers=["script:hold", "fsfreeze"], provider="live",
        auto_writers=False, freeze_timeout=300,
    )
except ShadowvaultError as err:
    print(err)
    sys.exit(3)
"""


def _wait_for(condition, limit: float = LIMIT) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _hold_writer(config_dir: Path, records: Path, mount: Path) -> None:
    """writers.d `hold`: its freeze freezes `mount` and holds (pid recorded); its thaw ends the hold."""
    fsfreeze = shutil.which("fsfreeze")
    freeze = write_script(
        records / "hold-freeze.sh",
        f"echo $$ > {records}/hold.pid\n{fsfreeze} --freeze {mount}\ntouch {records}/frozen\nexec sleep 600",
    )
    thaw = write_script(records / "hold-thaw.sh", f"kill $(cat {records}/hold.pid)\ntouch {records}/thawed")
    write_config(config_dir, "hold", f'freeze = ["{freeze}"]\nthaw = ["{thaw}"]\ntimeout = 900\n')


def _end_hold(records: Path) -> None:
    """Kill the hold's `sleep` if it still runs (the test failed before the watchdog ended it)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int((records / "hold.pid").read_text())
        if b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def test_daemon_killed_mid_freeze_is_thawed_by_the_watchdog_and_restarts_cleanly(
    private_dirs, btrfs: LoopFs, tmp_path
):
    require_tools("fsfreeze")
    records = tmp_path
    _hold_writer(private_dirs / "config", records, btrfs.mount)
    requester = blocked = None
    try:
        with running_daemon() as first:
            try:
                requester = subprocess.Popen(
                    [sys.executable, "-c", REQUESTER, str(first.socket), str(btrfs.mount)],
                    cwd=PROJECT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert _wait_for((records / "frozen").exists), f"the set never froze:\n{first.log_text()}"
                blocked = start_write(btrfs.mount)
                assert is_blocked(blocked), "the filesystem is not frozen while the daemon makes the set"

                first.process.send_signal(signal.SIGKILL)
                first.process.wait(timeout=LIMIT)
                assert blocked.wait(timeout=LIMIT) == 0, "the watchdog did not thaw the filesystem"
                assert _wait_for((records / "thawed").exists), "the watchdog did not run the writer's thaw"
                out, _ = requester.communicate(timeout=LIMIT)
                assert requester.returncode != 0, out
            finally:
                if first.process.poll() is None:  # failed before the kill: the watchdog thaws now
                    first.process.kill()
                    first.process.wait()
        assert write_completes(btrfs.mount, wait=LIMIT)

        (private_dirs / "config" / "writers.d" / "hold.toml").unlink()
        with running_daemon() as second, Client(second.socket) as client:
            assert client.shadow_sets() == [], "a set of the killed daemon is still listed"
            assert "released shadow set(s) of ended requesters" in second.log_text()
            manifest = client.create_shadow_set([str(btrfs.mount)], provider="btrfs", auto_writers=False)
            assert manifest["state"] == "created"
            (shadow,) = manifest["shadows"]
            assert Path(shadow["path"]).is_dir()
            client.delete_shadow_set(manifest["id"])
            assert client.shadow_sets() == []
            assert second.stop() == 0
    finally:
        thaw_quietly(btrfs.mount)  # only matters when the test failed before the watchdog thawed
        _end_hold(records)
        for child in (requester, blocked):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait(timeout=LIMIT)
