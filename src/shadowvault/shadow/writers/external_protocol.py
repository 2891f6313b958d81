"""The external writers' protocol: one JSON request per line on stdin, one JSON reply per line on stdout.

This module is the codec: what a request holds for each event, what a valid reply is, and how the
components a writer describes become ours. The process around it (start, timeouts, termination)
is external.py's; the protocol itself is documented for writer authors in docs/writers.md.
"""

from __future__ import annotations

import json
from typing import Any

from shadowvault.errors import WriterError
from shadowvault.shadow.manifest import Component, Consistency, RestoreMethod
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext

PROTOCOL = 1
DEFAULT_TIMEOUTS: dict[str, float] = {
    "identify": 30.0,
    "prepare_backup": 60.0,
    "prepare_snapshot": 300.0,
    "freeze": 60.0,
    "thaw": 60.0,
    "post_snapshot": 300.0,
    "backup_complete": 300.0,
    "abort": 30.0,
    "pre_restore": 600.0,
    "post_restore": 1800.0,
}
MAX_LINE = 16 << 20  # a reply longer than this is a protocol error


def encode_request(
    event: str, writer: str | None, config: dict[str, Any], timeout: float, payload: dict[str, Any] | None
) -> bytes:
    """One request line: the protocol version, the event, the writer's name and config, its timeout."""
    request = {
        "protocol": PROTOCOL,
        "event": event,
        "writer": writer,
        "config": config,
        "timeout": timeout,
        **(payload or {}),
    }
    return json.dumps(request).encode() + b"\n"


def decode_reply(line: bytes, event: str) -> dict[str, Any]:
    """The reply object on `line`; WriterError when it is not a JSON object."""
    try:
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError("not an object")
    except ValueError as err:
        shown = line[:200].decode(errors="replace")
        raise WriterError(f"answered {event} with something that is not a JSON object: {shown!r}") from err
    return reply


def check_state(reply: dict[str, Any], event: str) -> dict[str, Any]:
    """`reply` if its state is ok; WriterError with the writer's reason if it failed or is unknown."""
    if reply.get("state") == "ok":
        return reply
    if reply.get("state") == "failed":
        raise WriterError(str(reply.get("error") or f"{event} failed (no reason given)"))
    raise WriterError(f'answered {event} with state {reply.get("state")!r} (expected "ok" or "failed")')


def snapshot_payload(ctx: SnapshotContext) -> dict[str, Any]:
    """What every shadow-set event tells the writer about the set."""
    return {
        "set_id": ctx.set_id,
        "volumes": [v.mount_point for v in ctx.volumes],
        "shadows": [
            {"volume": s.volume, "path": s.path, "provider": s.provider, "atomic": s.atomic}
            for s in ctx.shadows
        ],
        "backup_type": ctx.backup_type,
        "options": ctx.options,
    }


def restore_payload(ctx: RestoreContext, name: str, instance: str | None) -> dict[str, Any]:
    """What pre_restore and post_restore tell the writer: its own components, the target, the options."""
    return {
        "components": [
            {"name": c.name, "paths": c.paths, "kind": c.kind, "metadata": c.metadata}
            for c in ctx.components
            if c.writer == name and c.instance == instance
        ],
        "target_root": ctx.target_root,
        "options": ctx.options,
    }


def parse_component(raw: Any, writer: str, instance: str | None) -> Component:
    """A component as identify describes it; WriterError when it is malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise WriterError(f'identify returned a component that is not {{"name": ..., ...}}: {raw!r:.200}')
    paths = raw.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise WriterError(f"component {raw['name']}: paths must be absolute paths")
    try:
        method = RestoreMethod(raw.get("restore_method", RestoreMethod.RESTORE_IF_CAN_REPLACE))
    except ValueError as err:
        raise WriterError(
            f"component {raw['name']}: unknown restore_method {raw.get('restore_method')!r}"
        ) from err
    return Component(
        name=raw["name"],
        writer=writer,
        instance=instance,
        kind=str(raw.get("kind", "files")),
        paths=paths,
        selectable=bool(raw.get("selectable", True)),
        restore_method=method,
        consistency=Consistency.APPLICATION,
        metadata=dict(raw.get("metadata") or {}),
    )


def merge_metadata(components: list[Component], reply: dict[str, Any]) -> None:
    """A later event may add metadata to components (by name)."""
    if not isinstance(reply.get("components"), list):
        return
    by_name = {c.name: c for c in components}
    for raw in reply["components"]:
        if isinstance(raw, dict) and raw.get("name") in by_name and isinstance(raw.get("metadata"), dict):
            by_name[raw["name"]].metadata.update(raw["metadata"])
