"""The daemon's API against in process: creating and deleting a shadow set, and 50 clients at once.

    .venv/bin/python bench/api.py [--reps 20] [--clients 50] [--calls 20] [--sets 5]

On a btrfs loop filesystem made here (always torn down, that one loop device detached), with private
state and config directories, and a daemon started here on a socket in a temporary directory
(stopped by its PID at the end):
  (a) create + delete one shadow set, `--reps` times each way, alternating: through the API
      (shadowvault.client, one connection) and in process (coordinator.create_shadow_set, then
      ShadowStore().release). First with provider btrfs and no automatic writers, so that what
      differs is the plumbing alone; then with the defaults (provider auto, automatic writers).
  (b) `--clients` client processes, each with its own connection, list the shadow sets `--calls`
      times, all at once (with `--sets` persistent sets to list): calls/s over all, and the
      latency of one call, median, p90 and max; and, for reference, one client listing alone.
Goal (issue 11): through the API at most 10 ms more than in process (median). Needs root.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.loopfs import loop_filesystem
from tests.service.daemon import running_daemon

from shadowvault.client import Client
from shadowvault.shadow.coordinator import create_shadow_set
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.store import ShadowStore

GOAL_MS = 10.0
MS = 1000.0
WARMUP = 2  # first sets of each way, not counted (imports, caches, the first connection)


@dataclass(frozen=True)
class Scenario:
    """One way of asking for a set: the same options through the API and in process."""

    name: str
    provider: str
    auto_writers: bool


SCENARIOS = (
    Scenario("btrfs, no automatic writers", "btrfs", False),
    Scenario("defaults: auto provider, auto writers", "auto", True),
)


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def through_api(client: Client, volume: str, scenario: Scenario) -> None:
    made = client.create_shadow_set([volume], provider=scenario.provider, auto_writers=scenario.auto_writers)
    client.delete_shadow_set(made["id"])


def in_process(volume: str, scenario: Scenario) -> None:
    # the same options the daemon's handler passes (backup_type copy: nothing is backed up)
    options = SetOptions(provider=scenario.provider, auto_writers=scenario.auto_writers, backup_type="copy")
    ShadowStore().release(create_shadow_set([volume], options).id)


def create_delete(
    socket: Path, volume: str, scenario: Scenario, reps: int
) -> tuple[list[float], list[float]]:
    """Seconds per create + delete, through the API and in process, alternating."""
    api, local = [], []
    with Client(socket, timeout=120) as client:
        for i in range(WARMUP + reps):
            a = timed(lambda: through_api(client, volume, scenario))
            b = timed(lambda: in_process(volume, scenario))
            if i >= WARMUP:
                api.append(a)
                local.append(b)
    return api, local


def _lister(socket: str, calls: int, start: Any, out: Any) -> None:
    """One client process: connect, wait for the others, list `calls` times; (start, end, latencies)."""
    with Client(socket, timeout=300) as client:
        client.shadow_sets()  # the connection is open before the clock starts
        start.wait()
        began = time.monotonic()
        latencies = [timed(client.shadow_sets) for _ in range(calls)]
        out.put((began, time.monotonic(), latencies))


def many_listers(socket: Path, clients: int, calls: int) -> tuple[float, list[float]]:
    """Calls per second over all clients, and every call's latency."""
    fork = multiprocessing.get_context("fork")
    start, out = fork.Barrier(clients), fork.Queue()
    workers = [fork.Process(target=_lister, args=(str(socket), calls, start, out)) for _ in range(clients)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    if failed:
        raise SystemExit(f"{len(failed)} client process(es) failed")
    wall = max(end for _, end, _ in results) - min(began for began, _, _ in results)
    latencies = [latency for _, _, lat in results for latency in lat]
    return len(latencies) / wall, latencies


def row(name: str, samples: list[float]) -> str:
    return (
        f"{name:52} {len(samples):>5} {statistics.median(samples) * MS:>8.2f}ms {p90(samples) * MS:>8.2f}ms "
        f"{max(samples) * MS:>8.2f}ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--sets", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/api.py needs root (loop devices, mounts, btrfs snapshots)", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="sv-bench-api-"))
    (base / "config" / "writers.d").mkdir(parents=True)
    (base / "state").mkdir()
    os.environ.update(SHADOWVAULT_CONFIG_DIR=str(base / "config"), SHADOWVAULT_STATE_DIR=str(base / "state"))
    verdicts = []
    try:
        with loop_filesystem("btrfs") as fs, running_daemon() as daemon:
            volume = str(fs.mount)
            (fs.mount / "data.txt").write_text("data\n")
            print(f"(a) create + delete one shadow set of a btrfs volume, {args.reps} times each way")
            print(f"{'':52} {'sets':>5} {'median':>10} {'p90':>10} {'max':>10}")
            for scenario in SCENARIOS:
                api, local = create_delete(daemon.socket, volume, scenario, args.reps)
                print(row(f"{scenario.name}: API", api))
                print(row(f"{scenario.name}: in process", local))
                extra = (statistics.median(api) - statistics.median(local)) * MS
                extra_p90 = (p90(api) - p90(local)) * MS
                print(f"{'  API - in process':52} {'':>5} {extra:>+8.2f}ms {extra_p90:>+8.2f}ms", flush=True)
                verdicts.append((scenario.name, extra))

            with Client(daemon.socket, timeout=120) as client:
                kept = [
                    client.create_shadow_set([volume], provider="btrfs", auto_writers=False, persistent=True)[
                        "id"
                    ]
                    for _ in range(args.sets)
                ]
                alone = [timed(client.shadow_sets) for _ in range(args.calls * 5)]
                rate, latencies = many_listers(daemon.socket, args.clients, args.calls)
                for set_id in kept:
                    client.delete_shadow_set(set_id)
            print(
                f"\n(b) {args.clients} clients at once, each its own connection, "
                f"{args.calls} list calls each ({args.sets} sets listed)"
            )
            print(f"{'':52} {'calls':>5} {'median':>10} {'p90':>10} {'max':>10}")
            print(row("list shadow sets, one client alone", alone))
            print(row(f"list shadow sets, {args.clients} clients at once", latencies))
            print(f"{'  over all clients':52} {len(latencies):>5} {rate:>8.0f} calls/s")
            daemon_exit = daemon.stop()
            if daemon_exit != 0:
                print(f"the daemon exited {daemon_exit}:\n{daemon.log_text()}", file=sys.stderr)
                return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    for name, extra in verdicts:
        met = "met" if extra <= GOAL_MS else "NOT met"
        print(f"goal: API at most {GOAL_MS:g} ms more than in process ({name}): {met} ({extra:+.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
