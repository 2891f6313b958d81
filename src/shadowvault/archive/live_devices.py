"""The device a hard-linked entry read from a shadow records: its live volume's, not the snapshot's.

A node records st_dev only for hard-linked entries (`metadata.recorded_device`): a restore groups
the names of one inode by (device, inode), and only that grouping within one snapshot matters. A
btrfs or LVM snapshot shows its files under an st_dev of its own, another one whenever two
snapshots exist at once, so the trees holding hard links came out new at such a backup although
nothing had changed; the live volume's st_dev stays as long as it is mounted.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable


def live_devices(read_and_original: Iterable[tuple[bytes, bytes]]) -> dict[int, int]:
    """The st_dev each (read path, original path) pair is read under -> its original's, for pairs
    read from elsewhere (a shadow). A device is kept as it is where its original is also read
    live, is two shadows' original, or is itself what another pair is read under: names of
    different inodes would share a (device, inode)."""
    shown_as: dict[int, int] = {}
    read_live: set[int] = set()
    for read, original in read_and_original:
        try:
            shown = os.lstat(read).st_dev
            live = shown if read == original else os.lstat(original).st_dev
        except OSError:
            continue
        if shown == live:
            read_live.add(live)
        else:
            shown_as.setdefault(shown, live)
    targets = Counter(shown_as.values())
    return {
        shown: live
        for shown, live in shown_as.items()
        if targets[live] == 1 and live not in read_live and live not in shown_as
    }
