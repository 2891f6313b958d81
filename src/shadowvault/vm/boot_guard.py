"""What `--verify-boot` may run: the command line a snapshot stored is hostile input, and QEMU runs as root.

Whoever can write the repository wrote that command line (a compromised client holding the
password), and the restore starts it as root on this machine. So its first word is never run: it
must name a QEMU system emulator, which is taken from PATH. Only options known to touch nothing of
the host beyond what the boot gives them are kept (an allow-list: QEMU has too many ways to run a
program, write a file or hand a host device to the guest to list the bad ones). Networks become
QEMU's user network with `restrict=on` (nothing leaves the guest), character devices that write
files write into the scratch directory, every `-drive` is opened with `-snapshot` (never written),
a `-blockdev` on any file but the boot's overlays read-only, a host file the guest would read must be
one every user may read (vm/boot_reads.py), and QEMU runs in its seccomp sandbox with spawning
denied. Anything else refuses the boot before the restore writes a byte, in one line
naming the option: the user can still read NAME.sh and start it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from shadowvault.errors import UsageError
from shadowvault.vm.boot_reads import FILE_KEYS, FILE_OPTIONS, key_reason, unreadable_reason
from shadowvault.vm.discovery import qemu_options
from shadowvault.vm.disks import NETWORK_DRIVERS

EMULATOR = re.compile(r"qemu-system-[a-z0-9_]+|qemu-kvm")
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

# options without a value that touch nothing on the host
FLAGS = {
    "-S", "-nodefaults", "-no-user-config", "-no-reboot", "-no-shutdown", "-nographic", "-snapshot",
    "-no-hpet", "-no-acpi", "-enable-kvm", "-daemonize", "-usb", "-full-screen", "-no-fd-bootchk",
}  # fmt: skip
# options whose value touches nothing on the host, or only reads what the guest boots from
VALUED = {
    "-name", "-machine", "-M", "-accel", "-cpu", "-smp", "-m", "-uuid", "-rtc", "-boot", "-global",
    "-kernel", "-initrd", "-append", "-dtb", "-bios", "-L", "-vga", "-k", "-msg", "-overcommit",
    "-numa", "-smbios", "-action", "-watchdog-action", "-icount", "-cdrom", "-hda", "-hdb", "-hdc",
    "-hdd", "-fda", "-fdb", "-pflash", "-mtdblock", "-sd", "-drive", "-blockdev", "-device", "-mon",
    "-chardev", "-netdev", "-net", "-nic", "-object", "-audiodev", "-qmp", "-pidfile", "-sandbox",
    "-display", "-serial", "-monitor", "-vnc", "-spice", "-loadvm", "-option-rom", "-fw_cfg",
    "-prom-env", "-parallel",
}  # fmt: skip
OBJECTS = {
    "memory-backend-ram", "memory-backend-memfd", "iothread", "rng-builtin", "throttle-group",
    "secret", "main-loop", "thread-context", "tls-creds-x509", "tls-creds-psk", "tls-creds-anon",
}  # fmt: skip
CHARDEVS_HERE = {"socket", "file", "pipe"}  # their `path` moves into the scratch directory
CHARDEVS = {"null", "pty", "ringbuf", "memory", "stdio", "vc", "spicevmc", "spiceport", *CHARDEVS_HERE}
DEVICE_PREFIXES = ("vfio", "vhost", "usb-host", "usb-redir", "loader", "virtio-9p", "u2f-passthru",
                   "ccid-card-passthru", "xen", "ipmi-bmc-extern", "pci-assign", "tpm-")  # fmt: skip


def emulator(argv: list[str]) -> str:
    """The QEMU system emulator on PATH that the stored command line's first word names."""
    name = os.path.basename(argv[0]) if argv else ""
    found = shutil.which(name) if EMULATOR.fullmatch(name) else None
    if found is None:
        raise UsageError(
            f"--verify-boot runs a QEMU system emulator from PATH; the snapshot's command line starts "
            f"{(argv or [''])[0]!r}"
        )
    return found


def _refuse(option: str, value: str = "", why: str = "it could reach the host from the guest") -> UsageError:
    shown = f"{option} {value}".strip()
    return UsageError(
        f"--verify-boot does not start a VM whose command line has {shown[:120]!r} ({why}): read the "
        "restored NAME.sh and start it yourself"
    )


def check(argv: list[str], disks: set[str]) -> None:
    """Refuse, before anything is restored, a command line `guarded` would refuse; `disks` are the
    image names the boot replaces with overlays of the restored disks."""
    if not argv:
        raise UsageError("the snapshot keeps no command line for this VM: --verify-boot has nothing to boot")
    guarded(argv, disks, "/nonexistent")


def guarded(argv: list[str], overlays: set[str], scratch: str) -> list[str]:
    """`argv` as --verify-boot may run it: its disks already the overlays in `overlays`, its console
    and monitor already the boot's own (boot_check._headless)."""
    out = [emulator(argv)]
    index = 1
    while index < len(argv):
        word = argv[index]
        option = "-" + word.lstrip("-") if word.startswith("-") else word
        if option in FLAGS:
            if option not in ("-daemonize", "-enable-kvm"):  # the boot is our child, under TCG
                out.append(option)
            index += 1
            continue
        if option not in VALUED or index + 1 >= len(argv):
            raise _refuse(word)
        value = argv[index + 1]
        index += 2
        kept = _value(option, value, overlays, scratch, len(out))
        if kept is not None:
            out += [option, kept]
    return [*out, "-snapshot", "-nic", "none", "-sandbox", SANDBOX]


def _value(option: str, value: str, overlays: set[str], scratch: str, position: int) -> str | None:
    """The value an allowed option keeps (None: the option goes), or UsageError."""
    _check_reads(option, value, overlays)
    first, pairs = qemu_options(value)
    if option in ("-sandbox", "-net", "-nic"):
        return None  # ours replaces the sandbox; NICs other than -netdev ones are dropped
    if option == "-netdev":
        return f"user,id={pairs.get('id', '')},restrict=on".replace(",id=,", ",")
    if option == "-object":
        kind = pairs.get("qom-type", first)
        if kind not in OBJECTS:
            raise _refuse(option, value)
        return value
    if option == "-chardev":
        if first not in CHARDEVS:
            raise _refuse(option, value)
        if first in CHARDEVS_HERE and "path" in pairs:
            pairs["path"] = os.path.join(scratch, f"chardev-{position}")
            return _join(first, pairs)
        return value
    if option == "-device" and first.startswith(DEVICE_PREFIXES):
        raise _refuse(option, value)
    if option == "-audiodev" and pairs.get("driver", first) != "none":
        raise _refuse(option, value)
    if option == "-qmp" and not first.startswith("unix:"):
        raise _refuse(option, value)
    if option == "-parallel" and value != "none":
        raise _refuse(option, value)
    if option == "-blockdev":
        return _blockdev(value, overlays)
    if option == "-drive" and pairs.get("snapshot") != "on":  # -snapshot is only its default
        return _join(first, pairs | {"snapshot": "on"}) if first else _pairs(pairs | {"snapshot": "on"})
    return value


def _check_reads(option: str, value: str, overlays: set[str]) -> None:
    """Refuse an option that would hand the guest a host file not every user may read."""
    if option in FILE_OPTIONS or option == "-L":
        why = None if value in overlays else unreadable_reason(value, directory=option == "-L")
        if why:
            raise _refuse(option, value, f"{value} {why}: the guest would read it")
        return
    if option not in FILE_KEYS:
        return
    if option == "-blockdev" and value.startswith("{"):
        return  # checked with the node itself (_blockdev)
    _, pairs = qemu_options(value)
    if option == "-global" and "property" in pairs:  # -global driver=D,property=P,value=V
        pairs = {pairs["property"]: pairs.get("value", "")}
    for key, item in pairs.items():
        why = key_reason(option, key, item, overlays)
        if why:
            raise _refuse(option, value, f"{item} {why}: the guest would read it")


def _pairs(pairs: dict[str, str]) -> str:
    return ",".join(f"{k}={v.replace(',', ',,')}" if v else k for k, v in pairs.items())


def _join(first: str, pairs: dict[str, str]) -> str:
    return f"{first},{_pairs(pairs)}" if pairs else first


def _blockdev(value: str, overlays: set[str]) -> str:
    """A -blockdev on the overlays as it is; any other one read-only (the guest never writes the host)."""
    if value.startswith("{"):
        try:
            node = json.loads(value)
            leaves = _leaves(node)
        except (ValueError, RecursionError) as err:  # not JSON, or nested past any real node
            raise _refuse("-blockdev", value) from err
        if not isinstance(node, dict):
            raise _refuse("-blockdev", value)
        for key, item in leaves:
            why = key_reason("-blockdev", key, item, overlays)
            if why:
                raise _refuse("-blockdev", value, f"{item} {why}: the guest would read it")
        foreign = any(_foreign_pair(key, item, overlays) for key, item in leaves)
        return json.dumps(node | {"read-only": True}) if foreign else value
    _, pairs = qemu_options(value)
    if not any(_foreign_pair(key, item, overlays) for key, item in pairs.items()):
        return value
    return _pairs(pairs | {"read-only": "on"})


def _leaves(node: Any) -> list[tuple[str, str]]:
    """Every `key: string` of a JSON -blockdev, however deeply its nodes nest."""
    found: list[tuple[str, str]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, item in items:
        if isinstance(item, str):
            found.append((str(key), item))
        else:
            found += _leaves(item)
    return found


def _foreign_pair(key: str, value: str, overlays: set[str]) -> bool:
    """Whether one `key=value` of a -blockdev opens anything but the overlays."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "filename":
        return value not in overlays
    return leaf == "driver" and (value in NETWORK_DRIVERS or value in ("host_device", "host_cdrom"))
