"""What the daemon's application restores do: a component restore and a restore through writers.

Both run the jobs/ layer's reporting calls (jobs/application_restores.py), as the CLI does in
process: plans become the run's `writer_plan`/`authoritative_plan` events before anything changes,
and the summary is what the CLI prints. Only root may start them (policy: RESTORE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shadowvault.errors import PartialFailure
from shadowvault.jobs.application_restores import (
    WriterRestoreOrder,
    restore_component_reporting,
    restore_writers_reporting,
)
from shadowvault.jobs.restore_component import ComponentRestoreRequest
from shadowvault.service.request_body import absolute
from shadowvault.service.run_work import Follow, RepositoryAccess
from shadowvault.service.runs import Run, Work


class ComponentRestoreBody(RepositoryAccess, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/component-restores."""

    restore: ComponentRestoreRequest

    def __post_init__(self) -> None:
        super().__post_init__()
        absolute([str(self.restore.options.target_root)], "restore.options.target_root")


class WriterRestoreBody(RepositoryAccess, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/writer-restores."""

    order: WriterRestoreOrder

    def __post_init__(self) -> None:
        super().__post_init__()
        target_root = self.order.request.target_root
        absolute([target_root] if target_root is not None else [], "order.request.target_root")


def decode_paths(kind: type, value: Any) -> Any:
    """msgspec's dec_hook for the Path fields of the restore options (a target root)."""
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise TypeError(f"Expected `str`, got `{type(value).__name__}`")  # a 400 naming the field


def component_restore_work(body: ComponentRestoreBody) -> Work:
    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        with body.open(write=False, kind="restore") as repo:
            summary = restore_component_reporting(repo, body.restore)
        return summary, PartialFailure.exit_code if summary["errors"] else 0

    return work


def writer_restore_work(body: WriterRestoreBody) -> Work:
    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        with body.open(write=False, kind="restore") as repo:
            return restore_writers_reporting(repo, body.order, run.emit), 0

    return work
