"""What LVM knows about the logical volume under a mounted filesystem, read through `lvs`.

A filesystem is on LVM when its device (major:minor from mountinfo) is a device-mapper device whose
dm uuid starts with `LVM-`; `/sys/dev/block/MAJ:MIN/dm/uuid` says so without running anything, so
volumes that are not on LVM cost nothing. The rest comes from `lvs --reportformat json`.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

from shadowvault import proc
from shadowvault.errors import CommandError, ProviderError

LVS_TIMEOUT = 60.0
_FIELDS = (
    "lv_name",
    "vg_name",
    "lv_attr",
    "lv_size",
    "origin",
    "pool_lv",
    "segtype",
    "lv_kernel_major",
    "lv_kernel_minor",
    "lv_dm_path",
    "vg_free_count",
    "vg_extent_size",
    "snap_percent",
)


@dataclass(frozen=True)
class LogicalVolume:
    """One logical volume as `lvs` reports it (sizes in bytes)."""

    vg: str
    name: str
    attr: str
    size: int
    origin: str
    pool: str
    segtype: str
    dev: str  # major:minor, "" when inactive
    dm_path: str
    vg_free_extents: int
    vg_extent_size: int
    snap_percent: float | None

    @property
    def full_name(self) -> str:
        return f"{self.vg}/{self.name}"

    @property
    def is_thin(self) -> bool:
        return self.segtype == "thin"

    @property
    def is_snapshot(self) -> bool:
        """A classic snapshot (attr 's'/'S') or a thin volume made as a snapshot of another."""
        return self.attr[:1] in ("s", "S") or bool(self.origin and self.is_thin)


def dm_uuid(dev: str) -> str | None:
    """The device-mapper uuid of block device `dev` (major:minor), None when it is no dm device."""
    if not dev:
        return None
    try:
        with open(f"/sys/dev/block/{dev}/dm/uuid", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def dm_size(name: str) -> int | None:
    """The size in bytes of the device-mapper device `name` (as /dev/mapper names it), None if none."""
    for block in glob.glob("/sys/block/dm-*"):
        try:
            with open(os.path.join(block, "dm", "name"), encoding="utf-8") as f:
                if f.read().strip() != name:
                    continue
            with open(os.path.join(block, "size"), encoding="utf-8") as f:
                return int(f.read()) * 512  # in sectors of 512 bytes, whatever the device's own
        except (OSError, ValueError):
            continue
    return None


def is_lvm_device(dev: str) -> bool:
    uuid = dm_uuid(dev)
    return uuid is not None and uuid.startswith("LVM-")


def _number(text: str) -> int:
    try:
        return int(float(text or "0"))
    except ValueError:
        return 0


def _parse(row: dict[str, str]) -> LogicalVolume:
    major, minor = _number(row.get("lv_kernel_major", "-1")), _number(row.get("lv_kernel_minor", "-1"))
    percent = row.get("snap_percent", "")
    return LogicalVolume(
        vg=row["vg_name"],
        name=row["lv_name"],
        attr=row.get("lv_attr", ""),
        size=_number(row.get("lv_size", "0")),
        origin=row.get("origin", ""),
        pool=row.get("pool_lv", ""),
        segtype=row.get("segtype", ""),
        dev=f"{major}:{minor}" if major >= 0 and minor >= 0 else "",
        dm_path=row.get("lv_dm_path", ""),
        vg_free_extents=_number(row.get("vg_free_count", "0")),
        vg_extent_size=_number(row.get("vg_extent_size", "0")),
        snap_percent=_percent(percent),
    )


def list_logical_volumes(*selection: str) -> list[LogicalVolume]:
    """Every logical volume (or those `selection` names: `vg`, `vg/lv`); ProviderError if lvs fails."""
    argv = ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", ",".join(_FIELDS)]
    return [_parse(row) for row in _report([*argv, *selection])]


def _report(argv: list[str]) -> list[dict[str, str]]:
    """The rows of the JSON report `argv` (an lvs) prints; ProviderError if it fails or prints no report."""
    try:
        out = proc.output(argv, timeout=LVS_TIMEOUT)
    except CommandError as err:
        raise ProviderError(f"cannot read the logical volumes: {err}") from err
    try:
        report = json.loads(out)["report"]
        return [row for part in report for row in part.get("lv", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ProviderError(f"lvs printed something that is not its JSON report: {out[:200]!r}") from err


def logical_volume_of(dev: str) -> LogicalVolume | None:
    """The logical volume whose device is `dev` (major:minor), None when LVM knows none."""
    for lv in list_logical_volumes():
        if lv.dev == dev:
            return lv
    return None


@dataclass(frozen=True)
class SnapshotState:
    """Whether a snapshot LV still holds its point in time, as `lvs` reports it."""

    vg: str
    name: str
    attr: str
    data_percent: float | None  # of a classic snapshot's space for changes (or a thin volume's pool)

    @property
    def invalid(self) -> bool:
        """A classic snapshot that overflowed: state 'I' (or 'S', suspended) in lv_attr, or 100 % full."""
        classic = self.attr[:1] in ("s", "S")
        full = classic and self.data_percent is not None and self.data_percent >= 100
        return full or (len(self.attr) > 4 and self.attr[4] in ("I", "S"))


def snapshot_states(name_prefix: str) -> dict[tuple[str, str], SnapshotState]:
    """Every logical volume of the machine named `name_prefix...`, by (vg, name), from one lvs.

    One call for all: each lvs scans every device, so a listing of many shadows asks once.
    ProviderError if lvs fails.
    """
    argv = ["lvs", "--reportformat", "json", "-o", "vg_name,lv_name,lv_attr,data_percent"]
    rows = _report([*argv, "--select", f"lv_name=~^{name_prefix}"])
    states = {}
    for row in rows:
        percent = row.get("data_percent", "")
        state = SnapshotState(row["vg_name"], row["lv_name"], row.get("lv_attr", ""), _percent(percent))
        states[state.vg, state.name] = state
    return states


def _percent(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
