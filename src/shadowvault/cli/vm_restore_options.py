"""`restore SNAP --vm NAME [--disk D] [--path P] --target DIR [--verify-boot]`: the VM restores on `restore`.

One decorator adds --vm, --disk, --verify-boot, --boot-marker and --boot-timeout to the main
`restore` command. With --vm the command is `vm restore SNAP NAME` (cli/vm_runs.py: the same jobs,
the same errors, here or in the daemon), and `restore`'s own --path, which otherwise filters
snapshots, is the path inside the disk (the issue's spelling); "latest" is the newest snapshot of
VM NAME (--host, --tag still filter). Without --vm the command runs as it always did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.vm_runs import restore_vm
from shadowvault.errors import UsageError
from shadowvault.jobs.vm_reporting import VmRestoreOrder
from shadowvault.repo.snapshot_choice import SnapshotFilter

F = TypeVar("F", bound=Callable[..., Any])

# restore's options that have no meaning for a VM: given with --vm they are refused, not ignored
NOT_FOR_VMS = (
    "includes",
    "excludes",
    "verify",
    "numeric_owner",
    "component",
    "target_root",
    "users",
    "maps",
    "create_missing_accounts",
    "fix_fstab",
    "no_packages",
    "dry_run",
    "writers",
    "all_writers",
    "writer_option_specs",
    "authoritative",
    "directory_restore",
)


def _given(value: Any) -> bool:
    return value not in (None, False, (), "")


def vm_restore_options(func: F) -> F:
    """Add the VM options to `restore`; with --vm, run the VM restore instead of `func`. Put it above
    @snapshot_filter_options (it reads the raw --path)."""

    @functools.wraps(func)
    def with_vm(
        *args: Any,
        vm_name: str | None,
        vm_disks: tuple[str, ...],
        verify_boot: bool,
        boot_marker: str,
        boot_timeout: float,
        **kw: Any,
    ) -> Any:
        if vm_name is None:
            if vm_disks or verify_boot:
                raise UsageError("--disk and --verify-boot go with --vm NAME")
            return func(*args, **kw)
        refused = [name for name in NOT_FOR_VMS if _given(kw.get(name))]
        if refused:
            flags = ", ".join("--" + name.replace("_", "-") for name in refused)
            raise UsageError(f"a VM restore takes --disk, --path, --target, --verify-boot: not {flags}")
        ref, _, sub = kw["snapshot"].partition(":")
        if sub:
            raise UsageError("a VM restore takes SNAP without :SUBPATH (a path inside a disk is --path)")
        paths = kw["filter_paths"]
        if len(paths) > 1:
            raise UsageError("--path with --vm is one path inside the disk")
        if not kw["target"]:
            raise UsageError("give the directory to restore into with --target DIR")
        order = VmRestoreOrder(
            snapshot=ref,
            vm=vm_name,
            target=kw["target"],
            disks=list(vm_disks),
            path=paths[0] if paths else None,
            verify_boot=verify_boot,
            boot_marker=boot_marker,
            boot_timeout=boot_timeout,
        )
        chosen = SnapshotFilter.of(hosts=kw["filter_host"], tags=kw["filter_tags"])
        restore_vm(kw["repo"], kw["password_file"], order, chosen, kw["as_json"])
        return None

    options = [
        click.option(
            "--vm",
            "vm_name",
            default=None,
            metavar="NAME",
            help="Restore VM NAME (docs/vms.md); --path is then a path inside its --disk.",
        ),
        click.option(
            "--disk",
            "vm_disks",
            multiple=True,
            metavar="DISK",
            help="With --vm: this disk only (repeatable).",
        ),
        click.option("--verify-boot", is_flag=True, help="With --vm: boot the restored VM headless (TCG)."),
        click.option("--boot-marker", default="login:", show_default=True, help="With --verify-boot."),
        click.option(
            "--boot-timeout",
            type=float,
            default=300.0,
            show_default=True,
            metavar="SECONDS",
            help="With --verify-boot: how long to wait for --boot-marker.",
        ),
    ]
    wrapped: Any = with_vm
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped
