"""Detaching a loop device this process attached, and knowing when it is really gone.

`losetup -d` of a device still in use (udev probing after an unmount, a release the kernel
finishes later) fails, or only marks it to be cleared once free, so the device can still be listed
holding the image for a moment: a parallel test run saw it after its fixture had returned.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shadowvault import proc

DETACH_ATTEMPTS = 50  # `losetup -d` tries, 0.1 s apart, while the device is busy
GONE_WAIT = 10.0  # seconds to wait, after that, until the device no longer holds the image


def backing_file(device: str) -> str | None:
    """The file a loop device holds (None: not a loop device, or detached)."""
    try:
        return Path("/sys/block", os.path.basename(device), "loop", "backing_file").read_text().strip()
    except OSError:
        return None


def holds(device: str, image: Path) -> bool:
    """Whether `device` still holds `image` (also once the image was deleted: "PATH (deleted)")."""
    held = backing_file(device)
    return held is not None and (held == str(image) or held.startswith(f"{image} "))


def detach(device: str, image: Path) -> None:
    """Detach exactly `device` (retried while busy) and wait until it no longer holds `image`."""
    for _ in range(DETACH_ATTEMPTS):
        if proc.run(["losetup", "-d", device], check=False, timeout=30).returncode == 0:
            break
        time.sleep(0.1)
    deadline = time.monotonic() + GONE_WAIT
    while holds(device, image) and time.monotonic() < deadline:
        time.sleep(0.05)
