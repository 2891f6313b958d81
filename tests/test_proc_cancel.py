"""A command of a run that is cancelled meanwhile is stopped with its children: SIGTERM, then SIGKILL
once the grace period has passed; a command started once the run is cancelled is cleanup and runs.
Real processes; each records its pid so that the test can see it gone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from shadowvault import cancellation, proc
from shadowvault.cancellation import Cancellation
from shadowvault.errors import CommandError, JobCancelledError
from tests.fixtures.servers import process_alive

# a shell that starts a child and waits; `trap '' TERM` makes both deaf to SIGTERM
DEAF = "trap '' TERM; sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait"
POLITE = "sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait"


def _gone(*pids: int) -> bool:
    """Whether the processes have ended: a SIGKILLed process may take a moment to exit (its pages
    freed, its parent told), so this waits for that, within a bound that only catches a survivor."""
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cancel_once_started(run: Cancellation, pids: Path) -> threading.Thread:
    def cancel() -> None:
        deadline = time.monotonic() + 60
        while not (pids.exists() and len(pids.read_text().split()) == 2):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        run.cancel("run 7 was cancelled")

    thread = threading.Thread(target=cancel)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("runner", "script"),
    [("run", POLITE), ("run", DEAF), ("run_group", POLITE), ("run_group", DEAF)],
)
def test_a_cancel_stops_a_command_and_its_children(tmp_path, monkeypatch, runner, script):
    monkeypatch.setattr(proc, "TERM_GRACE", 1.0)
    pids = tmp_path / "pids"
    run = Cancellation()
    canceller = _cancel_once_started(run, pids)
    started = time.monotonic()
    with cancellation.scope(run), pytest.raises(JobCancelledError, match="run 7 was cancelled"):
        getattr(proc, runner)(["sh", "-c", script.format(pids=pids)], timeout=600)
    canceller.join()
    assert time.monotonic() - started < 120, "stopped long before the command's own end"
    child, shell = (int(p) for p in pids.read_text().split())
    assert _gone(shell, child), "nothing of the command is left running"


def test_a_command_started_once_its_run_is_cancelled_is_cleanup_and_runs_to_its_end():
    run = Cancellation()
    run.cancel()
    with cancellation.scope(run):
        assert proc.output(["sh", "-c", "sleep 0.5; echo unmounted"]) == "unmounted\n"
        assert proc.run_group(["sh", "-c", "sleep 0.5; echo thawed"], timeout=60).stdout == b"thawed\n"


def test_outside_a_run_a_command_is_as_before():
    assert cancellation.current() is None
    done = proc.run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"err\n")


def test_a_command_of_a_run_that_times_out_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    with cancellation.scope(Cancellation()), pytest.raises(CommandError, match="timed out after 1 s"):
        proc.run(["sh", "-c", POLITE.format(pids=pids)], timeout=1)
    child, shell = (int(p) for p in pids.read_text().split())
    assert _gone(shell, child)
