"""CLI command: restore (parse options, call the restore jobs, print what they did)."""

from __future__ import annotations

import os
import time

import click

from shadowvault.archive.memory import bound_heap
from shadowvault.archive.restore import Overwrite, RestoreStats
from shadowvault.cli.components import restore_component_options, restore_options, run_component_restore
from shadowvault.cli.coordination import restore_daemon
from shadowvault.cli.directory_restore import directory_restore_option, for_component, for_writers
from shadowvault.cli.output import info, json_option, print_json
from shadowvault.cli.progress import progress
from shadowvault.cli.repo_options import open_repository, repo_options, repo_path
from shadowvault.cli.restore_daemon import restore_through_daemon
from shadowvault.cli.restore_report import report_entries
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose, needs_choice, snapshot_filter_options
from shadowvault.cli.vm_restore_options import vm_restore_options
from shadowvault.cli.writer_restore import restore_writer_options, run_writer_restore, writer_restore_order
from shadowvault.display import counted, human_size
from shadowvault.errors import PartialFailure, RepositoryError, UsageError
from shadowvault.jobs.restore_component import ComponentRestoreRequest
from shadowvault.jobs.restore_files import FilesRestoreRequest, run_files_restore


def component_only_options(
    *,
    maps: tuple[str, ...],
    users: str | None,
    create_missing_accounts: bool,
    fix_fstab: bool,
    no_packages: bool,
) -> list[str]:
    """The options given that only a component restore reads."""
    flags = {
        "--map": bool(maps),
        "--users": users is not None,
        "--create-missing-accounts": create_missing_accounts,
        "--fix-fstab": fix_fstab,
        "--no-packages": no_packages,
    }
    return [name for name, given in flags.items() if given]


def split_ref(spec: str) -> tuple[str, str]:
    """SNAP[:SUBPATH] -> (snapshot ref, subpath)."""
    ref, _, sub = spec.partition(":")
    return ref, sub or "/"


def _absolute(path: str | None) -> str | None:
    """A target root as named here: a restore in the daemon would take a relative one in its own
    working directory (the daemon refuses it)."""
    return None if path is None else os.path.abspath(path)


def _restore_status(stats: RestoreStats, started: float) -> dict:
    with stats.lock:
        return {
            "message_type": "status",
            "seconds_elapsed": round(time.monotonic() - started, 1),
            "files_done": stats.files,
            "bytes_written": stats.bytes_written,
            "errors": len(stats.errors),
        }


def _restore_line(s: dict) -> str:
    return (
        f"[{s['seconds_elapsed']:.0f}s] {s['files_done']} files, {s['bytes_written'] / 2**20:.1f} MiB "
        f"written, {s['errors']} errors"
    )


@click.command("restore")
@repo_options
@click.argument("snapshot", metavar="SNAP[:SUBPATH]")
@click.option("--target", "-t", default=None, type=click.Path(), help="Directory to restore into.")
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="GLOB",
    help="Restore only matching paths (globs match the snapshot's absolute paths; see docs/archive.md).",
)
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB", help="Leave out matching paths.")
@click.option("--iinclude", "iincludes", multiple=True, metavar="GLOB", help="Like --include, ignoring case.")
@click.option("--iexclude", "iexcludes", multiple=True, metavar="GLOB", help="Like --exclude, ignoring case.")
@click.option(
    "--overwrite",
    type=click.Choice([o.value for o in Overwrite]),
    default=Overwrite.NEVER.value,
    show_default=True,
    help="What to do with files that already exist in the target.",
)
@click.option("--verify", is_flag=True, help="Read every restored file back and compare its hash.")
@click.option("--numeric-owner", is_flag=True, help="Restore owners by uid/gid, not by name.")
@restore_component_options
@restore_writer_options
@vm_restore_options
@snapshot_filter_options
@directory_restore_option
@json_option
def restore_cmd(
    repo: str | None,
    password_file: str | None,
    snapshot: str,
    target: str,
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    iincludes: tuple[str, ...],
    iexcludes: tuple[str, ...],
    overwrite: str,
    verify: bool,
    numeric_owner: bool,
    component: str | None,
    target_root: str | None,
    users: str | None,
    maps: tuple[str, ...],
    create_missing_accounts: bool,
    fix_fstab: bool,
    no_packages: bool,
    dry_run: bool,
    yes_really: bool,
    writers: tuple[str, ...],
    all_writers: bool,
    writer_option_specs: tuple[str, ...],
    snapshot_filter: SnapshotFilter,
    authoritative: tuple[str, ...],
    directory_restore: str | None,
    as_json: bool,
) -> None:
    """Restore a snapshot (or SUBPATH of it) into --target, with owners, modes, times, ACLs and xattrs.

    Without SUBPATH the snapshot's full paths are recreated below the target; with one, what is
    inside SUBPATH is restored into the target. A damaged blob fails only the files that need it
    (exit code 3).

    Applications (docs/writers.md): --writer NAME[:INSTANCE] (repeatable) or --writers restores
    the application components of the snapshot's manifest through their writers, following each
    component's restore method: the writer stops the application (pre_restore), what would be
    replaced is set aside as NAME.pre-restore-TIME, the files are laid down, and the writer
    recovers, starts and checks it (post_restore). In place by default; --target-root DIR
    restores below DIR instead (an alternate location; start it on a free port with
    --writer-option port=N). --dry-run prints what would be stopped, replaced and started.
    """
    bound_heap()
    ref, subpath = split_ref(snapshot)
    component_options = component_only_options(
        maps=maps,
        users=users,
        create_missing_accounts=create_missing_accounts,
        fix_fstab=fix_fstab,
        no_packages=no_packages,
    )
    if (iincludes or iexcludes) and (writers or all_writers or component is not None):
        raise UsageError(
            "--iinclude and --iexclude go with a files restore (--target DIR), not --writer or --component"
        )
    if writers or all_writers:
        if component is not None:
            raise UsageError("--writer and --component are separate restores: run one, then the other")
        if subpath != "/":
            raise UsageError("a writer restores whole components: give SNAP without :SUBPATH")
        if writers and all_writers:
            raise UsageError("give either --writer NAME (repeatable) or --writers, not both")
        if includes or excludes or component_options:
            raise UsageError(
                "a writer restores whole components: --include, --exclude and --component's options"
                " (--map, --users, --create-missing-accounts, --fix-fstab, --no-packages) do not apply"
            )
        order = writer_restore_order(
            ref,
            writers=writers,
            target_root=_absolute(target_root or target),
            option_specs=writer_option_specs + for_writers(directory_restore),
            overwrite=overwrite,
            dry_run=dry_run,
            authoritative=authoritative,
        )
        run_writer_restore(repo, password_file, snapshot_filter, order, as_json=as_json)
        return
    if authoritative:
        raise UsageError("--authoritative goes with --writer ldap[:INSTANCE]")
    if (writer_option_specs or directory_restore) and component is None:
        raise UsageError("--writer-option and --directory-restore go with --writer NAME or --component NAME")
    if component is not None:  # a component restore with its merge rules (cli/components.py)
        where = target_root or target
        # a data-only migration (files with --map, no accounts) onto this machine is the ordinary case:
        # it needs no --target-root, and / needs no --yes-really (each path must be mapped:
        # components/files.py)
        data_only = component == "files" and bool(maps) and not create_missing_accounts
        if not where and data_only:
            where = "/"
        if not where and component == "files" and maps:
            raise UsageError(
                "--create-missing-accounts changes this machine's accounts: restore onto it with "
                "--target-root / --yes-really, or give --target-root DIR"
            )
        if not where:
            raise UsageError("give the machine root to restore into with --target-root DIR")
        if data_only and os.path.realpath(where) == "/":
            yes_really = True
        options = restore_options(
            where,
            users=users,
            maps=maps,
            includes=includes,
            excludes=excludes,
            overwrite=overwrite,
            create_missing_accounts=create_missing_accounts,
            fix_fstab=fix_fstab,
            no_packages=no_packages,
            dry_run=dry_run,
            yes_really=yes_really,
        )
        for_component(options, component, directory_restore, writer_option_specs)
        component_request = ComponentRestoreRequest(snapshot=ref, component=component, options=options)
        run_component_restore(repo, password_file, snapshot_filter, component_request, as_json=as_json)
        return
    if component_options:  # a plain files restore would ignore them
        raise UsageError(
            f"{', '.join(component_options)} go with --component NAME (a files restore takes none of them)"
        )
    if not target:
        raise UsageError("give the directory to restore into with --target DIR")
    if target_root:
        raise UsageError("--target-root goes with --component NAME or --writer NAME")
    if dry_run:  # nothing written: what would be created, replaced and kept (cli/restore_dry_run.py)
        from shadowvault.cli.restore_dry_run import preview_files_restore

        preview_files_restore(
            repo,
            password_file,
            ref,
            subpath,
            snapshot_filter,
            target,
            includes=list(includes),
            excludes=list(excludes),
            overwrite=overwrite,
            as_json=as_json,
            iincludes=iincludes,
            iexcludes=iexcludes,
        )
        return
    started = time.monotonic()
    client = restore_daemon(repo_path(repo))
    if client is not None and needs_choice(ref, snapshot_filter, subpath):  # the daemon looks up plain refs
        with open_repository(repo, password_file) as r:
            ref = choose(r, ref, snapshot_filter, subpath=subpath)[0]
    request = FilesRestoreRequest(
        snapshot=ref,
        target=target,
        subpath=subpath,
        includes=list(includes),
        excludes=list(excludes),
        iincludes=list(iincludes),
        iexcludes=list(iexcludes),
        overwrite=overwrite,
        verify=verify,
        numeric_owner=numeric_owner,
    )
    stats = RestoreStats()
    with progress(lambda: _restore_status(stats, started), _restore_line, as_json):
        if client is not None:  # the daemon lays the files down
            snap_id = restore_through_daemon(client, repo, password_file, request, stats)
        else:
            with open_repository(repo, password_file) as r:
                request.snapshot = choose(r, request.snapshot, snapshot_filter, subpath=subpath)[0]
                snap_id = run_files_restore(r, request, stats=stats).snapshot_id
    report_entries(stats, as_json)  # by their places in the target (cli/restore_report.py)
    duration = time.monotonic() - started
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "snapshot_id": snap_id,
                **stats.as_dict(),
                "duration": round(duration, 3),
            }
        )
    else:
        counts = ", ".join(counted(n, noun) for n, noun in ((stats.files, "file"), (stats.dirs, "dir")))
        info(
            f"restored snapshot {snap_id[:8]}: {counts}, {counted(stats.others, 'other')}, "
            f"{_sizes(stats)} in {duration:.2f}s{_aside(stats, verify)}"
        )
    if stats.errors and not (stats.files or stats.dirs or stats.others or stats.kept):
        raise RepositoryError(f"nothing was restored: {counted(len(stats.errors), 'item')} could not be")
    if stats.errors:
        raise PartialFailure(f"{counted(len(stats.errors), 'item')} could not be restored; the others were")


def _sizes(stats: RestoreStats) -> str:
    """The files' size, and the data written when less (holes stay holes: a 300 MiB sparse file
    restored as 4 KiB written read as if 4 KiB had come back)."""
    if stats.bytes_written >= stats.total_bytes:
        return human_size(stats.bytes_written)
    return f"{human_size(stats.total_bytes)} ({human_size(stats.bytes_written)} written)"


def _aside(stats: RestoreStats, verify: bool) -> str:
    """The summary line's tail: what was kept or skipped, and what was verified, when any."""
    parts = [f"{len(stats.kept)} kept"] if stats.kept else []
    parts += [f"{stats.skipped} skipped (unreadable at backup)"] if stats.skipped else []
    parts += [f"{stats.verified} verified"] if verify else []
    return f" ({', '.join(parts)})" if parts else ""


COMMANDS: list[click.Command] = [restore_cmd]
