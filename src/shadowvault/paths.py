"""Where Shadowvault keeps its configuration and state; both overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG_DIR = "/etc/shadowvault"
DEFAULT_STATE_DIR = "/var/lib/shadowvault"


def config_dir() -> Path:
    """The configuration directory (`SHADOWVAULT_CONFIG_DIR`, default /etc/shadowvault)."""
    return Path(os.environ.get("SHADOWVAULT_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def state_dir() -> Path:
    """The state directory for shadow sets (`SHADOWVAULT_STATE_DIR`, default /var/lib/shadowvault)."""
    return Path(os.environ.get("SHADOWVAULT_STATE_DIR") or DEFAULT_STATE_DIR)


def writers_dir() -> Path:
    """Where script and external writers are declared: `<config dir>/writers.d`."""
    return config_dir() / "writers.d"
