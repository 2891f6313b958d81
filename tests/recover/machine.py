"""The source machine of the recovery tests: a Debian disk image that boots on its own under QEMU.

Disk (MBR, written by recover's own table writer): partition 1 is the root (ext4, label svroot,
bootable) holding Debian minbase with systemd, the changes of tests/components/machines.py (user
alice in group devs, the `hello` package, probe-app.service enabled, ...), a data file, the Debian
kernel and a busybox initramfs in /boot, and extlinux; partition 2 is /srv/archive (ext4, label
svarchive). The image has no udev (installing it needs the network, and its coldplug costs a lot of
emulated time), so nothing at boot may wait for a device unit: the serial getty (bound to
dev-ttyS0.device) is masked and the console getty (agetty on /dev/console = ttyS0) enabled, and
/srv/archive is `noauto` (the boot probe mounts it; mount(8) finds it by UUID without udev).

The boot probe (sv-boot-probe.service, After=multi-user.target) prints what a user would check on
the console: the account, the enabled unit and what it did, the package, the data, the second
filesystem, then the console getty prints `sourcebox login:`.

`bootloader="grub"` builds the same machine booting with GRUB (BIOS) instead, the way Debian and
Ubuntu install it: the grub-pc package (from the debootstrap cache) installed in the root, a
grub.cfg finding the root by UUID, and the root's own grub-install run in a chroot (recover's
`install_grub`, the same steps an admin would take).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from shadowvault.disk.gpt import GptPartition
from shadowvault.disk.partition import MbrPartition, MbrTable, write_boot_code, write_table
from shadowvault.recover.bootloader import mbr_code
from shadowvault.recover.grub import install_grub
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.components.machines import change_source_machine
from tests.fixtures.boot_disk import build_boot_files, extlinux_conf, grub_cfg, qemu_boot_argv
from tests.fixtures.debootstrap import extract_root, nspawn
from tests.fixtures.tools import require_root, require_tools
from tests.inprocess_cli import run

MIB = 1 << 20
DISK_SIZE = 1024 * MIB
ROOT_PART = MbrPartition(1, 1 * MIB, 896 * MIB, 0x83, bootable=True)
ARCHIVE_PART = MbrPartition(2, 897 * MIB, DISK_SIZE - 897 * MIB, 0x83)
ROOT_UUID = "5eed0001-7a11-4b0c-9d0e-0123456789ab"
ARCHIVE_UUID = "5eed0002-7a11-4b0c-9d0e-0123456789ab"
DISK_SIGNATURE = 0x5EED5EED
ARCHIVE_NOTE = "kept on the second filesystem\n"
BOOT_TIMEOUT = 300.0
# trimmed from the image: nothing the boot or the checks need, and less to back up and restore
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/lib/apt/lists")

FSTAB = f"""# <file system> <mount point> <type> <options> <dump> <pass>
UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1
UUID={ARCHIVE_UUID}\t/srv/archive\text4\tnoauto,nodev\t0\t2
"""

PROBE = """#!/bin/sh
# The recovered machine reports what it is: read from the serial console by the test.
{
echo "svprobe target: $(systemctl is-active multi-user.target)"
echo "svprobe id: $(id alice)"
echo "svprobe probe-app: $(systemctl is-enabled probe-app.service) $(systemctl is-active probe-app.service)"
echo "svprobe probe-app ran: $(cat /var/lib/probe-app/ran)"
echo "svprobe hello: $(dpkg-query -W -f '${Status} ${Version}' hello) / $(hello)"
echo "svprobe data: $(sha256sum /srv/data/report.bin | cut -d' ' -f1)"
mount /srv/archive
label=$(findmnt -n -o LABEL /srv/archive)
echo "svprobe archive: $(cat /srv/archive/notes.txt) $label"
source=$(findmnt -n -o SOURCE /srv/archive)
echo "svprobe archive partuuid: $(blkid -p -s PART_ENTRY_UUID -o value "$source")"
echo "svprobe root: $(findmnt -n -o UUID /)"
echo "svprobe hostname: $(hostname)"
echo "svprobe machine-id: $(cat /etc/machine-id)"
echo "svprobe done"
} > /dev/console 2>&1
"""

PROBE_UNIT = """[Unit]
Description=report the recovered machine on the console
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sv-boot-probe

[Install]
WantedBy=multi-user.target
"""


# from the debootstrap cache; grub-hybrid: GRUB for both platforms, as Debian's cloud images have it
GRUB_PACKAGES = {"grub": "grub-pc", "grub-efi": "grub-efi-amd64", "grub-hybrid": "grub-pc grub-efi-amd64-bin"}
APT_INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
MACHINE_ID = "5e1f0c0ffee0d15c5e1f0c0ffee0d15c"


@dataclass(frozen=True)
class SourceMachine:
    disk: Path
    data_sha256: str


def _sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def attached(disk: Path, part: MbrPartition | GptPartition) -> Iterator[str]:
    device = _sh(
        "losetup", "--find", "--show", "-o", str(part.start), "--sizelimit", str(part.size), str(disk)
    )
    device = device.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False, timeout=60)


@contextlib.contextmanager
def mounted(device: str, where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    _sh("mount", device, str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, timeout=120)


def install_machine(root: Path, bootloader: str, fstab: str = FSTAB) -> str:
    """The OS, the admin's changes, the data, the boot files; returns the data file's sha256."""
    extract_root(root)
    change_source_machine(root)
    if bootloader in GRUB_PACKAGES:  # from the cached .debs, before the apt lists are trimmed
        done = nspawn(root, "sh", "-c", APT_INSTALL + GRUB_PACKAGES[bootloader])
        assert done.returncode == 0, done.stdout + done.stderr
    for path in TRIM:
        shutil.rmtree(root / path, ignore_errors=True)
    done = nspawn(
        root,
        "sh",
        "-c",
        "systemctl mask serial-getty@ttyS0.service && systemctl enable console-getty.service",
    )
    assert done.returncode == 0, done.stderr
    (root / "etc/fstab").write_text(fstab)
    (root / "etc/machine-id").write_text(MACHINE_ID + "\n")  # a recovery keeps it unless asked
    probe = root / "usr/local/sbin/sv-boot-probe"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    (root / "etc/systemd/system/sv-boot-probe.service").write_text(PROBE_UNIT)
    os.symlink(
        "/etc/systemd/system/sv-boot-probe.service",
        root / "etc/systemd/system/multi-user.target.wants/sv-boot-probe.service",
    )
    data = os.urandom(3 * MIB)
    (root / "srv/data").mkdir(parents=True)
    (root / "srv/data/report.bin").write_bytes(data)
    boot = build_boot_files()
    shutil.copy2(boot.kernel, root / f"boot/vmlinuz-{boot.release}")
    shutil.copy2(boot.initrd, root / f"boot/initrd.img-{boot.release}")
    if bootloader in GRUB_PACKAGES:
        table_module = "part_msdos" if bootloader == "grub" else "part_gpt"
        (root / "boot/grub/grub.cfg").write_text(grub_cfg(boot.release, ROOT_UUID, table_module))
    else:
        (root / "boot/extlinux").mkdir()
        (root / "boot/extlinux/extlinux.conf").write_text(extlinux_conf(boot.release, ROOT_UUID))
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def source_machine(directory: Path, bootloader: str = "extlinux") -> Iterator[tuple[SourceMachine, Path]]:
    """Build the source disk in `directory` (booting with extlinux or grub; grub-efi: the UEFI machine
    of efi_machine.py; grub-hybrid: the BIOS-and-UEFI GPT machine of hybrid_machine.py) and yield it
    mounted (root at the path yielded)."""
    if bootloader == "grub-efi":
        from tests.recover.efi_machine import gpt_source_machine  # it builds on this module

        with gpt_source_machine(directory) as built:
            yield built
        return
    if bootloader == "grub-hybrid":
        from tests.recover.hybrid_machine import hybrid_source_machine  # it builds on this module

        with hybrid_source_machine(directory) as built:
            yield built
        return
    disk = directory / "source.img"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    write_table(str(disk), MbrTable(DISK_SIGNATURE, (ROOT_PART, ARCHIVE_PART)))
    with contextlib.ExitStack() as stack:
        root_dev = stack.enter_context(attached(disk, ROOT_PART))
        archive_dev = stack.enter_context(attached(disk, ARCHIVE_PART))
        _sh("mkfs.ext4", "-q", "-F", "-U", ROOT_UUID, "-L", "svroot", root_dev)
        _sh("mkfs.ext4", "-q", "-F", "-U", ARCHIVE_UUID, "-L", "svarchive", archive_dev)
        root = stack.enter_context(mounted(root_dev, directory / "source-root"))
        digest = install_machine(root, bootloader)
        archive = stack.enter_context(mounted(archive_dev, root / "srv/archive"))
        (archive / "notes.txt").write_text(ARCHIVE_NOTE)
        if bootloader == "grub":
            os.sync()
            install_grub(str(disk), root, is_device=False)
        else:
            _sh("extlinux", "--install", str(root / "boot/extlinux"))
            write_boot_code(str(disk), mbr_code())
        yield SourceMachine(disk, digest), root


@dataclass(frozen=True)
class Backup:
    env: dict[str, str]
    snapshot: str
    data_sha256: str
    directory: Path


def messages(stdout: str) -> list[dict]:
    """The JSON lines of a `--json` run."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def backed_up_machine(bootloader: str) -> Iterator[Backup]:
    """The source machine built, backed up from its mounted image, and taken apart again; the
    repository and the scratch directory last until the end (removed even when a test fails)."""
    require_root()
    tools = ("qemu-system-x86_64", "losetup", "mkfs.ext4", "busybox", "systemd-nspawn")
    uefi_tools = ("chroot", "mkfs.vfat", "mcopy")
    extra = {"grub": ("chroot",), "grub-efi": uefi_tools, "grub-hybrid": uefi_tools}.get(
        bootloader, ("extlinux",)
    )
    require_tools(*tools, *extra)
    directory = Path(tempfile.mkdtemp(prefix=f"sv-recover-{bootloader}-"))
    try:
        repo = directory / "repo"
        Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
        env = {
            "SHADOWVAULT_REPOSITORY": str(repo),
            "SHADOWVAULT_PASSWORD": PASSWORD,
            "SHADOWVAULT_NO_DAEMON": "1",
        }
        with source_machine(directory, bootloader) as (machine, root):
            done = run(
                env, "backup", "--component", "system-state", "--component", "files",
                "--source-root", root, "/", "--json",
            )  # fmt: skip
            assert done.exit_code == 0, done.stderr
        (summary,) = [m for m in messages(done.stdout) if m.get("message_type") == "summary"]
        os.unlink(machine.disk)
        yield Backup(env, summary["snapshot_id"], machine.data_sha256, directory)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=False, timeout=300)


def mounts_under(prefix: str) -> list[str]:
    """The mount points of this machine whose path starts with `prefix`."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@dataclass(frozen=True)
class Recovered:
    plan: dict
    summary: dict
    mounts_left: list[str]  # what the run left mounted under its own temporary directory


@contextlib.contextmanager
def private_tempdir(directory: Path) -> Iterator[Path]:
    """`directory` as the temporary directory of the in-process commands run in the block (tempfile
    reads TMPDIR only once): what a recover leaves mounted there is told apart from what a recover
    another test runs at the same moment leaves in the shared one."""
    directory.mkdir(exist_ok=True)
    with mock.patch.object(tempfile, "tempdir", str(directory)):
        yield directory


def recover_onto(backup: Backup, target: Path) -> Recovered:
    """`recover --disk TARGET --json` of the backup's snapshot, which must succeed; its temporary
    directories under one of the backup's own (private_tempdir)."""
    with private_tempdir(backup.directory / "tmp") as private:
        done = run(backup.env, "recover", "--disk", target, backup.snapshot, "--json")
    assert done.exit_code == 0, done.stderr
    lines = messages(done.stdout)
    (plan,) = [m for m in lines if m["message_type"] == "plan"]
    (summary,) = [m for m in lines if m["message_type"] == "summary"]
    return Recovered(plan, summary, mounts_under(f"{private}/"))


def probe_facts(console: str) -> dict[str, str]:
    """The boot probe's `svprobe NAME: VALUE` lines of a serial console's text."""
    return dict(
        line.split("svprobe ", 1)[1].split(": ", 1)
        for line in console.splitlines()
        if "svprobe " in line and ": " in line
    )


def boot_until_login(disk: Path, serial: Path, uefi_vars: Path | None = None) -> str:
    """Boot `disk` until the probe is done and the login prompt is shown; the serial console's text
    (`uefi_vars`: boot with OVMF, that copy of its NVRAM)."""
    qemu = subprocess.Popen(
        qemu_boot_argv(disk, serial, uefi_vars),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            if "svprobe done" in text and "login:" in text:  # the getty may prompt before the probe ends
                return text
            if qemu.poll() is not None:
                raise AssertionError(f"QEMU exited ({qemu.returncode}): {qemu.stderr.read()!r}\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no login prompt after the probe in {BOOT_TIMEOUT:g} s:\n{text}")
            time.sleep(0.2)
    finally:
        qemu.send_signal(signal.SIGTERM)
        try:
            qemu.wait(timeout=15)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait(timeout=15)
