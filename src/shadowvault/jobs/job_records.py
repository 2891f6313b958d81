"""What each scheduled job's last run did: one JSON document per job, `<state dir>/jobs/NAME.json`.

`jobs status`, the metrics textfile (jobs/job_metrics.py) and the daemon's /metrics read it, for the
jobs that still have a definition; the records of the others are dropped (job_metrics.refresh).
Written atomically (fsutil.atomic_write): a reader sees the previous run or the whole new one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path

import msgspec

from shadowvault import fsutil, paths
from shadowvault.errors import ConfigError
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

SUCCESS, PARTIAL, FAILED = "success", "partial", "failed"


class JobRecord(msgspec.Struct, kw_only=True):
    """The result of one run of a job (the latest one is kept)."""

    job: str
    status: str  # success, partial (some files unreadable: exit 3) or failed
    exit_status: int  # as `shadowvault backup` would exit: 0, 3, 1 (or 128 + signal)
    started: float  # Unix time
    finished: float
    duration: float  # seconds
    snapshot_id: str | None = None
    added_bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    consistency: dict[str, str] = msgspec.field(default_factory=dict)
    errors: list[str] = msgspec.field(default_factory=list)
    warnings: list[str] = msgspec.field(default_factory=list)
    forgotten: list[str] = msgspec.field(default_factory=list)  # snapshot ids retention removed
    pruned: str | None = None  # prune's summary when it ran
    on_failure: str | None = None  # what became of the on_failure command, when it ran
    last_success: float | None = None  # when a run last succeeded (kept across failed runs)


def records_dir() -> Path:
    return paths.state_dir() / "jobs"


def record_path(name: str) -> Path:
    return records_dir() / f"{name}.json"


def save(record: JobRecord) -> Path:
    """Write the job's record atomically; readable by root only, like the rest of the state."""
    directory = records_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = record_path(record.job)
    fsutil.atomic_write(target, msgspec.json.encode(record) + b"\n", mode=0o600)
    return target


def load(name: str) -> JobRecord | None:
    """The job's last record; None when it never ran."""
    try:
        raw = record_path(name).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return decode_json(raw, JobRecord)
    except msgspec.DecodeError as err:
        raise ConfigError(f"{record_path(name)}: unreadable job record: {err}") from err


def load_readable(name: str) -> JobRecord | None:
    """The job's last record; None when it never ran, or when its record cannot be read (logged):
    what a run replaces and a listing leaves out, so that one damaged record stops no run of its
    job and hides no other job's record (the metrics of every job were lost with it)."""
    try:
        return load(name)
    except ConfigError as err:
        log.warning("%s; the job's next run replaces it", err)
        return None


def recorded_names() -> list[str]:
    """The jobs that have a record, sorted."""
    directory = records_dir()
    if not directory.is_dir():
        return []
    return sorted(
        n.removesuffix(".json") for n in os.listdir(directory) if n.endswith(".json") and n[0] != "."
    )


def load_all(only: Collection[str] | None = None) -> list[JobRecord]:
    """Every job's last record (of the jobs in `only`, when given), by job name."""
    names = [n for n in recorded_names() if only is None or n in only]
    return [r for r in (load_readable(name) for name in names) if r is not None]


def drop_except(names: Collection[str]) -> list[str]:
    """Delete the records of the jobs not in `names` (their definitions are gone); those jobs."""
    dropped = [n for n in recorded_names() if n not in names]
    for name in dropped:
        record_path(name).unlink(missing_ok=True)
    return dropped
