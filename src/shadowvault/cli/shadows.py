"""CLI commands: `shadows list/delete/expose/unexpose` and, from shadows_create, `shadows create`."""

from __future__ import annotations

import time

import click

from shadowvault.cli import output
from shadowvault.cli.shadows_create import create
from shadowvault.errors import PermissionDeniedError, ShadowvaultError, UsageError
from shadowvault.shadow import exposure as exposing
from shadowvault.shadow.exposure import Exposure
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.store import ShadowStore


@click.group("shadows")
def shadows() -> None:
    """Shadow sets: create, list, delete, expose."""


shadows.add_command(create)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _print_set(manifest: ShadowSetManifest, exposed: list[Exposure]) -> None:
    """One set as a block of lines (like `vssadmin list shadows`): ids and paths are never cut."""
    persistent = "yes" if manifest.persistent else f"no (released when pid {manifest.requester_pid} ends)"
    window = "-" if manifest.freeze_window is None else f"{manifest.freeze_window * 1000:.1f} ms"
    output.info(f"shadow set {manifest.id}")
    output.info(f"  created {_when(manifest.created)}, state {manifest.state}, persistent {persistent}")
    output.info(f"  freeze window {window}")
    for shadow in manifest.shadows:
        kind = "" if shadow.atomic else ", not atomic"
        output.info(f"  shadow of {shadow.volume} ({shadow.provider}{kind}): {shadow.path}")
    for writer in manifest.writers:
        instance = f":{writer.instance}" if writer.instance else ""
        failure = f" ({writer.failure})" if writer.failure else ""
        output.info(f"  writer {writer.name}{instance}: {writer.state.value}{failure}")
    for exposure in exposed:
        output.info(f"  exposed at {exposure.at} (shadow of {exposure.volume})")


@shadows.command("list")
@output.json_option
def list_cmd(as_json: bool) -> None:
    """Shadow sets, oldest first (sets whose requester has ended are released first)."""
    store = ShadowStore()
    try:
        store.reap()
    except PermissionDeniedError:
        pass  # a user who may not release sets may still list them (or is told why not, below)
    except ShadowvaultError as err:
        output.warn(f"sets of ended requesters were not released: {err}")
    sets = store.list()
    exposures = exposing.exposures(store)

    def exposed(set_id: str) -> list[Exposure]:
        return [e for e in exposures if e.set_id == set_id]

    def human() -> None:
        if not sets:
            output.note("no shadow sets")
            return
        for i, manifest in enumerate(sets):
            if i:
                output.info("")
            _print_set(manifest, exposed(manifest.id))

    data = [{**output.to_builtins(m), "exposures": output.to_builtins(exposed(m.id))} for m in sets]
    output.emit(as_json, data, human)


@shadows.command("delete")
@click.argument("set_id", metavar="ID", required=False)
@click.option("--oldest", is_flag=True, help="Delete the oldest shadow set.")
@click.option("--all", "delete_all", is_flag=True, help="Delete every shadow set.")
@output.json_option
def delete_cmd(set_id: str | None, oldest: bool, delete_all: bool, as_json: bool) -> None:
    """Delete a shadow set (ID or a unique prefix of it), the oldest one, or all of them.

    Exposures of the set are unmounted first; an exposure in use makes the delete fail.
    """
    if sum(bool(x) for x in (set_id, oldest, delete_all)) != 1:
        raise UsageError("say which shadow sets to delete: ID, --oldest or --all")
    store = ShadowStore()
    if set_id:
        deleted = [store.load(set_id).id]
        store.release(deleted[0])
    elif oldest:
        deleted = [store.delete_oldest()]
    else:
        deleted = store.delete_all()

    def human() -> None:
        if not deleted:
            output.note("no shadow sets")
        for sid in deleted:
            output.info(f"deleted shadow set {sid}")

    output.emit(as_json, {"deleted": deleted}, human)


@shadows.command("expose")
@click.argument("set_id", metavar="ID")
@click.option("--at", "at", required=True, type=click.Path(file_okay=False), help="Directory to mount it on.")
@click.option("--volume", "volume", metavar="MNT|INDEX", help="Which shadow of the set (default: the first).")
@output.json_option
def expose_cmd(set_id: str, at: str, volume: str | None, as_json: bool) -> None:
    """Mount one shadow of a set read-only at a directory (created if missing)."""
    exposure = exposing.expose(ShadowStore(), set_id, volume, at)
    message = f"shadow of {exposure.volume} (set {exposure.set_id}) exposed read-only at {exposure.at}"
    output.emit(as_json, exposure, lambda: output.info(message))


@shadows.command("unexpose")
@click.argument("set_id", metavar="ID", required=False)
@click.option("--at", "at", type=click.Path(file_okay=False), help="The directory a shadow is exposed at.")
@output.json_option
def unexpose_cmd(set_id: str | None, at: str | None, as_json: bool) -> None:
    """Unmount an exposure (--at DIR), or every exposure of a set (ID)."""
    store = ShadowStore()
    if at is not None and set_id is None:
        done = exposing.unexpose(store, at=at)
    elif set_id is not None and at is None:
        done = exposing.unexpose(store, set_id=store.load(set_id).id)
    else:
        raise UsageError("say which exposure to remove: --at DIR or a shadow set ID")

    def human() -> None:
        if not done:
            output.note("nothing was exposed")
        for path in done:
            output.info(f"unexposed {path}")

    output.emit(as_json, {"unexposed": done}, human)


COMMANDS: list[click.Command] = [shadows]
