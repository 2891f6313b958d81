"""A VM's disks as its QMP monitor describes them, and which of them the host can capture.

As Hyper-V does, disks the host cannot take a point-in-time copy of are listed, excluded and warned
about: host block devices passed through (their contents change under other owners), network disks
QEMU opens itself (NBD, iSCSI, RBD, ...), and drives without a medium. And whether a disk's dirty
bitmap can still say what changed since the last backup (usable_base).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import Any

import msgspec

from shadowvault.errors import UsageError, WriterError
from shadowvault.vm import qmp_fields
from shadowvault.vm.qmp import QmpClient, QmpLostError

log = logging.getLogger(__name__)

MIN_CHUNK = 256 * 1024  # fixed chunk size of stored images, and the dirty bitmap's granularity
# QEMU's network block drivers (also the schemes of the URLs it names their disks with)
NETWORK_DRIVERS = ("nbd", "iscsi", "rbd", "gluster", "http", "https", "ftp", "ftps", "ssh", "nfs", "vxhs")
BLOCK_DEVICE_DRIVERS = ("host_device", "host_cdrom")


class DiskInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One disk of a VM: the node a backup job reads and what its image is."""

    name: str  # what users call it (--vm-disk, --disk): the drive id, else the node name
    node: str  # the top block node (the format node the device uses)
    format: str
    filename: str
    virtual_size: int
    cluster_size: int = 65536
    backing: list[str] = []  # backing chain, top to bottom (filenames)
    read_only: bool = False
    excluded: str = ""  # why the host cannot capture it ("" when it can)
    bitmaps: list[str] = []  # persistent dirty bitmaps on the node

    @property
    def chunk_size(self) -> int:
        return max(MIN_CHUNK, self.cluster_size)


def _protocol(filename: str) -> tuple[str, str]:
    """(driver, filename) of the node under a disk that holds its data, "" for a driver QEMU's name
    does not give. QEMU names a disk opened with options of its own (a backing file given on the
    command line, a filter) `json:{...}`: the data is at the end of its `file` children, not in
    its backing chain (which the guest never writes)."""
    if not filename.startswith("json:"):
        return "", filename
    try:
        node = json.loads(filename[len("json:") :])
    except ValueError:
        return "", filename
    while isinstance(node, dict) and isinstance(node.get("file"), dict):
        node = node["file"]
    if not isinstance(node, dict):
        return "", ""
    leaf = node.get("file") if isinstance(node.get("file"), str) else node.get("filename")
    return str(node.get("driver", "")), str(leaf or "")


def _exclusion(filename: str) -> str:
    driver, path = _protocol(filename)
    scheme = (
        path.split(":", 1)[0].split("+", 1)[0].lower() if ":" in path and not path.startswith("/") else ""
    )
    if (driver or scheme) in NETWORK_DRIVERS:
        return f"a network disk QEMU opens itself ({driver or scheme}): the host cannot capture it"
    try:
        if driver in BLOCK_DEVICE_DRIVERS or stat.S_ISBLK(os.stat(path).st_mode):
            return "a host block device passed through: not an image the hypervisor owns"
    except OSError:
        pass
    return ""


def _image_file(filename: str) -> str:
    """The file a disk's data is in, which restores and listings name: `filename` itself, or for a
    `json:{...}` name the file at the end of its `file` children."""
    driver, path = _protocol(filename)
    return path if path and driver in ("file", *BLOCK_DEVICE_DRIVERS) else filename


def _chain(image: dict[str, Any]) -> list[str]:
    chain = []
    backing = image.get("backing-image")
    while backing:
        chain.append(_image_file(backing.get("filename", "")))
        backing = backing.get("backing-image")
    return chain


def list_disks(qmp: QmpClient) -> list[DiskInfo]:
    """Every block device with a medium (and those without, excluded), as the guest sees them; an
    answer whose fields are not what QEMU sends is a lost connection (QmpLostError), as garbage is."""
    try:
        return _disks(qmp)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        qmp.close()
        raise QmpLostError(
            f"QEMU monitor {qmp.path}: its block devices are not described as QEMU does ({err!r})"
        ) from err


def _disks(qmp: QmpClient) -> list[DiskInfo]:
    nodes = {n["node-name"]: n for n in qmp.execute("query-named-block-nodes", {"flat": True}) or []}
    disks = []
    for block in qmp.execute("query-block") or []:
        inserted = block.get("inserted")
        if inserted is None:
            name = block.get("device") or block.get("qdev", "?")
            disks.append(
                DiskInfo(name=name, node="", format="", filename="", virtual_size=0, excluded="no medium")
            )
            continue
        node = inserted.get("node-name", "")
        image = inserted.get("image", {})
        filename = image.get("filename") or inserted.get("file", "")
        bitmaps = [
            b["name"]
            for b in qmp_fields.dirty_bitmaps(qmp, nodes.get(node, {}))
            if b.get("persistent") and "name" in b
        ]
        disks.append(
            DiskInfo(
                name=block.get("device") or node,
                node=node,
                format=inserted.get("drv", ""),
                filename=_image_file(filename),
                virtual_size=int(image.get("virtual-size", 0)),
                cluster_size=int(image.get("cluster-size", 65536) or 65536),
                backing=_chain(image),
                read_only=bool(inserted.get("ro", False)),
                excluded=_exclusion(filename),
                bitmaps=bitmaps,
            )
        )
    return disks


class DiskBase(msgspec.Struct, frozen=True, kw_only=True):
    """What the snapshot an incremental copy of a disk builds on holds of it: the bitmap that has
    recorded the disk's writes since, and the shape of the image it stored."""

    bitmap: str
    virtual_size: int
    chunk_size: int


def usable_base(qmp: QmpClient, disk: DiskInfo, base: DiskBase | None) -> str | None:
    """The base's bitmap if it can drive an incremental copy of `disk`, else None (a full copy).

    Not when the disk changed shape since (resized, or another cluster size: the base's chunks are
    not this image's); not when the bitmap is gone (QEMU stopped without storing it), inconsistent
    (QEMU killed after loading it: it may have missed writes) or disabled (it records nothing)."""
    if base is None:
        return None
    if (base.virtual_size, base.chunk_size) != (disk.virtual_size, disk.chunk_size):
        log.info("disk %s: changed shape since its last backup: a full copy", disk.name)
        return None
    name = base.bitmap
    for info in qmp.execute("query-named-block-nodes", {"flat": True}) or []:
        if qmp_fields.text(qmp, info, "node-name", "a block node") != disk.node:
            continue
        for bitmap in qmp_fields.dirty_bitmaps(qmp, info):
            if bitmap.get("name") == name:
                if bitmap.get("recording", True) and not bitmap.get("inconsistent", False):
                    return name
                log.info("disk %s: bitmap %s is inconsistent or disabled: a full copy", disk.name, name)
                return None
    log.info("disk %s: bitmap %s is gone: a full copy", disk.name, name)
    return None


def choose_disks(vm: str, disks: list[DiskInfo], wanted: list[str]) -> tuple[list[DiskInfo], list[DiskInfo]]:
    """(the disks a backup copies, those it must leave out) of the `wanted` ones (all when none are
    named). A name the VM does not have, or of a disk the host cannot capture, is a usage error;
    a VM with no disk the host can capture, an error."""
    known = {d.name for d in disks}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UsageError(f"VM {vm} has no disk {', '.join(unknown)} (disks: {', '.join(sorted(known))})")
    capturable = [d.name for d in disks if not d.excluded]
    for disk in disks:
        if disk.name in wanted and disk.excluded:  # asked for by name: not a warning, a mistake
            can = (
                f"disks it can back up: {', '.join(capturable)}"
                if capturable
                else "the host can capture none of its disks"
            )
            raise UsageError(f"disk {disk.name} of VM {vm} cannot be backed up: {disk.excluded} ({can})")
    chosen = [d for d in disks if not wanted or d.name in wanted]
    if not capturable:
        raise WriterError(f"VM {vm} has no disk the host can capture")
    return [d for d in chosen if not d.excluded], [d for d in chosen if d.excluded]
