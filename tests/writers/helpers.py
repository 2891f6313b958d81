"""Helpers for the writer tests: find a writer's report, copy its components out of the shadows."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from shadowvault.shadow.coordinator import shadow_path
from shadowvault.shadow.manifest import ShadowSetManifest, WriterReport


def report_of(manifest: ShadowSetManifest, name: str) -> WriterReport:
    reports = [w for w in manifest.writers if w.name == name]
    assert len(reports) == 1, [(w.name, w.instance) for w in manifest.writers]
    return reports[0]


def freeze_instant(manifest: ShadowSetManifest, report: WriterReport) -> float:
    """When the writer began to freeze; anything acknowledged before it must be in the copy."""
    started = report.components[0].metadata.get("freeze_started")
    assert manifest.frozen_at is not None
    assert started is None or started >= manifest.frozen_at
    return started or manifest.frozen_at


def restore_area(mount: Path) -> Path:
    """A btrfs subvolume on the test's own filesystem to restore copies into.

    Copies there are reflinks (fast), and a btrfs snapshot of the volume leaves nested subvolumes
    out, so restored copies never end up in later shadows.
    """
    area = mount / "restores"
    if not area.exists():
        subprocess.run(["btrfs", "subvolume", "create", str(area)], check=True, capture_output=True)
        area.chmod(0o755)
    return area


def restore_root(base: Path | None = None) -> Path:
    """A fresh `mktemp -d` (under `base` if given) to lay a copy down in, traversable by services."""
    root = Path(tempfile.mkdtemp(prefix="sv-restore-", dir=base))
    root.chmod(0o755)
    return root


def copy_out(manifest: ShadowSetManifest, original: str, root: Path) -> Path:
    """Copy `original` from the set's shadows to the same path under `root`, keeping owners and modes."""
    source = shadow_path(manifest, original)
    target = root / original.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    for parent in [target.parent, *target.parent.parents]:
        if parent == root.parent:
            break
        parent.chmod(0o755)
    subprocess.run(["cp", "-a", "--reflink=auto", source, str(target)], check=True, timeout=300)
    return target


def lay_down(
    manifest: ShadowSetManifest, report: WriterReport, root: Path, paths: list[str] | None = None, **options
) -> None:
    """A restore's first half: the writer's pre_restore, then its files copied from the shadows."""
    from shadowvault.jobs.restore_writer import writer_for
    from shadowvault.shadow.writers.base import RestoreContext

    ctx = RestoreContext(components=list(report.components), target_root=str(root), options=options)
    writer_for(report).pre_restore(ctx)
    for path in paths or [p for c in report.components for p in c.paths]:
        copy_out(manifest, path, root)


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(root)
