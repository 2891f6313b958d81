"""Waiting on a daemon's run in a test: its end within BOUND, a bound that catches a hang and is
never a timing asserted, and what a cancelled run must report."""

from __future__ import annotations

import time
from typing import Any

from shadowvault.client import Client
from shadowvault.service.runs import FINISHED

BOUND = 120.0  # seconds a run (a cancelled one too) may take to end: a hang, not a timing


def ended(client: Client, run_id: str) -> dict[str, Any]:
    """The run's report once it has finished; fails the test past BOUND."""
    deadline = time.monotonic() + BOUND
    while (report := client.run(run_id))["state"] not in FINISHED:
        assert time.monotonic() < deadline, f"the run did not end within {BOUND:g} s: {report}"
        time.sleep(0.1)
    return report


def assert_cancelled(report: dict[str, Any]) -> None:
    """A run that a cancel ended: state, error kind and exit status as the API documents them, and
    no result (a cancelled run has no summary)."""
    assert (report["state"], report["error_kind"], report["exit_status"]) == (
        "cancelled",
        "JobCancelledError",
        130,
    ), report
    assert report["result"] is None, "a cancelled run has no summary"
