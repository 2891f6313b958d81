"""Fields read from inside QMP answers and events, checked: a crafted answer is a lost connection.

qmp.py checks the top-level shape of the answers the code reads (an object, a list of objects);
the entries inside them (a block job's device, a node's name and dirty bitmaps, a finished job's
byte counts) come from whatever listens on the monitor socket, in any shape. Read through here, a
field that is not what QEMU sends ends the conversation (QmpLostError, the monitor closed) as
garbage does, so the writer cleans up as for a loss instead of failing on an AttributeError,
KeyError or TypeError deep inside.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from shadowvault.vm.qmp import QmpClient, QmpLostError

BITMAP_FLAGS = ("recording", "inconsistent", "persistent", "busy")


def not_qemu(qmp: QmpClient, what: str) -> QmpLostError:
    """The error for a field QEMU would not send (the connection is closed: the caller raises it)."""
    qmp.close()
    return QmpLostError(f"QEMU monitor {qmp.path}: {what} is not described as QEMU does")


def text(qmp: QmpClient, entry: dict[str, Any], key: str, what: str) -> str:
    """`entry[key]` if it is a string, "" if absent."""
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise not_qemu(qmp, f"{what} ({key}: {type(value).__name__})")
    return value


def dirty_bitmaps(qmp: QmpClient, node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node's `dirty-bitmaps` (none if absent): objects whose name is a string and flags booleans."""
    value = node.get("dirty-bitmaps", [])
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise not_qemu(qmp, f"the dirty bitmaps of node {str(node.get('node-name', '?'))[:40]!r}")
    for bitmap in value:
        if not isinstance(bitmap.get("name", ""), str) or any(
            not isinstance(bitmap[flag], bool) for flag in BITMAP_FLAGS if flag in bitmap
        ):
            raise not_qemu(qmp, f"a dirty bitmap of node {str(node.get('node-name', '?'))[:40]!r}")
    return value


def finished_job(qmp: QmpClient, data: dict[str, Any]) -> dict[str, Any]:
    """A BLOCK_JOB_COMPLETED/CANCELLED event's data: its error a string, its byte counts integers."""
    counts = [data[k] for k in ("len", "offset", "speed") if k in data]
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in counts) or not isinstance(
        data.get("error", ""), str
    ):
        raise not_qemu(qmp, f"the end of block job {str(data.get('device', '?'))[:40]!r}")
    return data


def job_event(jobs: Container[str]) -> Callable[[dict[str, Any]], bool]:
    """A match for the events of the jobs named in `jobs`: one whose device is not a string is no
    job of ours (an unhashable one must not fail the lookup)."""
    return lambda event: isinstance(event["data"].get("device"), str) and event["data"]["device"] in jobs
