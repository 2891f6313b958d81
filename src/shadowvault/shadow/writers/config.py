"""writers.d: writers declared by the administrator, one TOML file per writer.

    name = "app"                      # defaults to the file name without .toml
    type = "script"                   # script (default), sqlite, or external
    freeze = ["/usr/local/sbin/app-freeze", "--quiet"]
    thaw = ["/usr/local/sbin/app-thaw"]
    timeout = 30                      # seconds per command, at most 1800
    on_failure = "abort"              # or "degrade": go on, the app's data only crash-consistent
    paths = ["/srv/app"]              # the application's data (automatic selection, components)
    volumes = ["/srv"]                # optional: the volumes this writer serves

A running QEMU guest can be declared here too (`type = "qemu"`, `qmp = "/run/vm1.qmp"`, optional
`agent` = its guest agent socket): it is listed by `writers list` and joins a shadow set only when
named (`--writer qemu:NAME`, `vm backup NAME`).

Like Azure Backup's pre/post-script framework, a file that is not owned by root or is writable by
group or others is refused, and so are the directory and every script a file names: anyone who
can edit them could otherwise run commands as root during every backup. Every directory on the
way from / to each of them must be root's too (trusted_exec.py: no swapping a checked file for
another), a program is given by an absolute path or a bare name found on the PATH (never a
relative path), and a writer's program is executed through the descriptor that was checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadowvault import paths
from shadowvault.config_file import read_toml
from shadowvault.errors import ConfigError
from shadowvault.shadow.writers import trusted_exec

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 1800.0
APP_WRITER_TYPES = ("postgresql", "mariadb", "redis", "ldap", "samba")  # built-ins with settings (AppWriter)
VM_WRITER_TYPES = ("qemu",)  # a VM (`qmp`, `agent`: vm/discovery.py) joins a set only when named
WRITER_TYPES = ("script", "sqlite", "external", *APP_WRITER_TYPES, *VM_WRITER_TYPES)


@dataclass
class WriterConfig:
    """One parsed writers.d file."""

    name: str
    type: str
    path: Path
    data: dict[str, Any] = field(default_factory=dict)


def check_safe(path: str | os.PathLike[str], what: str) -> None:
    """Refuse `path` unless only root could have changed it, nor any directory from / down to it.

    A configuration path may be relative (to where we run): it is checked from / all the same.
    """
    absolute = os.path.abspath(path)
    if os.path.isdir(absolute):
        trusted_exec.check_directory(absolute, what)
        return
    fd, _ = trusted_exec.open_checked(absolute, what)
    os.close(fd)


def check_command(argv: list[str], config_path: Path, key: str) -> None:
    """Refuse a command whose program, or any script file it names by absolute path, is unsafe."""
    with open_command(argv, config_path, key):
        pass


def open_command(
    argv: list[str], config_path: Path, key: str, *, search_path: str | None = None
) -> trusted_exec.TrustedProgram:
    """Check a command like check_command and open its program: run it with `.popen_kwargs()`."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"{config_path}: `{key}` must be a non-empty list of strings (an argv)")
    if trusted_exec.find_program(argv[0], search_path) is None:
        raise ConfigError(f"{config_path}: {key} command {argv[0]!r} not found")
    what = f"the {key} program"
    trusted_exec.check_arguments(argv[1:], "the command" if key == "command" else f"the {key} command")
    return trusted_exec.open_program(argv[0], what, search_path=search_path)


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
    data = read_toml(path, "a writer configuration file")
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
    data = read_toml(path, "the sqlite writer configuration")
    databases = data.get("databases", [])
    if not isinstance(databases, list) or not all(isinstance(d, str) and d[:1] == "/" for d in databases):
        raise ConfigError(f"{path}: databases must be a list of absolute paths")
    return databases
