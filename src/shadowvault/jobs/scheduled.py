"""A scheduled job's run: the backup job on its definition, retention, the record and the metrics.

What a timer (or `shadowvault jobs run NAME`) does, in order: take the job's lock (one run of a job at
a time), back up through jobs.backup (tagging the snapshot `job:NAME`), forget this job's snapshots
its retention no longer keeps and prune when asked, record the result (jobs/job_records.py), rewrite
the metrics textfile (jobs/job_metrics.py), and run `on_failure` when the run did not succeed.
A run's failure is in the returned record, never raised: the caller decides what it means (the CLI
turns it into the exit status `backup` would give). Interrupts are recorded and raised again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator

from shadowvault import proc
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.components.base import CollectOptions
from shadowvault.display import counted
from shadowvault.errors import PartialFailure, ShadowvaultError
from shadowvault.jobs import job_metrics, job_records
from shadowvault.jobs.backup import BackupRequest, BackupResult, run_backup
from shadowvault.jobs.backup_components import ComponentSelection, staged_components
from shadowvault.jobs.definitions import JobDefinition, s3_credentials
from shadowvault.jobs.job_records import FAILED, PARTIAL, SUCCESS, JobRecord
from shadowvault.repo.forget import apply_policy
from shadowvault.repo.password_file import read_password_file
from shadowvault.repo.prune import prune
from shadowvault.repo.repository import Repository, filter_snapshots
from shadowvault.shadow.writers import config as writer_config

log = logging.getLogger(__name__)

ON_FAILURE_TIMEOUT = 120.0


class JobBusyError(ShadowvaultError):
    """Another run of the same job holds its lock."""


class JobFailedError(ShadowvaultError):
    """A run failed; its exit status is the one the run recorded."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def raise_for(record: JobRecord) -> None:
    """The error a command line ends with for this run: none, PartialFailure (3), or JobFailedError."""
    if record.exit_status == 0:
        return
    first = record.errors[0] if record.errors else f"exit status {record.exit_status}"
    message = f"job {record.job}: {first}"
    if record.status == PARTIAL:
        raise PartialFailure(
            f"job {record.job}: {counted(len(record.errors), 'file')} could not be read; {first}"
        )
    raise JobFailedError(message, record.exit_status)


@contextlib.contextmanager
def _job_lock(name: str) -> Iterator[None]:
    directory = job_records.records_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusyError(f"job {name} is already running") from None
        yield
    finally:
        os.close(fd)


def _open(definition: JobDefinition, *, write: bool, kind: str = "backup") -> Repository:
    location = Repository.validate_path(definition.repository, s3_credentials(definition))
    password = read_password_file(str(definition.password_file))
    return Repository.open(location, password, write=write, kind=kind)


def _backup(definition: JobDefinition, stats: WalkStats | None) -> BackupResult:
    request = BackupRequest(
        paths=list(definition.paths),
        excludes=list(definition.excludes),
        tags=[*definition.tags, definition.job_tag],
        provider=definition.provider,
        writers=list(definition.writers),
        exclude_caches=definition.exclude_caches,
        exclude_larger_than=definition.exclude_larger_than,
        one_file_system=definition.one_file_system,
        include_snapshots=definition.include_snapshots,
        exclude_if_present=list(definition.exclude_if_present),
        iexcludes=list(definition.iexcludes),
        ignore_inode=definition.ignore_inode,
        ignore_ctime=definition.ignore_ctime,
        with_atime=definition.with_atime,
    )
    with contextlib.ExitStack() as stack:
        if definition.components:
            options = CollectOptions(paths=list(definition.paths), excludes=list(definition.excludes))
            selection = ComponentSelection(list(definition.components), "/", options)
            request = stack.enter_context(staged_components(request, selection))
        repo = stack.enter_context(_open(definition, write=True))
        return run_backup(repo, request, stats=stats)


def _apply_retention(definition: JobDefinition, host: str, record: JobRecord) -> None:
    """Forget this job's snapshots of this host that the policy does not keep; prune when asked."""
    retention = definition.retention
    if retention.policy.is_empty():
        return
    with _open(definition, write=False) as repo:
        mine = filter_snapshots(repo.list_snapshots(), hosts=[host], tags=[definition.job_tag])
        groups = apply_policy(mine, retention.policy)
        to_remove = [d.snapshot_id for g in groups for d in g.decisions if not d.keep]
        for snapshot_id in to_remove:
            repo.remove_snapshot(snapshot_id)
            record.forgotten.append(snapshot_id)
    if retention.prune and to_remove:
        with _open(definition, write=True, kind="prune") as repo:
            record.pruned = prune(repo).summary()


def _run_on_failure(definition: JobDefinition, record: JobRecord) -> str:
    """Run the definition's on_failure command (checked again: it runs as root); what became of it."""
    assert definition.on_failure is not None
    env = proc.writer_environment(
        {
            "SHADOWVAULT_JOB": record.job,
            "SHADOWVAULT_JOB_STATUS": record.status,
            "SHADOWVAULT_JOB_EXIT_STATUS": str(record.exit_status),
            "SHADOWVAULT_JOB_ERROR": record.errors[0] if record.errors else "",
        }
    )
    try:
        with writer_config.open_command(definition.on_failure, definition.path, "on_failure") as program:
            done = proc.run_group(
                definition.on_failure, timeout=ON_FAILURE_TIMEOUT, env=env, cwd="/", **program.popen_kwargs()
            )
    except ShadowvaultError as err:
        log.warning("job %s: on_failure: %s", record.job, err)
        return f"not run: {err}"
    if done.returncode != 0:
        log.warning("job %s: on_failure exited with status %d", record.job, done.returncode)
    return f"exit status {done.returncode}"


def _fill(record: JobRecord, result: BackupResult) -> None:
    stats = result.stats
    record.snapshot_id = result.snapshot_id
    record.added_bytes = result.added_bytes
    record.files_new, record.files_changed = stats.files_new, stats.files_changed
    record.files_unmodified = stats.files_unmodified
    record.consistency = dict(result.snapshot.consistency)
    record.errors = [f"{path}: {reason}" for path, reason in result.errors]
    record.warnings = [*result.warnings, *(f"{path}: {reason}" for path, reason in result.file_warnings)]
    record.status, record.exit_status = (PARTIAL, PartialFailure.exit_code) if result.errors else (SUCCESS, 0)


def _finish(definition: JobDefinition, record: JobRecord, previous: JobRecord | None, t0: float) -> None:
    record.finished = time.time()
    record.duration = round(time.monotonic() - t0, 3)
    if record.status == SUCCESS:
        record.last_success = record.finished
    else:
        record.last_success = previous.last_success if previous else None
    if record.exit_status != 0 and definition.on_failure:
        record.on_failure = _run_on_failure(definition, record)
    job_records.save(record)
    try:
        job_metrics.refresh()
    except (OSError, ShadowvaultError) as err:
        log.warning("job %s: cannot write the metrics textfile: %s", record.job, err)


def run_job(definition: JobDefinition, *, stats: WalkStats | None = None) -> JobRecord:
    """Run the job once now and record it; the record says how it went (see the module's docstring).

    `stats`: the backup's live counters (the daemon reports them as the run's progress).
    """
    with _job_lock(definition.name):
        previous = job_records.load_readable(definition.name)
        t0, started = time.monotonic(), time.time()
        record = JobRecord(
            job=definition.name, status=FAILED, exit_status=1, started=started, finished=started, duration=0.0
        )
        try:
            result = _backup(definition, stats)
            _fill(record, result)
            _apply_retention(definition, result.snapshot.host, record)
        except ShadowvaultError as err:
            record.status, record.exit_status = FAILED, err.exit_code
            record.errors.insert(0, str(err))
        except KeyboardInterrupt as stop:  # Ctrl-C, or systemd stopping the unit (interrupts.Terminated)
            record.status, record.exit_status = FAILED, getattr(stop, "exit_code", 130)
            record.errors.insert(0, f"interrupted: {stop}")
            _finish(definition, record, previous, t0)
            raise
        except Exception as err:
            log.debug("job %s: internal error", definition.name, exc_info=True)
            record.status, record.exit_status = FAILED, 1
            record.errors.insert(0, f"internal error: {type(err).__name__}: {err}")
        _finish(definition, record, previous, t0)
        return record
