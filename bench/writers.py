"""Application writers under load: freeze window, shadow-set time and the latency the load sees.

    .venv/bin/python bench/writers.py [--sets 20] [--only postgresql,redis]

For each writer (PostgreSQL, MariaDB, Redis, OpenLDAP, and the example external writer), a real
server on its own btrfs loop filesystem takes a continuous load of numbered transactions while 20
shadow sets are made with that writer alone. Reported per writer, median and max over the sets:
- freeze window: first freeze to last thaw (the manifest's freeze_window),
- writer freeze: the writer's own freeze event,
- shadow set: the whole `with shadow_set(...)` (identify .. backup_complete and release),
- commit: the provider's part of the window (btrfs snapshot), to tell it from the writer's,
- load latency during the freeze: commit latency of every transaction in flight at some point of a
  freeze window, against the same load's latency outside the windows (p50, max).
Needs root. Uses the test fixtures (servers started in temp dirs, stopped by PID).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import servers as S
from tests.fixtures.loads import LdapLoad, Load, MariadbLoad, PostgresLoad, RedisLoad
from tests.fixtures.loopfs import loop_filesystem

from shadowvault.shadow.coordinator import SetOptions, shadow_set

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "writers" / "flock_writer.py"


@contextlib.contextmanager
def postgresql(mount: Path) -> Iterator[tuple[str, Load]]:
    S.open_for_service(mount)
    with S.postgres_server(mount / "pgdata") as server:
        yield f"postgresql:{server.datadir}", PostgresLoad(server)


@contextlib.contextmanager
def mariadb(mount: Path) -> Iterator[tuple[str, Load]]:
    with S.mariadb_server(mount / "maria") as server:
        yield f"mariadb:{server.datadir}", MariadbLoad(server)


@contextlib.contextmanager
def redis(mount: Path) -> Iterator[tuple[str, Load]]:
    with S.redis_server(mount / "redis") as server:
        for i in range(100_000):  # a data set worth saving: the BGSAVE is the freeze
            if i % 10_000 == 0:
                pipe = S.redis_client(server).pipeline(transaction=False)
            pipe.set(f"base:{i}", "y" * 100)
            if i % 10_000 == 9_999:
                pipe.execute()
        yield f"redis:127.0.0.1:{server.port}", RedisLoad(server)


@contextlib.contextmanager
def ldap(mount: Path) -> Iterator[tuple[str, Load]]:
    with S.slapd_server(mount / "ldap") as server:
        yield f"ldap:{server.config}", LdapLoad(server)


class FileLoad(Load):
    """The toy application of the external-writer test, run in-process: a record under LOCK_SH."""

    def setup(self) -> None:
        import fcntl
        import os

        self._fcntl, self._os = fcntl, os
        data_dir = self.server.datadir
        self.lock_fd = os.open(data_dir.parent / "app.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self.fd = os.open(data_dir / "records", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def commit(self, n: int) -> None:
        self._fcntl.flock(self.lock_fd, self._fcntl.LOCK_SH)
        try:
            self._os.write(self.fd, f"{n}\n".encode().rjust(512, b" "))
        finally:
            self._fcntl.flock(self.lock_fd, self._fcntl.LOCK_UN)


@contextlib.contextmanager
def external(mount: Path) -> Iterator[tuple[str, Load]]:
    import os

    data_dir = mount / "app"
    data_dir.mkdir()
    config = Path(os.environ["SHADOWVAULT_CONFIG_DIR"]) / "writers.d" / "flock-app.toml"
    config.write_text(
        textwrap.dedent(f"""
        type = "external"
        command = ["{sys.executable}", "{EXAMPLE}"]
        paths = ["{data_dir}"]
        [options]
        lock_file = "{mount / "app.lock"}"
        data = ["{data_dir / "records"}"]
    """)
    )
    config.chmod(0o644)
    yield "flock-app", FileLoad(S.Server("file", data_dir, mount))


SCENARIOS = {"postgresql": postgresql, "mariadb": mariadb, "redis": redis, "ldap": ldap, "external": external}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(name: str, sets: int) -> dict[str, float]:
    with loop_filesystem("btrfs", 2 << 30) as fs, SCENARIOS[name](fs.mount) as (spec, load):
        load.setup()
        load.start()
        windows, freezes, totals, spans, commits = [], [], [], [], []
        try:
            load.wait_for(50)
            for _ in range(sets):
                started = time.monotonic()
                with shadow_set([str(fs.mount)], SetOptions(writers=[spec], auto_writers=False)) as manifest:
                    pass
                totals.append(time.monotonic() - started)
                report = manifest.writers[0]
                assert report.failure is None, report.failure
                windows.append(manifest.freeze_window or 0.0)
                freezes.append(report.timings.get("freeze", 0.0))
                commits.append(manifest.phases.get("commit", 0.0))
                spans.append((manifest.frozen_at, manifest.frozen_at + (manifest.freeze_window or 0.0)))
                time.sleep(0.2)  # let the load run unhindered between sets (the baseline)
        finally:
            load.stop()
        inside = [lat for a, b in spans for lat in load.latencies_between(a, b)]
        outside = [
            a.acked - a.sent for a in load.acks if not any(a.acked >= s and a.sent <= e for s, e in spans)
        ]
        return {
            "window_med": statistics.median(windows),
            "window_max": max(windows),
            "freeze_med": statistics.median(freezes),
            "freeze_max": max(freezes),
            "commit_med": statistics.median(commits),
            "commit_max": max(commits),
            "total_med": statistics.median(totals),
            "total_max": max(totals),
            "lat_in_p50": pct(inside, 0.5),
            "lat_in_max": max(inside, default=float("nan")),
            "lat_out_p50": pct(outside, 0.5),
            "lat_out_max": max(outside, default=float("nan")),
            "commits": len(load.acks),
            "errors": len(load.errors),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    import os
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sv-bench-writers-"))
    (base / "config" / "writers.d").mkdir(parents=True)
    (base / "state").mkdir()
    os.environ.update(SHADOWVAULT_CONFIG_DIR=str(base / "config"), SHADOWVAULT_STATE_DIR=str(base / "state"))
    ms = 1000.0
    print(f"{args.sets} shadow sets per writer, btrfs provider, writer alone in the set, under load (ms)")
    print(
        f"{'writer':<11} {'window med/max':>15} {'freeze med/max':>15} {'set med/max':>14} "
        f"{'commit med/max':>15} {'lat. in freeze p50/max':>23} {'lat. outside p50/max':>21} {'commits':>8}"
    )
    try:
        for name in args.only.split(","):
            r = run(name, args.sets)
            print(
                f"{name:<11} {r['window_med'] * ms:7.1f}/{r['window_max'] * ms:<7.1f} "
                f"{r['freeze_med'] * ms:7.1f}/{r['freeze_max'] * ms:<7.1f} "
                f"{r['total_med'] * ms:6.0f}/{r['total_max'] * ms:<7.0f} "
                f"{r['commit_med'] * ms:7.1f}/{r['commit_max'] * ms:<7.1f} "
                f"{r['lat_in_p50'] * ms:11.2f}/{r['lat_in_max'] * ms:<11.2f} "
                f"{r['lat_out_p50'] * ms:10.2f}/{r['lat_out_max'] * ms:<10.2f} {r['commits']:>8}"
                + (f"  ({r['errors']} load errors)" if r["errors"] else ""),
                flush=True,
            )
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
