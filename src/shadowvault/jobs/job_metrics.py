"""The jobs' last results as Prometheus gauges, written for node_exporter's textfile collector.

The file holds the gauges of every job that still has a definition (it is rebuilt from their records
after each run and at `jobs install`, and a removed job's record is dropped then: an alert on a
job's last success must not fire forever for a job that is gone), at `[metrics] textfile` of
`<config dir>/shadowvault.toml`, default /var/lib/prometheus/node-exporter/shadowvault.prom.
`registry_for` is what a /metrics endpoint serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from shadowvault import config_file, fsutil
from shadowvault.errors import ConfigError
from shadowvault.jobs import definitions, job_records
from shadowvault.jobs.job_records import JobRecord

DEFAULT_TEXTFILE = "/var/lib/prometheus/node-exporter/shadowvault.prom"


def textfile_path() -> Path:
    """Where the textfile goes: `[metrics] textfile` in shadowvault.toml (root's file), or the default."""
    value = config_file.section("metrics").get("textfile", DEFAULT_TEXTFILE)
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{config_file.config_path()}: [metrics] textfile must be an absolute path")
    return Path(value)


def registry_for(records: Iterable[JobRecord]) -> CollectorRegistry:
    """Gauges of every job's last run, labelled with the job's name."""
    registry = CollectorRegistry(auto_describe=True)
    success = Gauge(
        "shadowvault_job_last_success_timestamp_seconds",
        "When the job last succeeded (Unix time; 0: never)",
        ["job"],
        registry=registry,
    )
    run_time = Gauge(
        "shadowvault_job_last_run_timestamp_seconds",
        "When the job's last run finished (Unix time)",
        ["job"],
        registry=registry,
    )
    duration = Gauge(
        "shadowvault_job_last_duration_seconds", "How long the last run took", ["job"], registry=registry
    )
    added = Gauge(
        "shadowvault_job_last_added_bytes",
        "Bytes the last run added to the repository",
        ["job"],
        registry=registry,
    )
    status = Gauge(
        "shadowvault_job_last_exit_status",
        "The last run's exit status (0 success, 3 partial, else failed)",
        ["job"],
        registry=registry,
    )
    for record in records:
        success.labels(record.job).set(record.last_success or 0)
        run_time.labels(record.job).set(record.finished)
        duration.labels(record.job).set(record.duration)
        added.labels(record.job).set(record.added_bytes)
        status.labels(record.job).set(record.exit_status)
    return registry


def write_textfile(records: Iterable[JobRecord], path: Path | None = None) -> Path:
    """Write the gauges atomically (node_exporter never reads half a file); world-readable, for it."""
    target = path or textfile_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write(target, generate_latest(registry_for(records)), mode=0o644)
    return target


def defined_records() -> list[JobRecord]:
    """The last record of every job that still has a definition in jobs.d."""
    return job_records.load_all(only=definitions.defined_names())


def refresh(path: Path | None = None) -> list[str]:
    """Drop the records of the jobs no longer defined and rewrite the textfile from the others (when
    there is one to rewrite, or something to say: nothing appears before a job has run); the jobs
    whose records were dropped."""
    names = definitions.defined_names()
    dropped = job_records.drop_except(names)
    records = job_records.load_all(only=names)
    target = path or textfile_path()
    if records or target.exists():
        write_textfile(records, target)
    return dropped
