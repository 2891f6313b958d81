"""How commands print: rich tables for people, JSON for scripts, errors as one line on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

# Off a terminal, rich would cut table cells at 80 columns; ids and paths must never be cut.
_stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def to_builtins(obj: Any) -> Any:
    """Turn msgspec structs, paths and the like into plain JSON-able values."""
    return msgspec.to_builtins(obj, enc_hook=str)


def print_json(obj: Any) -> None:
    """Print one JSON document (or one JSON line) on stdout."""
    sys.stdout.write(msgspec.json.encode(to_builtins(obj)).decode() + "\n")
    sys.stdout.flush()


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Print rows as a table for a person reading a terminal."""
    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    _stdout.print(table)


def info(message: str) -> None:
    """A human-readable line of result on stdout."""
    _stdout.print(message, markup=False)


def note(message: str) -> None:
    """A progress or advisory line on stderr (never mixed into results)."""
    _stderr.print(message, markup=False)


def warn(message: str) -> None:
    """A warning on stderr."""
    _stderr.print(f"shadowvault: warning: {message}", markup=False)


def error_line(message: str) -> None:
    """The one line a failing command prints."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    sys.stderr.write(f"shadowvault: error: {first}\n")
    sys.stderr.flush()


def emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    """Print `data` as JSON when asked, else call `human` to print it for a person."""
    if as_json:
        print_json(data)
    else:
        human()
