"""A hostile repository: crafted VM snapshots must never make a VM restore run, write or read outside it.

Whoever holds a shared repository's password can store any VM definition: a command line that is
not QEMU, QEMU options that run programs or write host files, disk names that are paths, sizes and
chunk sizes that do not match the chunks. Each is restored as a user would, through `shadowvault vm
restore`, as root: the restore refuses in one line (or runs only what is safe), nothing is written
outside the target, no probe file appears, and the target holds no image under a final name.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.vm import known_images, layout
from shadowvault.vm.boot_check import verify_boot
from tests.fixtures.tiny_vm import (
    READY_MARKER,
    TinyImage,
    build_tiny_image,
    make_data_disk,
    public_image,
    qemu_argv,
)
from tests.vm.helpers import cli, new_repository


def craft(
    repo: Repository,
    argv: list[str],
    disks: dict[str, tuple[int, int, list[bytes]]],
    vm: str = "web",
    filenames: dict[str, str] | None = None,
) -> str:
    """A VM snapshot exactly as given: disk name -> (virtual size, chunk size, chunk contents), and
    the image path it names for a disk (`filenames`, default /nonexistent/N.raw)."""
    stored, images = [], {}
    for name, (size, chunk, chunks) in disks.items():
        stored.append(
            layout.StoredDisk(
                disk=name,
                format="raw",
                filename=(filenames or {}).get(name, f"/nonexistent/{len(stored)}.raw"),
                node=f"node{len(stored)}",
                virtual_size=size,
                chunk_size=chunk,
            )
        )
        images[name] = [repo.save_blob(BlobType.DATA, data) for data in chunks]
    definition = layout.VmDefinition(name=vm, argv=argv, disks=stored)
    tree = layout.vm_tree(repo.save_blob, repo.save_tree, definition, images)
    snapshot = Snapshot(
        time=time.time(), host=socket.gethostname(), paths=[layout.snapshot_path(vm)], tags=["vm"], tree=tree
    )
    snapshot_id = repo.save_snapshot(snapshot)
    repo.flush()
    return snapshot_id


def one_line_error(done, code: int, *words: str) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr and "internal error" not in done.stderr, (
        done.stderr
    )
    for word in words:
        assert word in lines[0], lines[0]


DISK = {"vda": (4096, 4096, [b"\x01" * 4096])}


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["/bin/sh", "-c", "touch {probe}"], "/bin/sh"),
        (["{probe_dir}/qemu-system-x86_64", "-incoming", "exec:touch {probe}"], "-incoming"),
        (["qemu-system-x86_64", "-readconfig", "{probe}"], "-readconfig"),
        (["qemu-system-x86_64", "-plugin", "file={probe}.so"], "-plugin"),
        (["qemu-system-x86_64", "-object", "memory-backend-file,id=m,size=1M,mem-path={probe}"], "-object"),
        (["qemu-system-x86_64", "-fsdev", "local,id=f,path=/,security_model=none"], "-fsdev"),
        (["qemu-system-x86_64", "-device", "vfio-pci,host=00:02.0"], "vfio-pci"),
        (["qemu-system-x86_64", "-audiodev", "wav,id=a,path={probe}"], "-audiodev"),
        (["qemu-system-x86_64", "-D", "{probe}"], "-D"),
    ],
)
def test_verify_boot_refuses_a_command_line_that_reaches_the_host(
    tmp_path: Path, argv: list[str], shown: str
) -> None:
    probe = tmp_path / "probe"
    fake = tmp_path / "qemu-system-x86_64"  # what a stored absolute path would run: never run
    fake.write_text(f"#!/bin/sh\ntouch {probe}\n")
    fake.chmod(0o755)
    repo = new_repository(tmp_path / "repo")
    try:
        craft(repo, [w.format(probe=probe, probe_dir=tmp_path) for w in argv], DISK)
    finally:
        repo.close()
    target = tmp_path / "target"
    done = cli(
        "vm", "restore", "latest", "web", "--target", str(target), "--verify-boot", repo=tmp_path / "repo"
    )
    one_line_error(done, 2, "--verify-boot", shown)
    assert not probe.exists()
    assert not target.exists() or not list(target.iterdir())  # refused before a byte was written


SECRET_JSON = '{"driver": "raw", "file": {"driver": "file", "filename": "SECRET"}}'


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["-kernel", "SECRET"], "is not readable by every user"),
        (["-drive", "file=SECRET,if=virtio,format=raw"], "is not readable by every user"),
        (["-drive", "file.filename=SECRET,file.driver=file,if=virtio"], "is not readable by every user"),
        (["-cdrom", "/dev/null"], "is not a regular file"),
        (["-hda", "nbd://127.0.0.1:10809/export"], "is not a file on this machine"),
        (["-device", "e1000,romfile=SECRET"], "is not readable by every user"),
        (["-global", "driver=e1000,property=romfile,value=SECRET"], "is not readable by every user"),
        (["-global", "e1000.romfile=SECRET"], "is not readable by every user"),
        (["-fw_cfg", "name=opt/secret,file=SECRET"], "is not readable by every user"),
        (["-smbios", "file=SECRET"], "is not readable by every user"),
        (["-blockdev", SECRET_JSON], "is not readable by every user"),
        (["-blockdev", "driver=nbd,server.type=inet,server.host=127.0.0.1,node-name=n"], "opens nbd"),
        (["-bios", "HIDDEN"], "which not every user may enter"),
        (["-L", "/root"], "is not readable by every user"),
        (["-blockdev", "{" + '"a": [' * 5000 + "]" * 5000 + "}"], "it could reach the host"),
    ],
)
def test_verify_boot_hands_the_guest_no_host_file_a_user_could_not_read(
    tmp_path: Path, argv: list[str], why: str
) -> None:
    """A stored command line that would give the guest the host's secrets (a 0600 file, a
    world-readable one in a private directory, a device, a network export) is refused in one line
    before anything is restored."""
    secret = tmp_path / "secret"
    secret.write_text("the host's secret\n")
    secret.chmod(0o600)
    hidden = tmp_path / "hidden"  # pytest's temporary directories are root's alone
    hidden.write_text("readable, behind a closed door\n")
    hidden.chmod(0o644)
    words = [w.replace("SECRET", str(secret)).replace("HIDDEN", str(hidden)) for w in argv]
    repo = new_repository(tmp_path / "repo")
    try:
        craft(repo, ["qemu-system-x86_64", *words], DISK)
    finally:
        repo.close()
    target = tmp_path / "target"
    done = cli(
        "vm", "restore", "latest", "web", "--target", str(target), "--verify-boot", repo=tmp_path / "repo"
    )
    one_line_error(done, 2, "--verify-boot", argv[0], why)
    assert "secret" not in done.stdout
    assert not target.exists() or not list(target.iterdir())


@pytest.mark.lab  # boots a VM restored from the snapshot (make test-lab)
def test_verify_boot_keeps_the_host_out_of_a_real_boot(tmp_path: Path) -> None:
    """A real TCG boot of the tiny guest from a command line that also asks for a tap network with a
    script, a character device writing a host file and the stored QEMU path of a fake emulator: the
    guest boots to its marker, and none of those happen."""
    public = Path(tempfile.mkdtemp(prefix="sv-boot-files-"))
    try:
        _boot_with_the_host_kept_out(tmp_path, public_image(build_tiny_image(), public))
    finally:
        shutil.rmtree(public)


def _boot_with_the_host_kept_out(tmp_path: Path, image: TinyImage) -> None:
    disk = tmp_path / "vda.qcow2"
    make_data_disk(disk, "16M")
    probe, script = tmp_path / "chardev-probe", tmp_path / "ifup"
    script.write_text(f"#!/bin/sh\ntouch {tmp_path / 'script-ran'}\n")
    script.chmod(0o755)
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path / 'fake-ran'}\n")
    fake.chmod(0o755)
    argv = qemu_argv(image, tmp_path, {"vda": disk}, workload=False)
    argv[0] = str(fake)
    argv += ["-chardev", f"file,path={probe},id=c9", "-device", "virtio-serial-pci,id=vs9"]
    argv += ["-device", "virtserialport,chardev=c9,name=probe.0,bus=vs9.0"]
    argv += ["-netdev", f"tap,id=n0,script={script},downscript=no", "-device", "virtio-net-pci,netdev=n0"]
    result = verify_boot(argv, {str(disk): (str(disk), "qcow2")}, READY_MARKER, timeout=240)
    assert READY_MARKER in result.console_tail
    for ran in (probe, tmp_path / "script-ran", tmp_path / "fake-ran"):
        assert not ran.exists(), ran


@pytest.mark.parametrize(
    ("disks", "shown"),
    [
        ({"../escape": (4096, 4096, [b"\x01" * 4096])}, "'../escape' is not a plain"),
        ({"a/b": (4096, 4096, [b"\x01" * 4096])}, "'a/b' is not a plain"),
        ({"..": (4096, 4096, [b"\x01" * 4096])}, "'..' is not a plain"),
        ({"": (4096, 4096, [b"\x01" * 4096])}, "'' is not a plain"),
        ({"vd\na": (4096, 4096, [b"\x01" * 4096])}, "is not a plain"),
        ({"vda": (5, 0, [b"\x01" * 5])}, "in chunks of 0"),
        ({"vda": (-1, 4096, [b"\x01"])}, "has size -1"),
        ({"vda": (1 << 62, 4096, [b"\x01" * 4096])}, "has 1 chunks"),
        ({"vda": (5, 2, [b"\x01" * 5])}, "has 1 chunks"),
        ({"vda": (8192, 4096, [b"\x01" * 8192, b"\x02" * 4096])}, "chunk 0 of the image is 8192 bytes"),
        ({"vda": (4096, 4096, [b"\x01" * 100])}, "chunk 0 of the image is 100 bytes"),
    ],
)
def test_a_crafted_disk_is_refused_and_nothing_is_written(
    tmp_path: Path, disks: dict[str, tuple[int, int, list[bytes]]], shown: str
) -> None:
    repo = new_repository(tmp_path / "repo")
    try:
        craft(repo, ["qemu-system-x86_64"], disks)
    finally:
        repo.close()
    outside = tmp_path / "outside"
    target = outside / "target"
    for fmt in ("raw", "qcow2"):
        done = cli(
            "vm", "restore", "latest", "web", "--target", str(target), "--format", fmt, repo=tmp_path / "repo"
        )
        one_line_error(done, 1, shown)
        assert sorted(p.name for p in outside.rglob("*")) in ([], ["target"])  # nothing, even hidden


def test_a_restore_is_all_or_nothing_and_not_blocked_by_what_a_killed_one_left(tmp_path: Path) -> None:
    """Two disks, the second unreadable part way (a chunk of the wrong length): the restore fails and
    leaves no disk, definition or script under a final name (a rerun is not told "vda.raw exists").
    A part that a killed restore left in the target does not block the next one."""
    repo = new_repository(tmp_path / "repo")
    try:
        bad = craft(
            repo,
            ["qemu-system-x86_64"],
            {"vda": (4096, 4096, [b"\x01" * 4096]), "vdb": (4096, 4096, [b"\x02"])},
        )
        good = craft(repo, ["qemu-system-x86_64"], {"vda": (8192, 4096, [b"\x03" * 4096, b"\x04" * 4096])})
    finally:
        repo.close()
    target = tmp_path / "target"
    for fmt in ("raw", "qcow2"):
        done = cli(
            "vm",
            "restore",
            bad[:8],
            "web",
            "--target",
            str(target),
            "--format",
            fmt,
            repo=tmp_path / "repo",
        )
        one_line_error(done, 1, "chunk 0 of the image is 1 bytes")
        assert sorted(p.name for p in target.iterdir()) == []
    # what a restore killed by SIGKILL leaves: its parts, under the names earlier versions used too
    (target / ".vda.raw.sv-restore").write_bytes(b"half")
    (target / ".vda.qcow2.sv-restore.raw").write_bytes(b"half")
    done = cli(
        "vm", "restore", good[:8], "web", "--target", str(target), "--format", "raw", repo=tmp_path / "repo"
    )
    assert done.returncode == 0, done.stderr
    assert (target / "vda.raw").read_bytes() == b"\x03" * 4096 + b"\x04" * 4096
    assert (target / "web.json").exists() and (target / "web.sh").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in target.iterdir() if p.name.endswith("sv-restore")) == [
        ".vda.raw.sv-restore"
    ]


def test_in_place_never_replaces_a_file_the_snapshot_names_that_is_not_the_vms_image(
    tmp_path: Path, private_dirs: Path
) -> None:
    """A crafted snapshot saying VM web's disk is a system file (a stand-in for /etc/passwd): the
    in-place restore refuses, and the file is as it was, not set aside, nothing beside it."""
    system = tmp_path / "etc"
    system.mkdir()
    victim = system / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/sh\n")
    repo = new_repository(tmp_path / "repo")
    try:
        craft(repo, ["qemu-system-x86_64"], DISK, filenames={"vda": str(victim)})
    finally:
        repo.close()
    done = cli("vm", "restore", "latest", "web", "--in-place", repo=tmp_path / "repo")
    one_line_error(done, 2, "--in-place replaces only the VM's own images", str(victim))
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/sh\n"
    assert sorted(p.name for p in system.iterdir()) == ["passwd"]


def test_in_place_is_all_or_nothing_across_disks(tmp_path: Path, private_dirs: Path) -> None:
    """Two disks this host backed up; the second is unreadable part way: neither image is replaced or
    set aside and no part is left. With both whole, both are replaced and the old ones set aside."""
    images = {"vda": tmp_path / "vda.raw", "vdb": tmp_path / "vdb.raw"}
    for name, image in images.items():
        image.write_bytes(name.encode() * 2048)
    known_images.remember("web", {name: str(image) for name, image in images.items()})
    filenames = {name: str(image) for name, image in images.items()}
    repo = new_repository(tmp_path / "repo")
    try:
        bad = craft(
            repo,
            ["qemu-system-x86_64"],
            {"vda": (4096, 4096, [b"\x01" * 4096]), "vdb": (4096, 4096, [b"\x02"])},
            filenames=filenames,
        )
        good = craft(
            repo,
            ["qemu-system-x86_64"],
            {"vda": (4096, 4096, [b"\x03" * 4096]), "vdb": (4096, 4096, [b"\x04" * 4096])},
            filenames=filenames,
        )
    finally:
        repo.close()
    done = cli("vm", "restore", bad[:8], "web", "--in-place", repo=tmp_path / "repo")
    one_line_error(done, 1, "chunk 0 of the image is 1 bytes")
    assert {name: image.read_bytes() for name, image in images.items()} == {
        "vda": b"vda" * 2048,
        "vdb": b"vdb" * 2048,
    }
    beside = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("v", ".")))
    assert beside == ["vda.raw", "vdb.raw"]
    done = cli("vm", "restore", good[:8], "web", "--in-place", repo=tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    assert images["vda"].read_bytes() == b"\x03" * 4096 and images["vdb"].read_bytes() == b"\x04" * 4096
    assert sorted(p.read_bytes()[:3] for p in tmp_path.glob("*.pre-restore-*")) == [b"vda", b"vdb"]
