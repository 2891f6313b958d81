"""Consistency grades: how far each component's copy in a shadow set can be trusted, and why.

application: its writer held the application while the shadow was taken; filesystem: the filesystem
was frozen; crash: an atomic image without its writer's help (as after a power cut); none: read from
live files, or a non-atomic copy its writer did not hold. The manifest's notes say the rest in words.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shadowvault.paths_within import innermost
from shadowvault.shadow.events import WriterRun
from shadowvault.shadow.manifest import Component, Consistency, Shadow, ShadowSetManifest
from shadowvault.shadow.providers import registry as providers


def grade(manifest: ShadowSetManifest, runs: Sequence[WriterRun], mounts: Sequence[str]) -> None:
    """Set every component's grade and reason, and add the set's notes to the manifest."""
    shadows = {s.volume: s for s in manifest.shadows}
    for run in runs:
        for component in run.report.components:
            component.consistency, component.reason = grade_component(component, run, shadows, mounts)
    notes: list[str] = []
    for shadow in manifest.shadows:
        for note in providers.shadow_notes(shadow):
            if note and note not in notes:
                notes.append(note)
    live = [s.volume for s in manifest.shadows if s.provider == "live"]
    if live and any(run.is_filesystem_freezer and not run.degraded for run in runs):
        notes.append("fsfreeze with the live provider adds nothing: the live files are read after the thaw")
    if live:
        notes.append(
            f"live ({', '.join(live)}): the writers held their applications only during the freeze"
            " window; files there are read afterwards while the applications run, so no component"
            " on them is better than 'none'"
        )
    for run in runs:
        if run.degraded:
            notes.append(
                f"writer {run.label} failed ({run.report.failure}); its data is only crash-consistent"
            )
    manifest.notes.extend(n for n in notes if n not in manifest.notes)


def grade_component(
    component: Component, run: WriterRun, shadows: dict[str, Shadow], mounts: Sequence[str]
) -> tuple[Consistency, str]:
    """How trustworthy this component's copy is, and why, in words."""
    holders = []
    for path in component.paths:
        if not os.path.exists(path):
            continue
        mount = innermost(path, mounts)
        if mount is None:
            return Consistency.NONE, f"{path} lies outside the shadow set"
        holders.append(shadows[mount])
    if not holders:
        holders = list(shadows.values())
    if any(s.provider == "live" for s in holders):
        return Consistency.NONE, "live provider: read from the live files after the thaw"
    atomic = all(s.atomic for s in holders)
    if run.degraded or run.report.state.failed:
        if atomic:
            return Consistency.CRASH, f"writer failed ({run.report.failure}): as after a power cut"
        return Consistency.NONE, f"writer failed ({run.report.failure}) and the copy is not atomic"
    if run.is_filesystem_freezer:
        return Consistency.FILESYSTEM, "the filesystem was frozen while the shadow was taken"
    if atomic:
        return Consistency.APPLICATION, "held by its writer while the atomic shadow was taken"
    return Consistency.APPLICATION, "held by its writer for the whole copy"
