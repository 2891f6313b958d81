"""A persistent shadow that went bad, through the daemon and in process: listed INVALID with why,
never exposed, and deleted without a trace.

A fanotify shadow on loop ext4 goes bad on this host as it would in the field: its listener process
is killed. Before that, a shadow whose provider cannot tell (its `.invalid` marker unreadable) is
not marked, listed with a warning (the same through the daemon), and not exposed. Real daemon, real
CLI processes, real listener and FUSE view.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shadowvault.client import Client
from shadowvault.errors import ShadowError
from shadowvault.shadow.providers.fanotify import base_dir
from shadowvault.shadow.providers.fanotify_listener import INVALID_SUFFIX
from shadowvault.shadow.providers.fanotify_process import listener_alive
from shadowvault.shadow.store import ShadowStore
from tests.service.daemon import running_daemon

STOPPED = re.compile(
    r"the fanotify listener of (\S+) has stopped: its shadow no longer holds the point in time"
)
UNCHECKED = "cannot be checked: Is a directory"
BOUND = 60.0  # seconds a killed listener may take to be gone: a hang, not a timing


def _mounted_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    return [m for m in mounts if m == str(path) or m.startswith(f"{path}/")]


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("shadowvault: error: "), stderr
    return lines[0]


@contextmanager
def _mode(no_daemon: bool) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """The CLI's flags and environment, and where exposures go (the private directory of root)."""
    if no_daemon:
        base = Path(os.environ["SHADOWVAULT_STATE_DIR"]) / "sock"
        env = {"SHADOWVAULT_SOCKET": str(base / "api.sock")}
        yield ["--no-daemon"], env, base / "exposed"
    else:
        with running_daemon() as daemon:
            env = {"SHADOWVAULT_SOCKET": str(daemon.socket)}
            yield [], env, daemon.socket.parent / "exposed"


@pytest.mark.parametrize("no_daemon", [False, True], ids=["daemon", "in-process"])
def test_a_shadow_whose_listener_was_killed_is_listed_invalid_never_exposed_and_deleted_cleanly(
    ext4, cli, no_daemon: bool
):
    (ext4.mount / "data.txt").write_text("at the instant\n")
    with _mode(no_daemon) as (flags, env, exposed):

        def shadows(*args: str) -> Any:
            return cli(*flags, "shadows", *args, env=env)

        made = shadows(
            "create", "--volume", str(ext4.mount), "--provider", "fanotify", "--persistent", "--json"
        )
        assert made.returncode == 0, made.stderr
        set_id = json.loads(made.stdout)["id"]
        try:
            [shadow] = ShadowStore().load(set_id).shadows
            view = Path(shadow.path)
            assert listener_alive(shadow) and (view / "data.txt").read_text() == "at the instant\n"

            # The provider cannot tell: the set is not marked, a listing warns, an exposure is refused.
            os.mkdir(f"{view}{INVALID_SUFFIX}")
            warning = f"shadowvault: warning: the fanotify shadow of {ext4.mount} {UNCHECKED}"
            listed = shadows("list", "--json")
            assert listed.returncode == 0, listed.stderr
            assert [s["invalid"] for s in json.loads(listed.stdout)[0]["shadows"]] == [""]
            as_json = {"message_type": "warning", "message": warning.removeprefix("shadowvault: warning: ")}
            assert [json.loads(line) for line in listed.stderr.splitlines()] == [as_json]
            text = shadows("list")
            assert text.returncode == 0 and text.stderr.splitlines() == [warning], text.stderr
            assert "INVALID" not in text.stdout
            if not no_daemon:
                with Client(env["SHADOWVAULT_SOCKET"]) as client:
                    assert client.shadow_set(set_id)["warnings"] == [warning.split("warning: ", 1)[1]]
            refused = shadows("expose", set_id)
            assert refused.returncode == ShadowError.exit_code
            assert UNCHECKED in _one_error_line(refused.stderr)
            assert _mounted_below(exposed) == []
            os.rmdir(f"{view}{INVALID_SUFFIX}")

            # The listener dies: the shadow is invalid for good.
            os.kill(shadow.provider_data["listener_pid"], signal.SIGKILL)
            deadline = time.monotonic() + BOUND
            while listener_alive(shadow):
                assert time.monotonic() < deadline, "the killed listener is still there"
                time.sleep(0.01)
            listed = shadows("list", "--json")
            assert listed.returncode == 0, listed.stderr
            [document] = json.loads(listed.stdout)
            [reason] = [s["invalid"] for s in document["shadows"]]
            stopped = STOPPED.fullmatch(reason)
            assert stopped and stopped.group(1) == str(ext4.mount), reason
            assert listed.stderr == "", "nothing unchecked any more"
            assert ShadowStore().load(set_id).shadows[0].invalid == reason, "marked in the store"
            text = shadows("list")
            assert text.returncode == 0, text.stderr
            assert f"shadow of {ext4.mount} (fanotify, INVALID: {reason}): {view}" in text.stdout
            if not no_daemon:
                with Client(env["SHADOWVAULT_SOCKET"]) as client:
                    got = client.shadow_set(set_id)
                    assert (got["shadows"][0]["invalid"], got["warnings"]) == (reason, [])
            refused = shadows("expose", set_id)
            assert refused.returncode == ShadowError.exit_code
            line = _one_error_line(refused.stderr)
            assert line == f"shadowvault: error: cannot expose the shadow of {ext4.mount}: {reason}", line
            assert _mounted_below(exposed) == [], "no exposure was mounted"

            deleted = shadows("delete", set_id)
            assert deleted.returncode == 0, deleted.stderr
            assert json.loads(shadows("list", "--json").stdout) == []
            pid = shadow.provider_data["listener_pid"]
            deadline = time.monotonic() + BOUND
            while Path(f"/proc/{pid}").exists():  # reaped by whoever it belongs to, not left a zombie
                assert time.monotonic() < deadline, (
                    f"the listener is left: {Path(f'/proc/{pid}/stat').read_text()}"
                )
                time.sleep(0.01)
        finally:  # whatever failed: no listener, view or exposure outlives the test
            with contextlib.suppress(Exception):
                ShadowStore().release(set_id)
    assert _mounted_below(Path(base_dir())) == [], "the view is unmounted"
    assert os.listdir(base_dir()) == [], "no view, saved ranges, record or log is left"
    assert list(ShadowStore().root.glob(f"{set_id}*")) == [], "no record of the set or its exposures"


@pytest.mark.parametrize("no_daemon", [False, True], ids=["daemon", "in-process"])
def test_the_exposure_of_a_shadow_that_goes_bad_is_unmounted_by_the_next_listing(ext4, cli, no_daemon: bool):
    (ext4.mount / "data.txt").write_text("at the instant\n")
    with _mode(no_daemon) as (flags, env, exposed):

        def shadows(*args: str) -> Any:
            return cli(*flags, "shadows", *args, env=env)

        made = shadows(
            "create", "--volume", str(ext4.mount), "--provider", "fanotify", "--persistent", "--json"
        )
        assert made.returncode == 0, made.stderr
        set_id = json.loads(made.stdout)["id"]
        try:
            [shadow] = ShadowStore().load(set_id).shadows
            shown = shadows("expose", set_id, "--json")
            assert shown.returncode == 0, shown.stderr
            at = Path(json.loads(shown.stdout)["at"])
            assert (at / "data.txt").read_text() == "at the instant\n"

            os.kill(shadow.provider_data["listener_pid"], signal.SIGKILL)
            deadline = time.monotonic() + BOUND
            while listener_alive(shadow):
                assert time.monotonic() < deadline, "the killed listener is still there"
                time.sleep(0.01)
            listed = shadows("list", "--json")

            assert listed.returncode == 0 and listed.stderr == "", listed.stderr
            [document] = json.loads(listed.stdout)
            assert STOPPED.fullmatch(document["shadows"][0]["invalid"]), document
            assert document["exposures"] == [], "nobody reads the bad image through it any more"
            assert _mounted_below(exposed) == [] and not at.exists()
        finally:
            with contextlib.suppress(Exception):
                ShadowStore().release(set_id)
