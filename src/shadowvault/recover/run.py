"""The recover job: a snapshot's machine rebuilt on an empty disk (plan, then apply unless a dry run).

The layout comes from the snapshot (system-state's disk-layout.json, recorded at backup time) or
from --layout FILE (the same document, perhaps edited: other sizes, another UUID). Everything that
can be refused is refused before the first byte is written: a missing component, a target in use,
a disk too small for the data.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shadowvault.archive.tree_paths import find_node
from shadowvault.components.plan import Plan
from shadowvault.disk import fat_mount
from shadowvault.disk.layout import DOCUMENT, DiskLayout, decode_layout
from shadowvault.errors import NotFoundError
from shadowvault.jobs.restore_component import require_component
from shadowvault.jobs.snapshot_view import RepoView
from shadowvault.recover import boot_plan, grub, layout_checks, uefi
from shadowvault.recover.apply import RecoverReport, apply_plan
from shadowvault.recover.plan import COMPONENTS, build_plan
from shadowvault.recover.target import check_target
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot


@dataclass
class RecoverRequest:
    snapshot: str
    disk: str
    layout_file: str | None = None
    dry_run: bool = False
    new_machine_id: bool = False


def snapshot_layout(repo: Repository, snapshot: Snapshot) -> DiskLayout | None:
    staging = Path(tempfile.mkdtemp(prefix="shadowvault-layout-"))
    try:
        view = RepoView(repo, snapshot.tree, staging, snapshot.paths)
        view.fetch_documents("system-state")
        data = view.document("system-state", DOCUMENT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return decode_layout(data) if data is not None else None


def uuid_changes(recorded: DiskLayout, used: DiskLayout) -> dict[str, str]:
    """Old UUID -> new UUID of the filesystems an edited layout gives another UUID (by mount point).

    The recorded layout comes from the repository and is not otherwise checked (the --layout FILE
    replaces it): an old "UUID" that is not one is left out, since it would be replaced wherever its
    text occurs in the boot configuration and shown in the plan as it is."""
    before = {f.mount_point: f.uuid for f in recorded.filesystems if layout_checks.uuid_is_valid(f)}
    return {
        before[f.mount_point]: f.uuid
        for f in used.filesystems
        if before.get(f.mount_point) and before[f.mount_point] != f.uuid
    }


def _in_snapshot(repo: Repository, snapshot: Snapshot, path: str) -> bool:
    try:
        find_node(repo, snapshot.tree, path)
    except NotFoundError:
        return False
    return True


def _layout(repo: Repository, snapshot_id: str, snapshot: Snapshot, layout_file: str | None) -> DiskLayout:
    if layout_file is not None:
        try:
            data = Path(layout_file).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"layout file {layout_file} does not exist") from None
        return decode_layout(data, layout_file)
    layout = snapshot_layout(repo, snapshot)
    if layout is None:
        raise NotFoundError(
            f"snapshot {snapshot_id[:8]} recorded no disk layout (its root was not a mounted disk): "
            "give one with --layout FILE"
        )
    return layout


def run_recover(
    repo: Repository,
    request: RecoverRequest,
    *,
    on_plan: Callable[[Plan], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> RecoverReport:
    snapshot_id, snapshot = repo.find_snapshot(request.snapshot)
    for name in COMPONENTS:
        require_component(snapshot_id, snapshot, name)
    target = check_target(request.disk)
    layout = _layout(repo, snapshot_id, snapshot, request.layout_file)

    def in_snapshot(path: str) -> bool:
        return _in_snapshot(repo, snapshot, path)

    efi_boot = uefi.choose_boot(layout, in_snapshot)
    grub_missing = grub.missing_parts(in_snapshot) if boot_plan.bios_grub_possible(layout, efi_boot) else []
    fat_mount.check_mountable({f.fstype for f in layout.filesystems})
    plan = build_plan(
        layout,
        target,
        snapshot_id,
        new_machine_id=request.new_machine_id,
        grub_missing=grub_missing,
        efi_boot=efi_boot,
    )
    recorded = snapshot_layout(repo, snapshot) if request.layout_file is not None else None
    changes = uuid_changes(recorded, layout) if recorded is not None else {}
    if changes and layout.bootloader.kind in ("extlinux", "grub"):
        for old, new in changes.items():
            plan.add("replace", "boot", layout.bootloader.config, f"UUID {old} -> {new}")
    plan.data["uuid_changes"] = changes
    if changes and efi_boot == uefi.KEEP:
        plan.warn(f"the kept {uefi.LOADER_TEXT} may look for the old UUIDs: check that the disk boots")
    if "/" not in snapshot.paths:
        held = ", ".join(p for p in snapshot.paths if not p.startswith("/.")) or "nothing"
        plan.warn(f"the snapshot's files are {held}, not /: the recovered disk holds only those and /etc")
    if on_plan is not None:
        on_plan(plan)
    if request.dry_run:
        return RecoverReport(plan, applied=False)
    return apply_plan(
        plan, repo, snapshot_id, snapshot, new_machine_id=request.new_machine_id, on_phase=on_phase
    )
