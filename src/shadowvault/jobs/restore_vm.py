"""The VM restore job: a VM's disks (qcow2 or raw) and its definition into a directory, optionally booted.

Each disk is written from its chunks: all-zero chunks are left as holes, so a restored raw image is
as sparse as the stored one, and a qcow2 is made from it with `qemu-img convert`. Next to the disks
go `NAME.json` (the stored definition with the command line rewritten to the restored disks) and
`NAME.sh` (that command line, ready to run). A whole VM is every disk it had: one that a
`--vm-disk` backup left out comes from the newest earlier snapshot holding it
(jobs/vm_sources.py), and `restored_from` in NAME.json says which snapshot each disk came from.
Nothing that exists is overwritten, and a disk is written under a temporary name until it is
whole: a failed or cancelled restore leaves no part of one under its name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from shadowvault import cancellation, proc
from shadowvault.errors import RepositoryError, ShadowvaultError, UsageError
from shadowvault.jobs.vm_restore_space import check_vm_fits
from shadowvault.jobs.vm_sources import DiskSource, disk_sources
from shadowvault.paths_within import is_plain_absolute
from shadowvault.repo.repository import Repository
from shadowvault.vm import boot_guard, known_images, layout
from shadowvault.vm.boot_check import BootResult, verify_boot
from shadowvault.vm.definition import rewrite, script
from shadowvault.vm.libvirt_definition import domain_xml

log = logging.getLogger(__name__)

FORMATS = ("qcow2", "raw")
CONVERT_TIMEOUT = 6 * 3600.0


@dataclass
class VmRestoreRequest:
    snapshot: str
    vm: str
    target: str
    disks: list[str] = field(default_factory=list)
    format: str = "qcow2"
    verify_boot: bool = False
    boot_marker: str = "login:"
    boot_timeout: float = 300.0


@dataclass
class VmRestoreResult:
    snapshot_id: str
    vm: str
    disks: dict[str, str]  # disk -> restored image
    definition: str
    start_script: str
    bytes_written: int
    duration: float
    boot: BootResult | None = None
    unresolved: list[str] = field(default_factory=list)
    libvirt_definition: str | None = None  # NAME.xml, for `virsh define`, when the VM was a libvirt domain
    sources: dict[str, tuple[str, float]] = field(default_factory=dict)  # disk -> (snapshot id, its time)
    argv: list[str] = field(default_factory=list)  # the restored command line (NAME.sh's)


class RestoreWriteError(ShadowvaultError):
    """A restored file could not be written (no space, a read-only or missing directory); what the
    restore had written is removed, so the message is the whole story."""


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """An OSError writing `path` as one line naming it (ENOSPC was "internal error: OSError")."""
    try:
        yield
    except OSError as err:
        raise RestoreWriteError(f"cannot write {path}: {err.strerror or err}; nothing was restored") from err


def write_raw(
    repo: Repository, content: list[bytes], size: int, chunk_size: int, path: str, shown: str = ""
) -> int:
    """Write a raw image of `size` bytes from its chunks into the new file `path` (zero chunks left as
    holes); the bytes written. A cancelled run stops it before the next chunk. An error names
    `shown` (the final name of the file being written aside), or `path`."""
    zero_id = repo.blob_id(bytes(chunk_size))
    written = 0
    cancelled = cancellation.current()
    with writing(shown or path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with writing(shown or path):
            os.ftruncate(fd, size)
        for index, blob_id in enumerate(content):
            cancellation.check(cancelled)
            if blob_id == zero_id:
                continue
            data = repo.load_blob(blob_id)
            if len(data) != min(chunk_size, size - index * chunk_size):  # hostile input: never past its place
                raise RepositoryError(
                    f"chunk {index} of the image is {len(data)} bytes, not {chunk_size}: "
                    "the snapshot is damaged or crafted"
                )
            if not any(data):
                continue
            with writing(shown or path):
                os.pwrite(fd, data, index * chunk_size)
            written += len(data)
        with writing(shown or path):
            os.fsync(fd)
    finally:
        os.close(fd)
    return written


def write_image(
    repo: Repository, disk: layout.StoredDisk, content: list[bytes], fmt: str, path: str
) -> tuple[str, int]:
    """Write `disk` in `fmt` to `.NAME.sv-restore` beside `path` (for the caller to rename once it
    is in place); that name and the bytes written. A failure or a cancelled run leaves nothing."""
    # a name of its own: what a killed restore left (its parts) neither blocks nor is taken for this one
    unique = secrets.token_hex(4)
    part = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{unique}.sv-restore")
    raw = part if fmt == "raw" else part + ".raw"
    try:
        written = write_raw(repo, content, disk.virtual_size, disk.chunk_size, raw, path)
        if fmt == "qcow2":
            proc.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, part], timeout=CONVERT_TIMEOUT)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    finally:
        if raw != part:
            with contextlib.suppress(OSError):
                os.unlink(raw)
    return part, written


def run_vm_restore(repo: Repository, request: VmRestoreRequest) -> VmRestoreResult:
    """Restore `request.vm` of a snapshot into a directory: the disks named, or the whole VM, whose
    disks a `--vm-disk` snapshot left out come from earlier snapshots (jobs/vm_sources.py)."""
    started = time.monotonic()
    if request.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    snapshot_id, snapshot = repo.find_snapshot(request.snapshot)
    definition, sources = disk_sources(repo, request.vm, snapshot_id, snapshot, request.disks)
    target = os.path.abspath(request.target)
    outputs = {s.disk.disk: os.path.join(target, f"{s.disk.disk}.{request.format}") for s in sources}
    if request.verify_boot:  # a command line the boot would refuse is refused before a byte is written
        mapping = {s.disk.filename: (outputs[s.disk.disk], request.format) for s in sources}
        boot_guard.check(definition.argv, set(mapping))
        left = rewrite(definition.argv, mapping, target).unresolved
        if left:  # it would boot (read-only) the original image, not the restored one
            raise UsageError(
                f"--verify-boot would not boot the restored VM: its command line names the original "
                f"image {left[0]!r} in a form the restore does not rewrite: restore without "
                f"--verify-boot and start the restored {layout.file_stem(request.vm)}.sh yourself"
            )
    for path in [
        *outputs.values(),
        *(os.path.join(target, f"{layout.file_stem(request.vm)}.{x}") for x in ("json", "sh", "xml")),
    ]:
        if os.path.lexists(path):
            raise UsageError(f"{path} exists: restore into an empty directory")
    check_vm_fits(
        repo, request.vm, [(outputs[s.disk.disk], s.disk, s.content, request.format) for s in sources]
    )
    with writing(target):
        os.makedirs(target, exist_ok=True)
    created: list[str] = []
    try:
        result = _restore_into(
            repo, request, definition, sources, snapshot_id, target, outputs, created, started
        )
    except BaseException:  # all or nothing: what this restore put under a final name goes again
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    if request.verify_boot:  # a boot that fails leaves the restored VM in place: its data is whole
        formats = {path: request.format for path in outputs.values()}
        result.boot = verify_boot(
            result.argv, {p: (p, f) for p, f in formats.items()}, request.boot_marker, request.boot_timeout
        )
        result.duration = time.monotonic() - started
    return result


def _publish(path: str, data: bytes, mode: int, created: list[str]) -> None:
    """`data` as the new file `path`, whole or not at all (written aside, linked: never replaces)."""
    part = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.sv-restore")
    try:
        with writing(path):
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(part, path)
        created.append(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(part)


def _restore_into(
    repo: Repository,
    request: VmRestoreRequest,
    definition: layout.VmDefinition,
    sources: list[DiskSource],
    snapshot_id: str,
    target: str,
    outputs: dict[str, str],
    created: list[str],
    started: float,
) -> VmRestoreResult:
    written = 0
    for source in sources:
        part, size = write_image(repo, source.disk, source.content, request.format, outputs[source.disk.disk])
        with writing(outputs[source.disk.disk]):
            os.rename(part, outputs[source.disk.disk])
        created.append(outputs[source.disk.disk])
        written += size
    mapping = {s.disk.filename: (outputs[s.disk.disk], request.format) for s in sources}
    rewritten = rewrite(definition.argv, mapping, target)
    restored = msgspec.structs.replace(
        definition,
        argv=rewritten.argv,
        # named disks: the snapshot's, and those it left out that came from earlier snapshots
        disks=[*definition.disks, *(s.disk for s in sources if s.snapshot_id != snapshot_id)]
        if request.disks
        else [s.disk for s in sources],
        restored_from={s.disk.disk: s.snapshot_id for s in sources},
    )
    definition_path = os.path.join(target, f"{layout.file_stem(request.vm)}.json")
    document = msgspec.json.format(msgspec.json.encode(restored), indent=2) + b"\n"
    _publish(definition_path, document, 0o644, created)
    script_path = os.path.join(target, f"{layout.file_stem(request.vm)}.sh")
    _publish(script_path, script(rewritten.argv).encode(), 0o700, created)
    libvirt_path = None
    if definition.libvirt_xml:
        libvirt_path = os.path.join(target, f"{layout.file_stem(request.vm)}.xml")
        _publish(libvirt_path, domain_xml(definition.libvirt_xml, mapping).encode(), 0o644, created)
    return VmRestoreResult(
        snapshot_id=snapshot_id,
        vm=request.vm,
        disks=outputs,
        definition=definition_path,
        start_script=script_path,
        bytes_written=written,
        duration=time.monotonic() - started,
        unresolved=rewritten.unresolved,
        argv=rewritten.argv,
        libvirt_definition=libvirt_path,
        sources={s.disk.disk: (s.snapshot_id, s.time) for s in sources},
    )


def holders(path: str, proc_root: str = "/proc") -> list[int]:
    """PIDs of processes that have `path` open (a running VM holds its images)."""
    wanted = os.path.realpath(path)
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"{proc_root}/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc_root}/{entry}/fd/{fd}") == wanted:
                    found.append(int(entry))
                    break
            except OSError:
                continue
    return found


@dataclass
class InPlaceResult:
    snapshot_id: str
    vm: str
    disks: dict[str, str]  # disk -> its original image, now the restored one
    set_aside: dict[str, str]  # disk -> where the image that was there went
    duration: float
    sources: dict[str, tuple[str, float]]  # disk -> (snapshot id, its time) it was restored from


def run_vm_restore_in_place(
    repo: Repository, snapshot: str, vm: str, disks: list[str] | None = None
) -> InPlaceResult:
    """Put the stored disks back over a stopped VM's images, in their own format, all or none.

    Without `disks`, every disk of the VM, as in a restore to a directory (jobs/vm_sources.py).
    Only an image this host's own backups of the VM copied is replaced (vm/known_images.py: the
    snapshot's paths are hostile input), and only once no process holds it open (the VM still
    runs). Every disk is written aside first; then each image there is renamed to
    `IMAGE.pre-restore-TIME`, never deleted, and the restored one takes its name; a failure puts
    back what was there. A restored image is whole: a qcow2 that had a backing file comes back
    without one.
    """
    started = time.monotonic()
    snapshot_id, snap = repo.find_snapshot(snapshot)
    _, sources = disk_sources(repo, vm, snapshot_id, snap, disks)
    own = known_images.known(vm)
    seen: set[str] = set()
    for disk in (s.disk for s in sources):
        _check_replaceable(vm, disk, own.get(disk.disk, []), seen)
    check_vm_fits(repo, vm, [(s.disk.filename, s.disk, s.content, s.disk.format) for s in sources])
    stamp = time.strftime("%Y%m%dT%H%M%S")
    parts: dict[str, str] = {}  # disk -> its restored image, written aside
    swapped: list[tuple[str, str | None]] = []  # (image, where what was there went)
    try:
        for source in sources:
            parts[source.disk.disk], _ = write_image(
                repo, source.disk, source.content, source.disk.format, source.disk.filename
            )
        for source in sources:
            image = source.disk.filename
            aside = _aside(image, stamp) if os.path.lexists(image) else None
            if aside is not None:
                with writing(image):
                    os.rename(image, aside)
            try:
                with writing(image):
                    os.rename(parts[source.disk.disk], image)
                del parts[source.disk.disk]
            except BaseException:
                if aside is not None:
                    os.rename(aside, image)
                raise
            swapped.append((image, aside))
    except BaseException:  # all or nothing: each image as it was, no part left
        for part in parts.values():
            with contextlib.suppress(OSError):
                os.unlink(part)
        for image, aside in reversed(swapped):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image)
            if aside is not None:
                os.rename(aside, image)
        raise
    restored = {s.disk.disk: s.disk.filename for s in sources}
    set_aside = {s.disk.disk: aside for s, (_, aside) in zip(sources, swapped, strict=True) if aside}
    points = {s.disk.disk: (s.snapshot_id, s.time) for s in sources}
    return InPlaceResult(snapshot_id, vm, restored, set_aside, time.monotonic() - started, points)


def _check_replaceable(vm: str, disk: layout.StoredDisk, own: list[str], seen: set[str]) -> None:
    """UsageError unless `disk`'s stored image path may be replaced in place: one this host's
    backups of `vm` copied for that disk (`own`), a regular file or gone, not held open by anyone."""
    path = disk.filename
    if disk.format not in FORMATS:
        raise UsageError(f"disk {disk.disk} was {disk.format}: restore it to a directory instead")
    if not path.startswith("/"):
        raise UsageError(f"disk {disk.disk} ({path!r}) is not an image file: restore it to a directory")
    if path not in own or not is_plain_absolute(path) or path in seen:
        raise UsageError(
            f"disk {disk.disk} of VM {vm}: the snapshot names {path!r} as its image, which no backup "
            f"of VM {vm} on this host copied; --in-place replaces only the VM's own images: restore "
            "it with --target DIR"
        )
    seen.add(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(path)):
            raise UsageError(
                f"disk {disk.disk} of VM {vm}: the directory of {path} is gone: restore it with --target DIR"
            ) from None
        return  # the image is lost: the restore puts it back
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(
            f"disk {disk.disk} of VM {vm}: {path} is not a regular file now: restore it with --target DIR"
        )
    running = holders(path)
    if running:
        pids = ", ".join(map(str, running))
        raise UsageError(f"{path} is open (process {pids}): stop VM {vm} before restoring in place")


def _aside(image: str, stamp: str) -> str:
    """A name for what is at `image` now that no earlier restore's set-aside image has."""
    aside = f"{image}.pre-restore-{stamp}"
    number = 1
    while os.path.lexists(aside):
        number += 1
        aside = f"{image}.pre-restore-{stamp}-{number}"
    return aside
