"""The watchdog: a separate process thaws everything when the coordinator dies or runs out of time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from shadowvault.errors import ShadowError
from shadowvault.shadow import events
from shadowvault.shadow.coordinator import SetOptions, create_shadow_set
from shadowvault.shadow.watchdog import Watchdog
from shadowvault.shadow.writers.base import RunCommand
from tests.fixtures.loopfs import thaw_quietly
from tests.shadow.frozen_probe import is_blocked, start_write, write_completes
from tests.shadow.test_writers import write_config, write_script

HANGING_COORDINATOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shadowvault.shadow.coordinator import SetOptions, create_shadow_set
    from shadowvault.shadow.providers.live import LiveProvider

    class HangingProvider(LiveProvider):
        name = "hanging"
        def create(self, volume, set_id, index, *scope):
            Path(sys.argv[2]).write_text("committing")  # not on the frozen filesystem
            time.sleep(3600)

    options = SetOptions(writers=["fsfreeze", "script:hold"], provider=HangingProvider(),
                         freeze_timeout=3600, commit_timeout=3600)
    create_shadow_set([sys.argv[1]], options)
    """
)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sigkilled_coordinator_is_thawed_by_the_watchdog(private_dirs, xfs, tmp_path):
    held = tmp_path / "app-held"
    write_config(
        private_dirs / "config",
        "hold",
        f'freeze = ["{write_script(tmp_path / "freeze.sh", f"touch {held}")}"]\n'
        f'thaw = ["{write_script(tmp_path / "thaw.sh", f"rm -f {held}")}"]\n',
    )
    committing = tmp_path / "committing"
    script = tmp_path / "coordinator.py"
    script.write_text(HANGING_COORDINATOR)
    child = subprocess.Popen(
        [sys.executable, str(script), str(xfs.mount), str(committing)], start_new_session=True
    )
    blocked = None
    try:
        assert wait_for(committing.exists), "the coordinator never reached the commit"
        assert held.exists(), "the script writer did not hold the application"
        blocked = start_write(xfs.mount)
        assert is_blocked(blocked), "the filesystem is not frozen during the commit"
        os.killpg(child.pid, signal.SIGKILL)  # the coordinator and its whole process group
        child.wait(timeout=10)
        assert blocked.wait(timeout=20) == 0, "the watchdog did not thaw the filesystem"
        assert wait_for(lambda: not held.exists(), 20), "the watchdog did not run the script's thaw"
        assert write_completes(xfs.mount)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        thaw_quietly(xfs.mount)
        if blocked is not None and blocked.poll() is None:
            blocked.wait(timeout=20)


def test_interrupted_coordinator_releases_everything_itself(private_dirs, xfs, tmp_path):
    held = tmp_path / "app-held"
    write_config(
        private_dirs / "config",
        "hold",
        f'freeze = ["{write_script(tmp_path / "freeze.sh", f"touch {held}")}"]\n'
        f'thaw = ["{write_script(tmp_path / "thaw.sh", f"rm -f {held}")}"]\n',
    )
    committing = tmp_path / "committing"
    script = tmp_path / "coordinator.py"
    script.write_text(HANGING_COORDINATOR)
    child = subprocess.Popen(
        [sys.executable, str(script), str(xfs.mount), str(committing)],
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(committing.exists), "the coordinator never reached the commit"
        os.kill(child.pid, signal.SIGINT)  # Ctrl-C
        _, stderr = child.communicate(timeout=30)
        assert child.returncode != 0 and "KeyboardInterrupt" in stderr
        assert not held.exists()
        assert write_completes(xfs.mount)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        thaw_quietly(xfs.mount)


def test_watchdog_firing_at_its_deadline_aborts_the_set(private_dirs, xfs, tmp_path, monkeypatch):
    held = tmp_path / "app-held"
    freeze = write_script(tmp_path / "freeze.sh", f"sleep 2; touch {held}")
    thaw = write_script(tmp_path / "thaw.sh", f"rm -f {held}")
    write_config(
        private_dirs / "config", "sluggish", f'freeze = ["{freeze}"]\nthaw = ["{thaw}"]\ntimeout = 5\n'
    )
    # A deadline 0.5 s after the start (10 s + 10 s + 5 s of thaw + grace): before our own timeouts.
    monkeypatch.setattr(events, "WATCHDOG_GRACE", -24.5)
    with pytest.raises(
        ShadowError, match="the watchdog released the set at its deadline during freeze"
    ) as caught:
        create_shadow_set(
            [str(xfs.mount)],
            SetOptions(
                writers=["script:sluggish", "fsfreeze"], provider="live", freeze_timeout=10, commit_timeout=10
            ),
        )
    assert caught.value.manifest.state == "aborted"
    assert not held.exists()
    assert write_completes(xfs.mount)


def test_watchdog_told_thawed_does_nothing(tmp_path):
    marker = tmp_path / "ran"
    watchdog = Watchdog.start([RunCommand(argv=["touch", str(marker)])], time.monotonic() + 60)
    watchdog.thawed()
    assert watchdog.child.returncode == 0
    assert not marker.exists()


def test_watchdog_acts_when_its_coordinator_dies(tmp_path):
    marker = tmp_path / "ran"
    stand_in = subprocess.Popen(["sleep", "60"])  # plays the coordinator
    watchdog = Watchdog.start(
        [RunCommand(argv=["touch", str(marker)])], time.monotonic() + 600, pid=stand_in.pid
    )
    stand_in.kill()
    stand_in.wait()
    assert wait_for(marker.exists, 20)
    watchdog.child.wait(timeout=20)
