"""The VM backup job: one shadow set with the qemu writer, the copies streamed in as disk images.

The set's only volume is the one holding the temporary copies, shadowed `live` (nothing of it is
read: the copies are the VM's point in time, made atomically by QEMU). Each disk is stored whole
(vm/layout.py); an incremental copy of a disk starts from the bitmap its base (the last snapshot
holding that disk: jobs/vm_bases.py) recorded and stores every unchanged chunk by reference. The
snapshot is saved before the set completes, so the bitmaps rotate (old one dropped, new one kept)
only once the backup is really in the repository.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault import __version__, paths
from shadowvault.archive.backup import username
from shadowvault.jobs.vm_bases import find_bases
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.coordinator import SetOptions, shadow_set
from shadowvault.shadow.manifest import Consistency, ShadowSetManifest
from shadowvault.shadow.volumes import volume_of
from shadowvault.shadow.writers.qemu import QemuWriter
from shadowvault.vm import bitmaps, known_images, layout, run_state
from shadowvault.vm.discovery import find_vm
from shadowvault.vm.image_store import ImageSink, ImageStats, store_image
from shadowvault.vm.layout import StoredDisk, VmDefinition

log = logging.getLogger(__name__)

VM_TAG = "vm"


@dataclass
class VmBackupRequest:
    vm: str
    disks: list[str] = field(default_factory=list)  # --vm-disk: these only (default: every capturable disk)
    full: bool = False  # ignore the base snapshot's bitmaps
    tags: list[str] = field(default_factory=list)
    agent_timeout: float = 10.0
    on_agent_failure: str = "degrade"
    freeze_timeout: float = 60.0
    copy_speed: int = 0  # bytes/s QEMU's copy may read from the guest's disks (0: no limit)


@dataclass
class VmBackupResult:
    snapshot_id: str
    snapshot: Snapshot
    definition: VmDefinition
    images: dict[str, ImageStats]
    parent: str | None
    duration: float
    copy_seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_read(self) -> int:
        return sum(s.bytes_read for s in self.images.values())


def _sink(repo: Repository) -> ImageSink:
    return ImageSink(
        blob_id=repo.blob_id,
        has_blob=repo.has_blob,
        save_blob=lambda data: repo.save_blob(BlobType.DATA, data),
        load_blob=repo.load_blob,
    )


def _grade(manifest: ShadowSetManifest, definition: VmDefinition) -> list[str]:
    """Make the qemu writer's components say what the backup took; their names.

    A copied disk is graded application when the guest froze, else crash (QEMU's copy is atomic);
    a disk the host cannot capture stays, graded none with why, and the manifest notes it; a disk
    --vm-disk left out is no part of this backup and is dropped."""
    grade = Consistency.APPLICATION if definition.consistency == "application" else Consistency.CRASH
    stopped = run_state.STOPPED.get(definition.status)
    if grade == Consistency.APPLICATION:
        why = "the guest agent froze the guest's filesystems for QEMU's atomic copy"
    elif stopped:
        why = f"QEMU's copy of a guest that was not running ({stopped}): its disks as when it stopped"
    else:
        why = "QEMU's atomic copy of a running guest that was not frozen (no guest agent answered)"
    copied = {d.disk for d in definition.disks}
    for report in manifest.writers:
        if report.name == "qemu" and report.instance == definition.name:
            kept = []
            for component in report.components:
                disk = component.metadata.get("disk", "")
                if disk in copied:
                    component.consistency, component.reason = grade, why
                elif disk in definition.excluded:
                    component.consistency = Consistency.NONE
                    component.reason = f"not backed up: {definition.excluded[disk]}"
                else:
                    continue
                kept.append(component)
            report.components = kept
    manifest.notes = [n for n in manifest.notes if not n.startswith("live:")]
    manifest.notes += [
        f"VM {definition.name}: disk {d} excluded: {w}" for d, w in definition.excluded.items()
    ]
    if stopped:
        manifest.notes.append(f"VM {definition.name} was {stopped} (QEMU status {definition.status})")
    return [c.name for c in manifest.components() if c.metadata.get("disk") in copied]


def run_vm_backup(
    repo: Repository, request: VmBackupRequest, *, on_warning: Callable[[str], None] | None = None
) -> VmBackupResult:
    """Back up one running VM; the snapshot's paths are [`vm:NAME`]."""
    started, started_wall = time.monotonic(), time.time()
    warn = on_warning or log.warning
    spec = find_vm(request.vm)
    # a full backup still keeps the bases' bitmaps of the disks it does not copy
    bases = find_bases(repo, spec.name, (lambda _: None) if request.full else warn)
    parent = None if request.full else bases.latest
    writer = QemuWriter(
        spec.name,
        spec=spec,
        disks=request.disks,
        bases=bases.disks,
        owner=bitmaps.owner_of_repository(repo.id),
        full=request.full,
        agent_timeout=request.agent_timeout,
        on_agent_failure=request.on_agent_failure,
        copy_speed=request.copy_speed,
        keeps_copies=True,
    )
    writer.preflight()  # a disk it does not have, a state that rules a backup out: refused here
    state = paths.state_dir()
    state.mkdir(parents=True, exist_ok=True)
    options = SetOptions(
        writers=[writer], provider="live", auto_writers=False, freeze_timeout=request.freeze_timeout
    )
    images: dict[str, ImageStats] = {}
    chunk_lists: dict[str, list[bytes]] = {}
    with shadow_set([volume_of(str(state)).mount_point], options) as manifest:
        copy_started = time.monotonic()
        meta: dict[str, Any] = writer.metadata()
        stored: list[StoredDisk] = []
        for copy in meta["copies"]:
            disk = copy["disk"]
            chunks, stats = store_image(
                _sink(repo),
                copy["target"],
                copy["virtual_size"],
                copy["chunk_size"],
                bases.chunks.get(disk) if copy["incremental"] else None,
            )
            chunk_lists[disk], images[disk] = chunks, stats
            stored.append(
                StoredDisk(
                    disk=disk,
                    format=copy["format"],
                    filename=copy["filename"],
                    node=copy["node"],
                    virtual_size=copy["virtual_size"],
                    chunk_size=copy["chunk_size"],
                    bitmap=copy["new_bitmap"],
                    incremental=copy["incremental"],
                    copied_bytes=copy["copied_bytes"],
                )
            )
        copy_seconds = time.monotonic() - copy_started
        definition = VmDefinition(
            name=spec.name,
            argv=list(meta["definition"]),
            disks=stored,
            consistency=meta["consistency"],
            guest_agent=meta["guest_agent"],
            status=meta["status"],
            freeze_window=meta["freeze_window"],
            excluded=dict(meta["excluded"]),
            chosen=list(request.disks),
            left_out=list(meta["left_out"]),
            warnings=list(meta["warnings"]),
            libvirt_xml=spec.libvirt_xml or "",
        )
        for message in definition.warnings:
            warn(message)
        components = _grade(manifest, definition)
        tree = layout.vm_tree(repo.save_blob, repo.save_tree, definition, chunk_lists)
        manifest_blob = repo.save_blob(BlobType.DATA, manifest_doc.encode(manifest))
        snapshot = Snapshot(
            time=started_wall,
            host=socket.gethostname(),
            username=username(),
            paths=[layout.snapshot_path(spec.name)],
            tags=[VM_TAG, *request.tags],
            tree=tree,
            parent=parent,
            manifest=manifest_blob,
            components=components,
            consistency={f"vm:{spec.name}": definition.consistency},
            summary={
                "bytes": sum(d.virtual_size for d in stored),
                "bytes_read": sum(s.bytes_read for s in images.values()),
                "added_bytes": sum(s.new_bytes for s in images.values()),
                "freeze_window": definition.freeze_window,
                "duration": round(time.monotonic() - started, 3),
            },
            program_version=__version__,
        )
        snapshot_id = repo.save_snapshot(snapshot)  # before the set completes: bitmaps rotate only now
    try:  # what --in-place may replace: this host's QEMU named these images, the repository did not
        known_images.remember(spec.name, {d.disk: d.filename for d in stored if d.filename.startswith("/")})
    except OSError as err:
        warn(f"VM {spec.name}: its images could not be recorded for in-place restores: {err}")
    return VmBackupResult(
        snapshot_id=snapshot_id,
        snapshot=snapshot,
        definition=definition,
        images=images,
        parent=parent,
        duration=time.monotonic() - started,
        copy_seconds=copy_seconds,
        warnings=list(definition.warnings),
    )
