"""One boot of the tiny guest's kernel that reads many restored disks: each restored image attached as a
virtio disk (writes to a throwaway overlay, `snapshot=on`), each mounted by the guest's ext4 as a boot
would mount it (its journal replayed), and its last record printed on the serial console.

The guest is the tiny guest's own kernel and initramfs (tests/fixtures/tiny_vm.py) with one more
archive appended that replaces /init (the kernel unpacks concatenated initramfs archives in order),
so booting ten restored images costs one TCG boot instead of ten. Each disk carries its name as its
virtio serial, so the console says which image each line is about.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.fixtures.tiny_vm import RECORD_SIZE, build_tiny_image

DONE = "tinycheck: done"
LINE = re.compile(r"tinycheck (\S+) (\d+) (.*)")

INIT = """\
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.list); do insmod "/modules/$m.ko" 2>/dev/null; done
want=$(sed -n 's/.*tinycheck.disks=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
i=0
while [ "$(ls /sys/block | grep -c '^vd')" -lt "$want" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
for b in /sys/block/vd*; do
    d=$(basename "$b")
    name=$(cat "$b/serial" 2>/dev/null)
    if mount -t ext4 "/dev/$d" /mnt 2>/dev/null; then
        size=$(stat -c %s /mnt/records 2>/dev/null || echo 0)
        echo "tinycheck $name $size $(tail -c RECORD_SIZE /mnt/records 2>/dev/null)"
        umount /mnt
    else
        echo "tinycheck $name 0 unmountable"
    fi
done
echo "tinycheck: done"
poweroff -f
""".replace("RECORD_SIZE", str(RECORD_SIZE))


def _check_initrd(directory: Path) -> Path:
    """The tiny guest's initramfs with an archive appended whose /init reads every disk."""
    image = build_tiny_image()
    tree = directory / "check-tree"
    tree.mkdir()
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    archive = subprocess.run(
        ["busybox", "cpio", "-o", "-H", "newc"], input=b"init\n", cwd=tree, capture_output=True, check=True
    ).stdout
    extra = subprocess.run(["gzip", "-1"], input=archive, capture_output=True, check=True).stdout
    initrd = directory / "check-initrd.gz"
    initrd.write_bytes(image.initrd.read_bytes() + extra)
    return initrd


def boot_reading(
    images: dict[str, Path], directory: Path, timeout: float = 600.0
) -> dict[str, tuple[int, str]]:
    """Boot once with every image (name -> raw image) attached; per name: (bytes of /records, last record)."""
    kernel = build_tiny_image().kernel
    serial = directory / "check-serial.log"
    argv = [
        "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "256",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(_check_initrd(directory)),
        "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 tinycheck.disks={len(images)}",
        "-serial", f"file:{serial}",
    ]  # fmt: skip
    for index, (name, path) in enumerate(images.items()):
        argv += [
            "-drive", f"file={path},format=raw,if=none,id=d{index},snapshot=on",
            "-device", f"virtio-blk-pci,drive=d{index},serial={name}",
        ]  # fmt: skip
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while DONE not in (console := serial.read_text(errors="replace") if serial.exists() else ""):
            if qemu.poll() is not None:
                err = qemu.stderr.read().decode() if qemu.stderr else ""
                raise AssertionError(f"the check boot ended early ({qemu.returncode}): {err}\n{console}")
            assert time.monotonic() < deadline, f"no {DONE!r} within {timeout:g} s:\n{console}"
            time.sleep(0.2)
    finally:
        if qemu.poll() is None:
            qemu.terminate()
            try:
                qemu.wait(timeout=15)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.wait(timeout=15)
    return {m.group(1): (int(m.group(2)), m.group(3).strip()) for m in LINE.finditer(console)}
