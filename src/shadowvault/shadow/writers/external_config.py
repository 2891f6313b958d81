"""An external writer's writers.d entry, checked: every mistake is a ConfigError naming the file.

    type = "external"
    command = ["/usr/local/lib/myapp/shadowvault-writer"]   # or one string
    paths = ["/srv/myapp"]        # absolute; volumes = [...] likewise
    on_failure = "abort"          # or "degrade"
    timeout = 120                 # every event not in [timeouts]
    [timeouts]                    # seconds per event of the protocol
    [options]                     # passed to the writer as `config`
    [environment]                 # added to its clean environment

The command is checked here as a script writer's is (writer_config.check_command), and again when it
is started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shadowvault.errors import ConfigError
from shadowvault.shadow.writers import config as writer_config
from shadowvault.shadow.writers.external_protocol import DEFAULT_TIMEOUTS


def writer_arguments(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The keyword arguments of ExternalWriter for the entry `config` read from `path`."""
    command = config.get("command")
    if isinstance(command, str):
        command = [command]
    if not isinstance(command, list):
        raise ConfigError(f'{path}: an external writer needs `command` = ["/path/to/writer", ...]')
    writer_config.check_command(command, path, "command")
    timeouts = _timeouts(config, path)
    policy = config.get("on_failure", "abort")
    if policy not in ("abort", "degrade"):
        raise ConfigError(f'{path}: on_failure must be "abort" or "degrade", not {policy!r}')
    lists = {}
    for key in ("paths", "volumes"):
        value = config.get(key, [])
        if not isinstance(value, list) or not all(isinstance(p, str) and p[:1] == "/" for p in value):
            raise ConfigError(f"{path}: {key} must be a list of absolute paths")
        lists[key] = value
    for key in ("options", "environment"):
        if not isinstance(config.get(key, {}), dict):
            raise ConfigError(f"{path}: [{key}] must be a table")
    return {
        "command": command,
        "timeouts": timeouts,
        "on_failure": policy,
        "config": config.get("options", {}),
        "environment": {str(k): str(v) for k, v in config.get("environment", {}).items()},
        "config_path": path,
        **lists,
    }


def _timeouts(config: dict[str, Any], path: Path) -> dict[str, float]:
    """[timeouts] by event; with `timeout`, that number for every event not listed."""
    timeouts: dict[str, float] = {}
    raw = config.get("timeouts", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [timeouts] must be a table of event = seconds")
    for event, value in raw.items():
        if event not in DEFAULT_TIMEOUTS:
            valid = ", ".join(DEFAULT_TIMEOUTS)
            raise ConfigError(f"{path}: unknown event {event!r} in [timeouts] (valid: {valid})")
        timeouts[event] = writer_config.parse_timeout(value, path)
    if "timeout" in config:  # one number for every event not listed
        default = writer_config.parse_timeout(config["timeout"], path)
        timeouts = {e: timeouts.get(e, default) for e in DEFAULT_TIMEOUTS}
    return timeouts
