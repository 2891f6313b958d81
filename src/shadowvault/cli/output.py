"""How commands print: tables for people, JSON for scripts, errors as one line on stderr.

Every line meant for a person goes through `escape_text`: messages carry file names, and a name can
hold control characters that would drive the terminal. Under `--json` a failing command's error is
one JSON line on stderr, `{"message_type": "exit_error", "code": N, "message": "..."}` (restic's form).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import click
import msgspec

from shadowvault.display import escape_text

# Lines are written as they are (escaped, never read as markup or emoji codes, never wrapped):
# rich, whose import costs every command ~40 ms, only draws live progress on a terminal.
BOLD, PLAIN = "\x1b[1m", "\x1b[0m"

JSON_GLOBAL = "shadowvault.json_global"  # the root context's meta key: --json given before the command


def _json_too(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """A command's --json, or the root's (`shadowvault --json ls ...`, cli/global_options.py)."""
    return bool(value or ctx.meta.get(JSON_GLOBAL))


def json_flag(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command's --json (as `as_json`), also set by the root's."""
    return click.option("--json", "as_json", is_flag=True, callback=_json_too, help=help_text)


json_option = json_flag("Print machine-readable JSON.")


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
    from shadowvault.cli.tables import render_table

    cells = [["" if cell is None else _lines(str(cell)) for cell in row] for row in rows]
    on_terminal = sys.stdout.isatty()
    lines = render_table(columns, cells, shutil.get_terminal_size().columns if on_terminal else None)
    bold = on_terminal and os.environ.get("TERM") != "dumb"
    if title:
        _write(sys.stdout, _bold(escape_text(title)) if bold else escape_text(title))
    _write(sys.stdout, _bold(lines[0]) if bold else lines[0])
    for line in lines[1:]:
        _write(sys.stdout, line)


def _bold(line: str) -> str:
    return BOLD + line + PLAIN


def _write(stream: TextIO, line: str) -> None:
    """One line, flushed: progress and results reach a pipe as they happen."""
    stream.write(line + "\n")
    stream.flush()


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
        _write(sys.stdout, _lines(message))


def listing(message: str) -> None:
    """A line of what the command was asked to show (a listing, details): printed even under --quiet."""
    _write(sys.stdout, _lines(message))


def listing_line(message: str) -> None:
    """`listing` of one line whose parts may hold line breaks (a mount point with /proc's \\012, a
    path, a reason): they are escaped too, so no part can end the line and forge the next."""
    _write(sys.stdout, escape_text(message))


def note(message: str) -> None:
    """Progress or advisory lines on stderr (never mixed into results); silent under --quiet."""
    if not quiet():
        _write(sys.stderr, _lines(message))


def warn(message: str) -> None:
    """A warning on stderr: one line (a line break in a name is shown as \\n), or under --json a
    `{"message_type": "warning", "message": ...}` line, so that a --json run's stderr is JSON lines."""
    if _json_run():
        _write(sys.stderr, _json_line({"message_type": "warning", "message": message}))
    else:
        _write(sys.stderr, f"shadowvault: warning: {escape_text(message)}")


def _json_run() -> bool:
    """Whether the running command line asks for --json (before or after the command)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.meta.get(JSON_REQUESTED) or ctx.meta.get(JSON_GLOBAL)))


def _json_line(obj: dict[str, Any]) -> str:
    """One JSON line of plain values; not json_text: a message may hold a name that is not UTF-8."""
    return json.dumps(obj, separators=(",", ":"))


def json_requested(argv: Sequence[str]) -> bool:
    """Whether a command line asks for JSON (`--json` before any `--`): known even when parsing fails."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


JSON_REQUESTED = "shadowvault.json"  # the root context's meta key: the command line asks for --json


class HumanLogFormatter(logging.Formatter):
    """A warning or error of the library as the CLI's own (`shadowvault: warning: ...`, escaped, one
    line, and the traceback of one logged with it); -v and -vv lines keep their logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            line = f"shadowvault: {record.levelname.lower()}: {escape_text(message)}"
        else:
            line = f"{record.levelname} {record.name}: {message}"
        if record.exc_info:  # logged with its cause on purpose (the daemon's internal errors)
            line += "\n" + self.formatException(record.exc_info)
        return line


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
        line = _json_line({"message_type": "exit_error", "code": exit_code, "message": text})
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
