"""How a VM backup lies in a snapshot: `/vms/NAME/definition.json` and one `/vms/NAME/DISK.raw` per disk.

Each disk is an ordinary sparse file node whose content is its fixed-size chunks, so every restore
path of the archive works on it (a plain `restore SNAP:/vms/NAME --target DIR` gives raw images
with holes for the zero runs). The definition is JSON a user can read: the QEMU command line, the
disks with their original paths and formats, how consistent the copy is, and the bitmap each disk's
next incremental starts from.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import msgspec

from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.repo.format import BlobType
from shadowvault.repo.tree import Node, Tree
from shadowvault.typed_decoding import decode_json

VMS_DIR = "vms"
DEFINITION = "definition.json"
MAX_CHUNK = 64 << 20  # stored chunks are max(256 KiB, the qcow2 cluster size <= 2 MiB)
NAME_MAX = 200  # a disk name becomes DISK.qcow2 and .DISK.qcow2.sv-restore.raw in the target

# the repository calls a VM snapshot is written and read with (Repository provides them)
SaveBlob = Callable[[BlobType, bytes], bytes]
SaveTree = Callable[[Tree], bytes]
LoadTree = Callable[[bytes], Tree]
LoadBlob = Callable[[bytes], bytes]


class StoredDisk(msgspec.Struct, kw_only=True, omit_defaults=True):
    disk: str
    format: str
    filename: str
    node: str
    virtual_size: int
    chunk_size: int
    bitmap: str = ""  # the persistent bitmap that records changes since this snapshot
    incremental: bool = False
    copied_bytes: int = 0


class VmDefinition(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    argv: list[str] = []  # the QEMU command line the VM ran with
    disks: list[StoredDisk] = []
    consistency: str = "crash"  # application (guest frozen by its agent) | crash
    guest_agent: str = "none"
    status: str = ""  # QEMU's run state at the backup (running, paused, prelaunch, ...); "": not recorded
    freeze_window: float | None = None
    excluded: dict[str, str] = {}  # disk -> why the host could not capture it
    chosen: list[str] = []  # the disks --vm-disk named ([]: every disk the host could capture)
    # the disks the host could capture that --vm-disk did not name: a whole-VM restore takes them
    # from earlier snapshots (jobs/vm_sources.py); snapshots before this field leave it empty
    left_out: list[str] = []
    restored_from: dict[str, str] = {}  # in a restored NAME.json: disk -> the snapshot it came from
    warnings: list[str] = []
    libvirt_xml: str = ""  # a libvirt domain's XML (what `virsh define` takes), as found at backup


def disk_file(disk: str) -> str:
    return f"{disk}.raw"


def _file_node(name: str, content: list[bytes], size: int, *, sparse: bool) -> Node:
    now = time.time_ns()
    return Node(
        name=name.encode(),
        type="file",
        mode=0o600,
        uid=os.getuid(),
        gid=os.getgid(),
        mtime_ns=now,
        atime_ns=now,
        ctime_ns=now,
        size=size,
        content=content,
        sparse=sparse,
    )


def vm_tree(
    save_blob: SaveBlob, save_tree: SaveTree, definition: VmDefinition, images: dict[str, list[bytes]]
) -> bytes:
    """The root tree of a VM snapshot (`/vms/NAME/...`); returns its id."""
    document = msgspec.json.format(msgspec.json.encode(definition), indent=2) + b"\n"
    nodes = [_file_node(DEFINITION, [save_blob(BlobType.DATA, document)], len(document), sparse=False)]
    for disk in definition.disks:
        nodes.append(_file_node(disk_file(disk.disk), images[disk.disk], disk.virtual_size, sparse=True))
    nodes.sort(key=lambda n: n.name)
    vm_dir = save_tree(Tree(nodes=nodes))
    now = time.time_ns()
    vm_node = Node(name=definition.name.encode(), type="dir", mode=0o700, mtime_ns=now, subtree=vm_dir)
    vms = save_tree(Tree(nodes=[vm_node]))
    return save_tree(
        Tree(nodes=[Node(name=VMS_DIR.encode(), type="dir", mode=0o700, mtime_ns=now, subtree=vms)])
    )


def _child(load_tree: LoadTree, tree_id: bytes | None, name: str) -> Node:
    if tree_id is None:
        raise NotFoundError(f"{name}: not in the snapshot")
    for node in load_tree(tree_id).nodes:
        if node.name == name.encode():
            return node
    raise NotFoundError(f"{name}: not in the snapshot")


def read_vm(
    load_tree: LoadTree, load_blob: LoadBlob, root: bytes, name: str
) -> tuple[VmDefinition, dict[str, Node]]:
    """A VM snapshot's definition and its disk nodes by disk name."""
    vm_dir = _child(load_tree, _child(load_tree, root, VMS_DIR).subtree, name)
    if vm_dir.subtree is None:  # a file of that name (a files backup), no VM's directory
        raise NotFoundError(f"{name}: not in the snapshot")
    nodes = {n.name.decode(errors="surrogateescape"): n for n in load_tree(vm_dir.subtree).nodes}
    if DEFINITION not in nodes:
        raise NotFoundError(f"VM {name}: the snapshot has no {DEFINITION}")
    document = b"".join(load_blob(b) for b in nodes[DEFINITION].content)
    try:
        definition = decode_json(document, VmDefinition)
    except msgspec.DecodeError as err:
        raise RepositoryError(f"VM {name}: the snapshot's {DEFINITION} is damaged: {err}") from err
    disks = {d.disk: nodes[disk_file(d.disk)] for d in definition.disks if disk_file(d.disk) in nodes}
    _check(name, definition, disks)
    if definition.libvirt_xml:  # checked here, not once the disks are written (it was a ParseError)
        try:
            ET.fromstring(definition.libvirt_xml)
        except ET.ParseError as err:
            raise RepositoryError(
                f"VM {name}: the snapshot's libvirt domain XML is damaged ({err}): restore its disks "
                "with --disk"
            ) from err
    return definition, disks


def _check(name: str, definition: VmDefinition, disks: dict[str, Node]) -> None:
    """A stored definition is hostile input: disk names become file names in the restore's target,
    sizes and chunk sizes say where each chunk is written. RepositoryError for one that cannot be
    a backup's (damaged, or crafted by whoever else writes the repository)."""
    seen: set[str] = set()
    for disk in definition.disks:
        what = f"VM {name}: the snapshot's disk {disk.disk!r}"
        if not plain_name(disk.disk) or disk.disk in seen:
            raise RepositoryError(f"{what} is not a plain, unique name: the snapshot is damaged or crafted")
        seen.add(disk.disk)
        if not 0 < disk.chunk_size <= MAX_CHUNK or disk.virtual_size < 0:
            raise RepositoryError(
                f"{what} has size {disk.virtual_size} in chunks of {disk.chunk_size}: "
                "the snapshot is damaged or crafted"
            )
        node = disks.get(disk.disk)
        count = (disk.virtual_size + disk.chunk_size - 1) // disk.chunk_size
        if node is not None and (len(node.content) != count or node.size != disk.virtual_size):
            raise RepositoryError(
                f"{what} has {len(node.content)} chunks of {node.size} bytes, its definition "
                f"{count} of {disk.virtual_size}: the snapshot is damaged or crafted"
            )


def plain_name(name: str) -> bool:
    """Whether `name` can be a file name of its own in a directory (no path, no hidden or odd name)."""
    return (
        0 < len(name) <= NAME_MAX
        and "/" not in name
        and not name.startswith(".")
        and name.isprintable()  # no control characters, no bytes that are not UTF-8 (surrogates)
    )


def file_stem(name: str) -> str:
    """What NAME.json, NAME.sh and NAME.xml of a restored VM are called: its name, made a plain file
    name when it is not one (a VM may be called `web/01`: that restore was an internal error)."""
    if plain_name(name):
        return name
    stem = "".join(c if c.isprintable() and c != "/" else "_" for c in name).lstrip(".")
    return stem[:NAME_MAX] or "vm"


def vm_path(name: str) -> str:
    return f"/{VMS_DIR}/{name}"


def snapshot_path(name: str) -> str:
    """What a VM snapshot's `paths` records (how the next backup finds its base)."""
    return f"vm:{name}"
