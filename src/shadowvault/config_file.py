"""Root's TOML files: `<config dir>/shadowvault.toml` (the machine's settings: [api], [metrics], ...)
and the reading every configuration file gets (writers.d, jobs.d).

A configuration file decides who may freeze what and what runs as root, so it is checked like
writers.d before it is parsed (owned by root, writable by no one else, nor any directory above it),
and the very file that was checked is the one read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shadowvault import paths
from shadowvault.errors import ConfigError
from shadowvault.shadow.writers import trusted_exec

CONFIG_FILE = "shadowvault.toml"


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Check a configuration file and parse it; ConfigError naming the file and what is wrong."""
    import tomllib

    try:
        raw = trusted_exec.read_checked(os.path.abspath(path), what)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what}: {err.strerror or err}") from err
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it as TOML: {err}") from err


def config_path() -> Path:
    return paths.config_dir() / CONFIG_FILE


def settings() -> dict[str, Any]:
    """The whole of shadowvault.toml ({} when there is none)."""
    path = config_path()
    if not path.exists():
        return {}
    return read_toml(path, "the Shadowvault configuration")


def section(name: str) -> dict[str, Any]:
    """The table `[name]` of shadowvault.toml ({} when the file or the table is missing)."""
    table = settings().get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{config_path()}: [{name}] must be a table")
    return table
