"""`--verify-boot`: start a restored VM headless under TCG and wait for a marker on its serial console.

The boot runs on throwaway qcow2 overlays of the restored disks (the guest's writes never reach
them), with the VM's own command line rewritten once more (definition.py): TCG, no display, the
serial console to a file in a scratch directory. The command line comes from the repository, so it
is hostile input: vm/boot_guard.py decides what of it may run (a QEMU from PATH, no host files
written, no network out, QEMU's sandbox). QEMU is our child and is stopped by its PID, whatever
happens.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from shadowvault import cancellation, child_limits, proc
from shadowvault.errors import ShadowvaultError
from shadowvault.vm.boot_guard import guarded
from shadowvault.vm.definition import rewrite

log = logging.getLogger(__name__)

POLL = 0.2


class BootCheckError(ShadowvaultError):
    """The restored VM did not show its marker in time, or QEMU would not start it."""


@dataclass
class BootResult:
    seconds: float
    console_tail: str


def _headless(argv: list[str], serial: str) -> list[str]:
    out: list[str] = []
    skip = False
    for index, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word in ("-display", "-serial", "-vnc", "-spice", "-monitor") and index + 1 < len(argv):
            skip = True
            continue
        if word in ("-nographic",):
            continue
        out.append(word)
    return [*out, "-display", "none", "-serial", f"file:{serial}"]


def verify_boot(
    argv: list[str], disks: dict[str, tuple[str, str]], marker: str, timeout: float = 300.0
) -> BootResult:
    """Boot the VM whose restored disks are `disks` (restored path -> (path, format)) until `marker`."""
    if not argv:
        raise BootCheckError("the snapshot keeps no command line for this VM: nothing to boot")
    scratch = tempfile.mkdtemp(prefix="sv-verify-boot-")
    child: subprocess.Popen[bytes] | None = None
    try:
        overlays: dict[str, tuple[str, str]] = {}
        for original, (path, fmt) in disks.items():
            overlay = os.path.join(scratch, os.path.basename(path) + ".overlay.qcow2")
            proc.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(path), "-F", fmt, overlay]
            )
            overlays[original] = (overlay, "qcow2")
        serial = os.path.join(scratch, "serial.log")
        headless = _headless(rewrite(argv, overlays, scratch, tcg=True).argv, serial)
        command = guarded(headless, {path for path, _ in overlays.values()}, scratch)  # hostile input
        log.info("verify-boot: %s", " ".join(command))
        started = time.monotonic()
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=child_limits.preexec(),
        )
        deadline = started + timeout
        cancelled = cancellation.current()
        while True:
            cancellation.check(cancelled)  # the boot is stopped below, as after a failure
            console = _read(serial)
            if marker in console:
                return BootResult(round(time.monotonic() - started, 3), console[-2000:])
            if child.poll() is not None:
                err = child.stderr.read().decode(errors="replace").strip() if child.stderr else ""
                raise BootCheckError(
                    f"the restored VM stopped before {marker!r} appeared: {err or console[-500:]}"
                )
            if time.monotonic() > deadline:
                raise BootCheckError(f"no {marker!r} on the restored VM's console within {timeout:g} s")
            time.sleep(POLL)
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=15)
        shutil.rmtree(scratch, ignore_errors=True)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
