"""How commands print: rich tables for people, JSON for scripts, errors as one line on stderr.

Every line meant for a person goes through `escape_text`: messages carry file names, and a name can
hold control characters that would drive the terminal. Under `--json` a failing command's error is
one JSON line on stderr, `{"message_type": "exit_error", "code": N, "message": "..."}` (restic's form).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.text import Text

from shadowvault.cli.tables import render_table
from shadowvault.display import escape_text

# Off a terminal, rich would cut table cells at 80 columns; ids and paths must never be cut.
# No emoji codes either: a file name may contain ":smile:".
_stdout = Console(
    highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 100_000
)
_stderr = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def to_builtins(obj: Any) -> Any:
    """Turn msgspec structs, paths and the like into plain JSON-able values."""
    return msgspec.to_builtins(obj, enc_hook=str)


# characters that JSON allows raw in strings but line splitters (Python's splitlines, JavaScript) break at
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_text(obj: Any) -> str:
    """One JSON document on one line, whatever the names in it hold."""
    text = msgspec.json.encode(to_builtins(obj)).decode()
    if not text.isascii():
        for char, escaped in _LINE_BREAKS.items():
            text = text.replace(char, escaped)  # only inside strings: JSON has no other place for them
    return text


def print_json(obj: Any) -> None:
    """Print one JSON document (or one JSON line) on stdout."""
    sys.stdout.write(json_text(obj) + "\n")
    sys.stdout.flush()


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Print rows as a table: fitting the terminal's width on a terminal, every value whole (plain
    text, no box drawing) into a pipe or a file."""
    cells = [["" if cell is None else _lines(str(cell)) for cell in row] for row in rows]
    on_terminal = sys.stdout.isatty()
    lines = render_table(columns, cells, _stdout.width if on_terminal else None)
    if title:
        _write_line(escape_text(title), bold=on_terminal)
    _write_line(lines[0], bold=on_terminal)
    for line in lines[1:]:
        _write_line(line, bold=False)


def _write_line(line: str, *, bold: bool) -> None:
    # Text, not str: a cell is data (a path, a tag), never rich markup like "[/x]"
    _stdout.print(Text(line, style="bold" if bold else ""), soft_wrap=True)


def _lines(text: str) -> str:
    """Text of several lines (a table, a cell listing paths): its line breaks kept, each line escaped."""
    return "\n".join(escape_text(line) for line in text.split("\n"))


QUIET = "shadowvault.quiet"  # the root context's meta key: the command line asks for -q/--quiet


def quiet() -> bool:
    """Whether -q/--quiet was given: `info`, `note` and progress (cli/progress.py) then print nothing;
    tables, JSON, `listing`, warnings and errors still do (they are what was asked for, or trouble)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(QUIET))


def info(message: str) -> None:
    """Human-readable result lines on stdout (what was done); silent under --quiet."""
    if not quiet():
        _stdout.print(_lines(message), markup=False)


def listing(message: str) -> None:
    """A line of what the command was asked to show (a listing, details): printed even under --quiet."""
    _stdout.print(_lines(message), markup=False)


def note(message: str) -> None:
    """Progress or advisory lines on stderr (never mixed into results); silent under --quiet."""
    if not quiet():
        _stderr.print(_lines(message), markup=False)


def warn(message: str) -> None:
    """A warning on stderr: one line (a line break in a name is shown as \\n)."""
    _stderr.print(f"shadowvault: warning: {escape_text(message)}", markup=False)


def json_requested(argv: Sequence[str]) -> bool:
    """Whether a command line asks for JSON (`--json` before any `--`): known even when parsing fails."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


JSON_REQUESTED = "shadowvault.json"  # the root context's meta key: the command line asks for --json


class JsonLogFormatter(logging.Formatter):
    """A log record as one JSON line, so that a --json run's stderr is JSON lines only."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json_text(
            {
                "message_type": "log",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
        )


def error_line(message: str, exit_code: int = 1, *, as_json: bool = False) -> None:
    """The one line a failing command prints: escaped text, or an exit_error JSON line under --json."""
    text = message.strip() or "unknown error"
    if as_json:
        line = json.dumps({"message_type": "exit_error", "code": exit_code, "message": text})
    else:
        line = f"shadowvault: error: {escape_text(text)}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    """Print `data` as JSON when asked, else call `human` to print it for a person."""
    if as_json:
        print_json(data)
    else:
        human()
