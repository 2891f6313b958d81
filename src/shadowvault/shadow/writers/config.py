"""writers.d: writers declared by the administrator, one TOML file per writer.

    name = "app"                      # defaults to the file name without .toml
    type = "script"                   # script (default), sqlite, or external
    freeze = ["/usr/local/sbin/app-freeze", "--quiet"]
    thaw = ["/usr/local/sbin/app-thaw"]
    timeout = 30                      # seconds per command, at most 1800
    on_failure = "abort"              # or "degrade": go on, the app's data only crash-consistent
    paths = ["/srv/app"]              # the application's data (automatic selection, components)
    volumes = ["/srv"]                # optional: the volumes this writer serves

Like Azure Backup's pre/post-script framework, a file that is not owned by root or is writable by
group or others is refused, and so are the directory and every script a file names: anyone who
can edit them could otherwise run commands as root during every backup.
"""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadowvault import paths
from shadowvault.errors import ConfigError

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 1800.0
WRITER_TYPES = ("script", "sqlite", "external", "postgresql", "mariadb", "redis", "ldap")
APP_WRITER_TYPES = ("postgresql", "mariadb", "redis", "ldap")  # built-ins with settings (AppWriter)


@dataclass
class WriterConfig:
    """One parsed writers.d file."""

    name: str
    type: str
    path: Path
    data: dict[str, Any] = field(default_factory=dict)


def check_safe(path: str | os.PathLike[str], what: str) -> None:
    """Refuse `path` unless it is owned by root and not writable by group or others."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: {what} does not exist") from err
    if st.st_uid != 0:
        raise ConfigError(f"{path}: refused: {what} must be owned by root (it is owned by uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{path}: refused: {what} must not be writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})"
        )


def resolve_program(argv0: str) -> str | None:
    """The file a command's argv[0] runs, or None when it cannot be found."""
    if "/" in argv0:
        return argv0 if os.path.exists(argv0) else None
    return shutil.which(argv0)


def check_command(argv: list[str], config_path: Path, key: str) -> None:
    """Refuse a command whose program, or any script file it names by absolute path, is unsafe."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"{config_path}: `{key}` must be a non-empty list of strings (an argv)")
    program = resolve_program(argv[0])
    if program is None:
        raise ConfigError(f"{config_path}: {key} command {argv[0]!r} not found")
    check_safe(program, f"the {key} program")
    for arg in argv[1:]:
        if arg.startswith("/") and os.path.isfile(arg):
            check_safe(arg, f"a file the {key} command runs")


def parse_timeout(value: Any, config_path: Path) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{config_path}: timeout must be a positive number of seconds")
    if value > MAX_TIMEOUT:
        raise ConfigError(f"{config_path}: timeout {value:g} s is above the maximum of {MAX_TIMEOUT:g} s")
    return float(value)


def load_config(path: Path) -> WriterConfig:
    """Parse and check one writers.d file."""
    check_safe(path, "a writer configuration file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it as TOML: {err}") from err
    name = data.get("name", path.stem)
    kind = data.get("type", "script")
    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ConfigError(f"{path}: name must be a non-empty string without ':' or '/'")
    if kind not in WRITER_TYPES:
        raise ConfigError(f"{path}: unknown writer type {kind!r} (valid: {', '.join(WRITER_TYPES)})")
    return WriterConfig(name=name, type=kind, path=path, data=data)


def _exists(path: Path) -> bool:
    """Whether `path` exists; a ConfigError (not a traceback) when we may not even look."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except PermissionError as err:
        raise ConfigError(f"{path}: cannot read the configuration: permission denied") from err
    return True


def config_files(directory: Path | None = None) -> list[Path]:
    directory = directory or paths.writers_dir()
    if not _exists(directory):
        return []
    check_safe(directory, "the writers.d directory")
    return sorted(p for p in directory.glob("*.toml") if not p.name.startswith("."))


def load_configs(directory: Path | None = None) -> list[WriterConfig]:
    """Every writers.d file; the first unsafe or invalid one raises ConfigError."""
    configs = [load_config(path) for path in config_files(directory)]
    seen: dict[str, Path] = {}
    for cfg in configs:
        if cfg.name in seen:
            raise ConfigError(f"{cfg.path}: writer name {cfg.name!r} is already declared in {seen[cfg.name]}")
        seen[cfg.name] = cfg.path
    return configs


def scan_configs(directory: Path | None = None) -> tuple[list[WriterConfig], list[tuple[str, str]]]:
    """Like load_configs, but collects problems (path, message) instead of raising: for listings."""
    try:
        files = config_files(directory)
    except ConfigError as err:
        return [], [(str(directory or paths.writers_dir()), str(err))]
    good, bad = [], []
    for path in files:
        try:
            good.append(load_config(path))
        except ConfigError as err:
            bad.append((str(path), str(err)))
    return good, bad


def sqlite_registry() -> list[str]:
    """Databases registered for the sqlite writer in `<config dir>/sqlite.toml` (`databases = [...]`)."""
    path = paths.config_dir() / "sqlite.toml"
    if not _exists(path):
        return []
    check_safe(path, "the sqlite writer configuration")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it as TOML: {err}") from err
    databases = data.get("databases", [])
    if not isinstance(databases, list) or not all(isinstance(d, str) and d[:1] == "/" for d in databases):
        raise ConfigError(f"{path}: databases must be a list of absolute paths")
    return databases
