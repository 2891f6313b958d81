"""CLI commands: jobs list | run NAME | status [NAME] | install (parse options, call the jobs, print).

A job runs as root and its records are root's: `jobs run` goes through the daemon when it answers
(a member of the requester group may run the jobs `[api] requester_jobs` names), and `jobs status`
reads the records here when this process may, else asks the daemon (GET /v1/jobs); a user who is
not root and has no daemon to ask gets one line saying so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from shadowvault.cli.coordination import daemon_client, finished_run
from shadowvault.cli.output import emit, info, json_option, listing, print_table, to_builtins, warn
from shadowvault.cli.repository import format_size, format_time
from shadowvault.errors import NotFoundError, PermissionDeniedError, ShadowvaultError
from shadowvault.jobs import definitions, job_metrics, job_records, scheduled, units
from shadowvault.jobs.job_records import JobRecord
from shadowvault.typed_decoding import convert


def _retention_text(definition: definitions.JobDefinition) -> str:
    counts = {k: v for k, v in definition.retention.policy.counts().items() if v}
    text = ", ".join(f"{k} {v}" for k, v in counts.items())
    return text + (", prune" if definition.retention.prune else "") if text else "-"


@click.group("jobs")
def jobs_group() -> None:
    """Backups that run by themselves: jobs.d definitions, their runs, their systemd timers."""


@jobs_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Show every job definition with its schedule; an unusable definition is an error (exit 2)."""
    good, bad = definitions.scan()
    rows = [
        {
            "name": d.name,
            "schedule": d.schedule,
            "repository": d.repository,
            "paths": d.paths,
            "components": d.components,
            "retention": _retention_text(d),
            "file": str(d.path),
        }
        for d in good
    ]

    def human() -> None:
        if not rows:
            if not bad:  # else the error below says what is wrong with the ones there
                info(f"no jobs defined in {definitions.jobs_dir()}")
            return
        print_table(
            ["Name", "Schedule", "Repository", "What", "Retention"],
            [
                (
                    r["name"],
                    r["schedule"],
                    r["repository"],
                    ", ".join(r["paths"] or r["components"]),
                    r["retention"],
                )
                for r in rows
            ],
        )

    emit(as_json, {"jobs": rows, "invalid": [{"file": f, "error": e} for f, e in bad]}, human)
    for _, message in bad[1:]:
        warn(message)
    if bad:
        raise definitions.JobDefinitionError(bad[0][1])


def _record_row(record: JobRecord) -> tuple[str, ...]:
    return (
        record.job,
        format_time(record.finished),
        record.status,
        str(record.exit_status),
        (record.snapshot_id or "")[:8],
        format_size(record.added_bytes),
        f"{record.duration:.1f}s",
        ", ".join(f"{k}={v}" for k, v in record.consistency.items()),
    )


def _show_record(record: JobRecord) -> None:
    print_table(
        ["Job", "Finished", "Status", "Exit", "Snapshot", "Added", "Took", "Consistency"],
        [_record_row(record)],
    )
    for error in record.errors:  # the record's details are what was asked for: shown under -q too
        listing(f"error: {error}")
    for line in record.forgotten:
        listing(f"forgot snapshot {line[:8]}")
    if record.pruned:
        listing(record.pruned)
    if record.on_failure:
        listing(f"on_failure: {record.on_failure}")


@jobs_group.command("run")
@click.argument("name")
@json_option
def run_cmd(name: str, as_json: bool) -> None:
    """Run job NAME now and record it; exits as `backup` would (0, 3 when files were unreadable, 1).

    Through the daemon when it answers (it runs the job), else in this process.
    """
    client = daemon_client()
    if client is None:
        if os.geteuid() != 0:
            raise _needs_root_or_daemon("jobs run", f"job {name} runs as root")
        record = scheduled.run_job(definitions.find(name))
    else:  # the daemon runs it (its job lock still keeps one run of a job at a time)
        record = convert(finished_run(client, lambda: client.start_job(name)), JobRecord)
    emit(as_json, to_builtins(record), lambda: _show_record(record))
    scheduled.raise_for(record)


def _needs_root_or_daemon(command: str, why: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"{command} needs root or the daemon: {why} (as a member of its requester group, run it "
        "without --no-daemon while `shadowvault daemon` answers)"
    )


def _records_from_daemon(jobs: list[dict[str, Any]], name: str | None) -> list[JobRecord]:
    """The records GET /v1/jobs carries (the jobs defined: a record whose definition is gone is not there)."""
    return [
        convert(job["last_run"], JobRecord)
        for job in jobs
        if job.get("last_run") is not None and name in (None, job.get("name"))
    ]


def _records(name: str | None) -> list[JobRecord]:
    """The last record of every job jobs.d defines (or of job NAME): read here when this process
    may, else from the daemon (for a member of its requester group; anyone else gets its refusal)."""
    try:
        if name is None:
            return job_metrics.defined_records()
        if name not in definitions.defined_names():  # a removed job's record is no news
            raise NotFoundError(f"no job {name!r}: {definitions.jobs_dir() / f'{name}.toml'} does not exist")
        record = job_records.load(name)
        return [] if record is None else [record]
    except PermissionError:
        client = daemon_client()
        if client is None:
            raise _needs_root_or_daemon("jobs status", f"{job_records.records_dir()} is root's") from None
        return _records_from_daemon(client.jobs(), name)


@jobs_group.command("status")
@click.argument("name", required=False)
@json_option
def status_cmd(name: str | None, as_json: bool) -> None:
    """Show the last recorded run of every job jobs.d defines, or of job NAME."""
    if name is not None:
        definitions.check_name(name)
        found = _records(name)
        if not found:
            raise NotFoundError(f"job {name} has not run yet (no record in {job_records.records_dir()})")
        record = found[0]
        emit(as_json, to_builtins(record), lambda: _show_record(record))
        return
    records = _records(None)

    def human() -> None:
        if not records:
            info("no job has run yet")
            return
        print_table(
            ["Job", "Finished", "Status", "Exit", "Snapshot", "Added", "Took", "Consistency"],
            [_record_row(r) for r in records],
        )

    emit(as_json, {"jobs": to_builtins(records)}, human)


@jobs_group.command("install")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=units.DEFAULT_UNIT_DIR,
    show_default=True,
    help="Where to write the unit files.",
)
@click.option("--no-enable", is_flag=True, help="Only write the units: no daemon-reload, no enabling.")
@json_option
def install_cmd(unit_dir: Path, no_enable: bool, as_json: bool) -> None:
    """Write the systemd units (a timer per job, the job service, the daemon's service and socket)."""
    good, bad = definitions.scan()
    if bad:
        raise definitions.JobDefinitionError(bad[0][1])
    done = units.install(good, unit_dir, enable=not no_enable)
    try:
        dropped = job_metrics.refresh()  # the records (and gauges) of removed jobs go with their timers
    except (OSError, ShadowvaultError) as err:
        warn(f"the records of removed jobs were not dropped: {err}")
        dropped = []

    def human() -> None:
        for path in done.written:
            info(f"wrote {path}")
        for path in done.removed:
            info(f"removed {path} (its job is no longer defined)")
        for job in dropped:
            info(f"dropped the record of job {job} (it is no longer defined)")
        if done.enabled:
            info(f"enabled and started {', '.join(done.enabled)}")

    emit(
        as_json,
        {
            "written": [str(p) for p in done.written],
            "enabled": done.enabled,
            "removed": [str(p) for p in done.removed],
            "dropped_records": dropped,
        },
        human,
    )


COMMANDS: list[click.Command] = [jobs_group]
