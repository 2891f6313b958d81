"""A VM's QEMU command line, rewritten to run a restored copy of it instead of the original.

The restored disks replace the original image files (`-drive file=` or `file.filename=`, `-blockdev
filename=`, and `-hda`, `-cdrom`, `-pflash` and the other options whose value is just a file), a
format node above a replaced file gets the restored format and loses its backing (a restored image
is whole), and the sockets, serial log and pidfile move into the restore directory so the copy never
collides with the original still running. What cannot be rewritten (JSON `-blockdev` syntax) is
left as it is and reported: `--verify-boot` refuses it rather than boot the original image.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from shadowvault.vm.discovery import qemu_options

DROP_FLAGS = ("-daemonize", "-enable-kvm")
# options whose whole value is an image file (the older forms of -drive): the restored one replaces it
FILE_FLAGS = ("-hda", "-hdb", "-hdc", "-hdd", "-fda", "-fdb", "-cdrom", "-pflash", "-mtdblock", "-sd")


@dataclass
class Rewritten:
    argv: list[str]
    unresolved: list[str] = field(default_factory=list)  # original images still named in the command line


def _join(first: str, pairs: dict[str, str]) -> str:
    parts = [first] if first else []
    parts += [f"{k}={v.replace(',', ',,')}" if v else k for k, v in pairs.items()]
    return ",".join(parts)


def _drive_file(pairs: dict[str, str]) -> str | None:
    """The image a `-drive` opens: `file=PATH`, or `file.filename=PATH` (options of its own)."""
    return pairs.get("file") or pairs.get("file.filename")


def _restored_drive(pairs: dict[str, str], disks: dict[str, tuple[str, str]]) -> dict[str, str]:
    """A `-drive`'s options on its restored image: that file, its format, no backing (it is whole)."""
    key = "file" if "file" in pairs else "file.filename"
    path, fmt = disks[pairs[key]]
    # the format is `format=`, or `driver=` when the file's own options are spelled out beside it
    fmt_key = "driver" if key == "file.filename" and "driver" in pairs and "format" not in pairs else "format"
    kept = {k: v for k, v in pairs.items() if k != "backing" and not k.startswith("backing.")}
    return kept | {key: path, fmt_key: fmt}


def rewrite(
    argv: list[str], disks: dict[str, tuple[str, str]], directory: str, *, tcg: bool = False
) -> Rewritten:
    """`disks`: original filename -> (restored path, restored format). Sockets etc. go to `directory`."""
    out: list[str] = []
    replaced_nodes: dict[str, str] = {}  # file node name -> restored format
    pending: list[tuple[int, str]] = []  # (index in out, value) of -blockdev format nodes, fixed at the end
    index = 0
    while index < len(argv):
        word = argv[index]
        value = argv[index + 1] if index + 1 < len(argv) else ""
        flag = "-" + word.lstrip("-")
        if flag in DROP_FLAGS:
            index += 1
            continue
        if flag in FILE_FLAGS and value in disks:  # QEMU probes its format: the restored one is found
            out += [word, disks[value][0]]
            index += 2
            continue
        if flag in ("-drive", "-blockdev", "-chardev", "-qmp", "-serial", "-pidfile", "-machine", "-accel"):
            first, pairs = qemu_options(value)
            if flag == "-drive" and _drive_file(pairs) in disks:
                value = _join(first, _restored_drive(pairs, disks))
            elif flag == "-blockdev" and value.startswith("{"):
                pass
            elif flag == "-blockdev" and pairs.get("filename") in disks:
                path, fmt = disks[pairs["filename"]]
                replaced_nodes[pairs.get("node-name", "")] = fmt
                pairs["filename"] = path
                value = _join(first, pairs)
            elif flag == "-blockdev":
                pending.append((len(out) + 1, value))
            elif flag == "-chardev" and first == "socket" and "path" in pairs:
                pairs["path"] = os.path.join(directory, os.path.basename(pairs["path"]))
                value = _join(first, pairs)
            elif flag == "-qmp" and first.startswith("unix:"):
                first = "unix:" + os.path.join(directory, os.path.basename(first[5:]))
                value = _join(first, pairs)
            elif flag == "-serial" and first.startswith("file:"):
                first = "file:" + os.path.join(directory, "serial.log")
                value = _join(first, pairs)
            elif flag == "-pidfile":
                value = os.path.join(directory, "qemu.pid")
            elif tcg and flag == "-machine" and "accel" in pairs:
                pairs["accel"] = "tcg"
                value = _join(first, pairs)
            elif tcg and flag == "-accel":
                value = "tcg"
            out += [word, value]
            index += 2
            continue
        out.append(word)
        index += 1
    for position, value in pending:
        first, pairs = qemu_options(value)
        if pairs.get("file") in replaced_nodes:
            pairs["driver"] = replaced_nodes[pairs["file"]]
            pairs.pop("backing", None)
            out[position] = _join(first, pairs)
    left = [orig for orig in disks if any(orig in word for word in out)]
    return Rewritten(out, left)


def script(argv: list[str]) -> str:
    """A shell script that starts the VM (what a user runs, or reads)."""
    return (
        "#!/bin/sh\n# Restored by shadowvault: starts the VM from its restored disks.\nexec "
        + shlex.join(argv)
        + "\n"
    )
