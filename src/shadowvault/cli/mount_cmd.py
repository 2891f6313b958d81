"""CLI command: mount (browse every snapshot of a repository as a read-only FUSE filesystem)."""

from __future__ import annotations

import click

from shadowvault.cli.output import note
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.display import escape_text


@click.command("mount")
@repo_options
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option(
    "--allow-other",
    is_flag=True,
    help="Let other users in too (the stored owners, modes and ACLs decide what each may read).",
)
@click.option(
    "--refresh-interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Re-read the snapshot list at most this often (when snapshots/, hosts/, tags/ or ids/ is read).",
)
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable: any of them).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    help="Show only snapshots with this tag (TAG,TAG,...: all of these; repeatable: any of the lists).",
)
@click.option(
    "--path", "paths", multiple=True, help="Show only snapshots of this path (repeatable: all of them)."
)
def mount_cmd(
    repo: str | None,
    password_file: str | None,
    mountpoint: str,
    allow_other: bool,
    refresh_interval: float,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
) -> None:
    """Browse the repository's snapshots at MOUNTPOINT: snapshots/TIME_ID/..., hosts/HOST/,
    tags/TAG/, ids/ID and `latest` links, read-only, with owners, modes, times, xattrs and links
    as stored (docs/mount.md).

    Runs in the foreground until Ctrl-C, SIGTERM or `fusermount -u MOUNTPOINT`, and unmounts.
    A dead view left at MOUNTPOINT by a mount that was killed is unmounted first; a live FUSE mount
    there is refused (`fusermount -u MOUNTPOINT` first).
    """
    from shadowvault.mount.catalog import SnapshotFilter
    from shadowvault.mount.dead_mounts import clear_dead_mount, unmount_command
    from shadowvault.mount.serve import MountOptions, serve

    shown = escape_text(mountpoint)  # one line, whatever the name holds
    if clear_dead_mount(mountpoint):  # before the password is asked: a live mount there is refused
        note(f"{shown} held the dead mount of a `shadowvault mount` that was killed: unmounted it")
    with open_repository(repo, password_file) as r:
        options = MountOptions(
            allow_other=allow_other,
            refresh_seconds=refresh_interval,
            shown=SnapshotFilter(hosts=hosts, tags=tags, paths=paths),
        )
        serve(
            r,
            mountpoint,
            options,
            on_ready=lambda: note(
                f"snapshots of {escape_text(r.path)} at {shown}; stop with Ctrl-C or"
                f" `{escape_text(unmount_command(mountpoint))}`"
            ),
        )
    note(f"unmounted {shown}")


COMMANDS: list[click.Command] = [mount_cmd]
