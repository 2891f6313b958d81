"""The hypervisor's side of a VM backup: temporary targets, the point-in-time transaction, the copy jobs.

Every object this module makes in QEMU is named with the `sv-` prefix (targets `sv-tgt-*`, jobs
`sv-job-*`, bitmaps `sv-*` as vm/bitmaps.py names them), so that whatever a dead requester left
behind is recognised and removed by the next backup (`clean_leftovers`) or by the watchdog
(release.py). The copy of a disk goes into a qcow2 file of its own: a full copy holds the whole
image; an incremental one holds only the chunks the dirty bitmap marked, and has a (sparse, never
read) backing file so that `qemu-img map` tells copied clusters (depth 0, zeros included) from
untouched ones (depth 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shadowvault import cancellation, proc
from shadowvault.errors import WriterError
from shadowvault.vm import bitmaps, qmp_fields
from shadowvault.vm.disks import DiskInfo
from shadowvault.vm.qmp import QmpClient, QmpError, QmpLostError

log = logging.getLogger(__name__)

TARGET_PREFIX = "sv-tgt-"
JOB_PREFIX = "sv-job-"
CANCEL_POLL = 0.5  # seconds between looks at a cancellable run while the copies go on


@dataclass
class DiskCopy:
    """One disk's copy in a backup: where it goes and from which bitmap."""

    disk: DiskInfo
    target: str  # the temporary qcow2 file
    node: str  # its block node while attached
    job: str
    new_bitmap: str  # starts recording at the point in time; the next backup's base
    base_bitmap: str | None = None  # incremental: the changes since the base snapshot
    attached: bool = False
    completed: dict[str, Any] | None = None  # BLOCK_JOB_COMPLETED data (len, offset: bytes copied)

    @property
    def incremental(self) -> bool:
        return self.base_bitmap is not None

    def describe(self) -> dict[str, Any]:
        """What the requester needs to store the copy (the writer's metadata `copies`)."""
        return {
            "disk": self.disk.name,
            "node": self.disk.node,
            "format": self.disk.format,
            "filename": self.disk.filename,
            "virtual_size": self.disk.virtual_size,
            "chunk_size": self.disk.chunk_size,
            "target": self.target,
            "incremental": self.incremental,
            "base_bitmap": self.base_bitmap,
            "new_bitmap": self.new_bitmap,
            "copied_bytes": (self.completed or {}).get("offset", 0),
        }


def plan_copy(disk: DiskInfo, work_dir: str, set_id: str, owner: str, base_bitmap: str | None) -> DiskCopy:
    # QEMU limits node names to 31 characters: a digest of the set, the disk's index-free name cut short
    tag = f"{hashlib.sha256(set_id.encode()).hexdigest()[:8]}-{disk.name}"[:24]
    return DiskCopy(
        disk=disk,
        target=os.path.join(work_dir, f"{disk.name}.qcow2"),
        node=TARGET_PREFIX + tag,
        job=JOB_PREFIX + tag,
        new_bitmap=bitmaps.bitmap_name(owner, set_id, disk.name),
        base_bitmap=base_bitmap,
    )


def create_target(qmp: QmpClient, copy: DiskCopy) -> None:
    """Create the temporary qcow2 and attach it (before the freeze: the window stays short)."""
    size = str(copy.disk.virtual_size)
    cluster = f"cluster_size={min(copy.disk.cluster_size, 2 * 1024 * 1024)}"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", cluster]
    if copy.incremental:
        marker = copy.target + ".unchanged"
        proc.run(["truncate", "-s", size, marker])
        argv += ["-b", marker, "-F", "raw"]
    proc.run([*argv, copy.target, size])
    qmp.execute(
        "blockdev-add",
        {
            "node-name": copy.node,
            "driver": "qcow2",
            "backing": None,
            "file": {"driver": "file", "filename": os.path.abspath(copy.target)},
        },
    )
    copy.attached = True


def transaction_actions(copies: list[DiskCopy], speed: int = 0) -> list[dict[str, Any]]:
    """One atomic point in time for every disk: the new bitmaps start and the copies begin together."""
    actions: list[dict[str, Any]] = []
    for copy in copies:
        actions.append(
            {
                "type": "block-dirty-bitmap-add",
                "data": {
                    "node": copy.disk.node,
                    "name": copy.new_bitmap,
                    "persistent": True,
                    "granularity": copy.disk.chunk_size,
                },
            }
        )
        backup: dict[str, Any] = {"device": copy.disk.node, "target": copy.node, "job-id": copy.job}
        if speed:
            backup["speed"] = speed  # bytes per second: how hard the copy may press on the guest's storage
        if copy.incremental:
            # bitmap-mode never: the base bitmap stays as it is until the snapshot is stored
            backup |= {"sync": "bitmap", "bitmap": copy.base_bitmap, "bitmap-mode": "never"}
        else:
            backup |= {"sync": "full"}
        actions.append({"type": "blockdev-backup", "data": backup})
    return actions


def start_copies(qmp: QmpClient, copies: list[DiskCopy], speed: int = 0) -> None:
    if copies:
        qmp.execute("transaction", {"actions": transaction_actions(copies, speed)})


def wait_copies(qmp: QmpClient, copies: list[DiskCopy], timeout: float) -> None:
    """Wait until every copy job has ended; WriterError naming the disk if one failed or was cancelled
    in QEMU, JobCancelledError if the run is cancelled first (the writer's abort cancels the jobs)."""
    deadline = time.monotonic() + timeout
    cancelled = cancellation.current()
    jobs = {c.job: c for c in copies if c.completed is None}
    while jobs:
        cancellation.check(cancelled)
        left = max(deadline - time.monotonic(), 0.01)
        try:
            event = qmp.wait_event(
                ["BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"],
                min(left, CANCEL_POLL) if cancelled else left,
                qmp_fields.job_event(jobs),
            )
        except QmpLostError:
            if qmp.connected and time.monotonic() < deadline:
                continue  # no job ended in this slice: look at the cancellation again
            raise
        data = qmp_fields.finished_job(qmp, event["data"])
        copy = jobs.pop(data["device"])
        if event["event"] == "BLOCK_JOB_CANCELLED" or data.get("error"):
            why = data.get("error", "cancelled")
            raise WriterError(f"the copy of disk {copy.disk.name} failed in QEMU: {why}")
        copy.completed = data


def cancel(qmp: QmpClient, copy: DiskCopy) -> None:
    """Undo a copy of an abandoned backup, as far as QEMU lets: its job cancelled (if it had not
    ended), its target detached, its new bitmap dropped. Never raises for a QMP error of its own.
    Each step is tried on its own: a job that never started (the transaction failed, or never
    reached QEMU) must not keep the target attached."""
    if copy.completed is None:
        with contextlib.suppress(QmpError):
            qmp.execute("block-job-cancel", {"device": copy.job, "force": True})
            qmp.wait_event(["BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"], 30, about(copy.job))
    with contextlib.suppress(QmpError):
        detach(qmp, copy)
    remove_bitmap(qmp, copy.disk.node, copy.new_bitmap)


def detach(qmp: QmpClient, copy: DiskCopy) -> None:
    if copy.attached:
        qmp.execute("blockdev-del", {"node-name": copy.node})
        copy.attached = False


def remove_files(copy: DiskCopy) -> None:
    for path in (copy.target, copy.target + ".unchanged"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def about(job: str) -> Callable[[dict[str, Any]], bool]:
    """A match for events of the job `job`."""
    return lambda event: event["data"].get("device") == job


def remove_bitmap(qmp: QmpClient, node: str, name: str) -> None:
    try:
        qmp.execute("block-dirty-bitmap-remove", {"node": node, "name": name})
    except QmpError as err:
        log.info("bitmap %s on %s: %s", name, node, err)


def rotate_bitmaps(qmp: QmpClient, copy: DiskCopy, bases: set[str]) -> None:
    """The backup is stored: the disk's new bitmap is its base from now on. Drop the bitmaps of
    `bases` (those the repository's snapshots name) this disk holds: the one it replaces, or one
    that could not serve (inconsistent, or another disk's base on an image moved here)."""
    for name in sorted((set(copy.disk.bitmaps) | {copy.base_bitmap or ""}) & bases - {copy.new_bitmap}):
        remove_bitmap(qmp, copy.disk.node, name)


def clean_leftovers(qmp: QmpClient, owner: str, keep: set[str]) -> tuple[list[str], list[str]]:
    """Cancel our jobs, detach our targets, drop the bitmaps a dead requester or an earlier backup
    into the repository `owner` left (all but `keep`, the bases its snapshots name) and those of
    other repositories beyond the bound (bitmaps.unwanted); (what was left behind, what was evicted)."""
    cleaned: list[str] = []
    evicted: list[str] = []
    for job in qmp.execute("query-block-jobs") or []:
        device = qmp_fields.text(qmp, job, "device", "a block job")
        if device.startswith(JOB_PREFIX):
            try:
                qmp.execute("block-job-cancel", {"device": device, "force": True})
                qmp.wait_event(["BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"], 30, about(device))
            except QmpError as err:
                log.info("job %s: %s", device, err)
            cleaned.append(f"job {device}")
    for node in qmp.execute("query-named-block-nodes", {"flat": True}) or []:
        name = qmp_fields.text(qmp, node, "node-name", "a block node")
        if name.startswith(TARGET_PREFIX):
            try:
                qmp.execute("blockdev-del", {"node-name": name})
                cleaned.append(f"node {name}")
            except QmpError as err:
                log.info("node %s: %s", name, err)
            continue
        # a running job's own bitmaps have no name
        names = [b["name"] for b in qmp_fields.dirty_bitmaps(qmp, node) if b.get("name")]
        left, others = bitmaps.unwanted(names, owner, keep)
        for bitmap_name in left:
            remove_bitmap(qmp, name, bitmap_name)
            cleaned.append(f"bitmap {bitmap_name} on {name}")
        for bitmap_name in others:
            remove_bitmap(qmp, name, bitmap_name)
            evicted.append(f"bitmap {bitmap_name} on {name}")
    return cleaned, evicted
