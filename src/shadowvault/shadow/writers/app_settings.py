"""The settings a writers.d file may give an application writer, and their TOML types.

A setting the writer does not read (a typo: `prot = 5433`, `sokcet = ...`) used to be accepted and
ignored, so the writer went on with its default (another server's socket, the default port); a
value of the wrong type (`port = "abc"`, `freeze_timeout = "x"`) failed only at the next backup's
prepare_snapshot, or as an "internal error". Both are refused when the file is read, naming it,
like every other mistake in writers.d (`writers list` shows such a file as refused, with the reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shadowvault.errors import ConfigError

STRING, INTEGER, NUMBER, FLAG = "a string", "a positive integer", "a positive number", "true or false"

COMMON: dict[str, str] = {
    "instance": STRING,
    "on_failure": STRING,
    "freeze_timeout": NUMBER,
    "password": STRING,
}


def _fits(value: Any, kind: str) -> bool:
    if kind == FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == STRING:
        return isinstance(value, str)
    if kind == INTEGER:
        return isinstance(value, int) and value > 0
    return isinstance(value, int | float) and value > 0


def check_settings(writer: str, settings: dict[str, str], config: dict[str, Any], path: Path) -> None:
    """Refuse a key `writer` does not know or a value of the wrong type (ConfigError naming `path`)."""
    known = {**COMMON, **settings}
    for key, value in config.items():
        if key in ("type", "name"):
            continue
        kind = known.get(key)
        if kind is None:
            valid = ", ".join(sorted(known))
            raise ConfigError(f"{path}: unknown setting {key!r} for a {writer} writer (valid: {valid})")
        if not _fits(value, kind):
            raise ConfigError(f"{path}: {key} must be {kind}, not {value!r}")
