"""What check found: counts, errors, warnings and the snapshots each problem affects (a module of
its own, as the pack reading and the damage attribution add to it too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shadowvault.display import counted


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    packs_read: int = 0
    blobs_verified: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    affected_snapshots: dict[str, list[str]] = field(default_factory=dict)  # id -> problems
    unreferenced_blobs: int = 0
    unindexed_packs: int = 0
    pending_packs: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.ok:
            return f"no errors: {self.snapshots} snapshots, {self.packs} packs, {self.blobs} blobs" + (
                f", {self.blobs_verified} blobs read and verified" if self.packs_read else ""
            )
        affected = ", ".join(sid[:8] for sid in sorted(self.affected_snapshots)) or "none"
        return f"{counted(len(self.errors), 'error')} found; affected snapshots: {affected}"
