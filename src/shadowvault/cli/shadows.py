"""CLI commands: `shadows list/delete/expose/unexpose` and, from shadows_create, `shadows create`."""

from __future__ import annotations

import os
import time

import click

from shadowvault.cli import output
from shadowvault.cli.coordination import shadow_sets
from shadowvault.cli.shadows_create import create
from shadowvault.errors import UsageError
from shadowvault.service import private_exposure
from shadowvault.service.settings import socket_path
from shadowvault.shadow.exposure import Exposure, pick_shadow
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.requesting import IN_PROCESS, ShadowSets
from shadowvault.shadow.store import ShadowStore


@click.group("shadows")
def shadows() -> None:
    """Shadow sets: create, list, delete, expose."""


shadows.add_command(create)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _holder(manifest: ShadowSetManifest) -> str:
    """Who holds a set that is not persistent: the daemon's caller, not the daemon that made it."""
    if manifest.client_pid is not None:
        return f"pid {manifest.client_pid}'s connection to the daemon"
    return f"pid {manifest.requester_pid}"


def _print_set(manifest: ShadowSetManifest, exposed: list[Exposure]) -> None:
    """One set as a block of lines (like `vssadmin list shadows`): ids and paths are never cut."""
    persistent = "yes" if manifest.persistent else f"no (released when {_holder(manifest)} ends)"
    window = "-" if manifest.freeze_window is None else f"{manifest.freeze_window * 1000:.1f} ms"
    output.listing_line(f"shadow set {manifest.id}")
    output.listing_line(
        f"  created {_when(manifest.created)}, state {manifest.state}, persistent {persistent}"
    )
    output.listing_line(f"  freeze window {window}")
    for shadow in manifest.shadows:
        kind = "" if shadow.atomic else ", not atomic"
        invalid = f", INVALID: {shadow.invalid}" if shadow.invalid else ""
        output.listing_line(f"  shadow of {shadow.volume} ({shadow.provider}{kind}{invalid}): {shadow.path}")
    for writer in manifest.writers:
        instance = f":{writer.instance}" if writer.instance else ""
        failure = f" ({writer.failure})" if writer.failure else ""
        output.listing_line(f"  writer {writer.name}{instance}: {writer.state.value}{failure}")
    bad_shadows = {index for index, shadow in enumerate(manifest.shadows) if shadow.invalid}
    for exposure in exposed:
        # Only an exposure in use outlives its shadow's invalid mark (validity.withdraw_exposures).
        bad = (
            ", INVALID: reads there may return wrong data, unexpose it"
            if exposure.index in bad_shadows
            else ""
        )
        output.listing_line(f"  exposed at {exposure.at} (shadow of {exposure.volume}{bad})")


@shadows.command("list")
@output.json_option
def list_cmd(as_json: bool) -> None:
    """Shadow sets, oldest first (sets whose requester has ended are released first)."""
    listed = shadow_sets().list_sets(on_warning=output.warn)

    def human() -> None:
        if not listed:
            output.note("no shadow sets")
            return
        for i, (manifest, exposed) in enumerate(listed):
            if i:
                output.listing("")
            _print_set(manifest, exposed)

    data = [{**output.to_builtins(m), "exposures": output.to_builtins(e)} for m, e in listed]
    output.emit(as_json, data, human)


@shadows.command("delete")
@click.argument("set_id", metavar="[ID]", required=False)
@click.option("--oldest", is_flag=True, help="Delete the oldest shadow set.")
@click.option("--all", "delete_all", is_flag=True, help="Delete every shadow set.")
@output.json_option
def delete_cmd(set_id: str | None, oldest: bool, delete_all: bool, as_json: bool) -> None:
    """Delete a shadow set (ID or a unique prefix of it), the oldest one, or all of them.

    Exposures of the set are unmounted first; an exposure in use makes the delete fail.
    """
    if sum(bool(x) for x in (set_id, oldest, delete_all)) != 1:
        raise UsageError("say which shadow sets to delete: ID, --oldest or --all")
    deleted = shadow_sets().delete(set_id, oldest=oldest)

    def human() -> None:
        if not deleted:
            output.note("no shadow sets")
        for sid in deleted:
            output.info(f"deleted shadow set {sid}")

    output.emit(as_json, {"deleted": deleted}, human)


def _exposed_at(sets: ShadowSets, ref: str, volume: str | None, at: str | None) -> str | None:
    """Where to expose: --at DIR; else the caller's private directory next to the daemon's socket,
    which the daemon picks itself, and this process picks alike for root (docs/api.md)."""
    if at is not None:
        return os.path.abspath(at)
    if sets is not IN_PROCESS:
        return None
    if os.geteuid() != 0:  # only root mounts in process; the daemon exposes for its group's members
        raise UsageError("say where to expose the shadow: --at DIR")
    manifest = ShadowStore().load(ref)
    index, _ = pick_shadow(manifest, volume)
    return str(private_exposure.mount_point(private_exposure.base_for(socket_path()), 0, manifest.id, index))


@shadows.command("expose")
@click.argument("set_id", metavar="ID")
@click.option(
    "--at",
    "at",
    type=click.Path(file_okay=False),
    help="Directory to mount it on (default: your private directory next to the daemon's socket,"
    " <socket dir>/exposed/<uid>/).",
)
@click.option("--volume", "volume", metavar="MNT|INDEX", help="Which shadow of the set (default: the first).")
@output.json_option
def expose_cmd(set_id: str, at: str | None, volume: str | None, as_json: bool) -> None:
    """Mount one shadow of a set read-only, nosuid and nodev at a directory (created if missing)."""
    sets = shadow_sets()
    exposure = sets.expose(set_id, volume, _exposed_at(sets, set_id, volume, at))
    message = f"shadow of {exposure.volume} (set {exposure.set_id}) exposed read-only at {exposure.at}"
    output.emit(as_json, exposure, lambda: output.info(message))


@shadows.command("unexpose")
@click.argument("set_id", metavar="[ID]", required=False)
@click.option("--at", "at", type=click.Path(file_okay=False), help="The directory a shadow is exposed at.")
@output.json_option
def unexpose_cmd(set_id: str | None, at: str | None, as_json: bool) -> None:
    """Unmount an exposure (--at DIR), or every exposure of a set (ID)."""
    if (at is None) == (set_id is None):
        raise UsageError("say which exposure to remove: --at DIR or a shadow set ID")
    done = shadow_sets().unexpose(set_id, os.path.abspath(at) if at is not None else None)

    def human() -> None:
        if not done:
            output.note("nothing was exposed")
        for path in done:
            output.info(f"unexposed {path}")

    output.emit(as_json, {"unexposed": done}, human)


COMMANDS: list[click.Command] = [shadows]
