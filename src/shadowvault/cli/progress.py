"""Progress of a long command: JSON status lines with --json, a live status line on a terminal."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shadowvault.cli.output import print_json, quiet

STATUS_INTERVAL = 1.0  # seconds between JSON status lines
REFRESH = 0.25  # seconds between terminal updates


def shown(as_json: bool) -> bool:
    """Whether `progress` shows anything: JSON status lines, or a live line on a terminal."""
    return not quiet() and (as_json or sys.stderr.isatty())


@contextmanager
def progress(
    status: Callable[[], dict[str, Any]],
    line: Callable[[dict[str, Any]], str],
    as_json: bool,
    *,
    final: bool = False,
) -> Iterator[None]:
    """While the block runs: `status()` as a JSON line on stdout every second with --json; `line(status())`
    as a transient line on stderr when stderr is a terminal; nothing otherwise (logs, pipes). With
    `final`, a last JSON status when the block completes (the figures it ended with, however short).
    Under --quiet nothing at all."""
    if not shown(as_json):
        yield
        return
    stop = threading.Event()
    if as_json:

        def report() -> None:
            while not stop.wait(STATUS_INTERVAL):
                print_json(status())

        live = None
    else:
        from rich.console import Console
        from rich.live import Live

        live = Live(line(status()), console=Console(stderr=True), refresh_per_second=4, transient=True)
        live.start()

        def report() -> None:
            while not stop.wait(REFRESH):
                live.update(line(status()))

    thread = threading.Thread(target=report, name="sv-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if live is not None:
            live.stop()
    if as_json and final:
        print_json(status())
