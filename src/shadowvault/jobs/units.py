"""systemd units for the jobs and the daemon: their text, writing them, and enabling the timers.

`shadowvault-job@.service` runs `shadowvault jobs run %i`; one `shadowvault-job@NAME.timer` per job
fires it on the job's OnCalendar schedule (Persistent: a run missed while the machine was off
happens at the next boot). `shadowvault.service` and `shadowvault.socket` start the daemon on the
first connection to its API socket. The configuration and state directories `install` ran with
(SHADOWVAULT_CONFIG_DIR, SHADOWVAULT_STATE_DIR) go into the services as `Environment=`: the timers
come from that jobs.d, so the jobs they fire must be looked up there too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shadowvault import fsutil, proc
from shadowvault.errors import ConfigError
from shadowvault.jobs.definitions import JobDefinition

log = logging.getLogger(__name__)

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
API_SOCKET = "/run/shadowvault/api.sock"
JOB_SERVICE = "shadowvault-job@.service"
DAEMON_SERVICE = "shadowvault.service"
DAEMON_SOCKET = "shadowvault.socket"
CARRIED = ("SHADOWVAULT_CONFIG_DIR", "SHADOWVAULT_STATE_DIR")  # what the services must see as install did


def _command(python: str, *args: str) -> str:
    return " ".join([python, "-m", "shadowvault.cli.launch", *args])


def carried_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The directories set for this process, made absolute (a service runs from /), for the units."""
    return {name: os.path.abspath(environ[name]) for name in CARRIED if environ.get(name)}


def _environment(environment: Mapping[str, str]) -> str:
    """`Environment=` lines: each assignment quoted, with `\\`, `"` and systemd's `%` escaped."""
    lines = []
    for name, value in environment.items():
        if any(c in value for c in "\n\r\0"):
            raise ConfigError(f"{name}={value!r} cannot be written into a systemd unit (a line break or NUL)")
        quoted = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        lines.append(f'Environment="{quoted}"\n')
    return "".join(lines)


def job_service(python: str, environment: Mapping[str, str]) -> str:
    return f"""[Unit]
Description=Shadowvault scheduled backup job %i
After=local-fs.target network-online.target
Wants=network-online.target

[Service]
Type=oneshot
{_environment(environment)}ExecStart={_command(python, "jobs", "run", "%i")}
# exit status 3: the snapshot was saved but some files could not be read
SuccessExitStatus=3
Nice=10
IOSchedulingClass=idle
"""


def job_timer(definition: JobDefinition) -> str:
    return f"""[Unit]
Description=Run the Shadowvault job {definition.name} on schedule

[Timer]
OnCalendar={definition.schedule}
Persistent=true
Unit=shadowvault-job@{definition.name}.service

[Install]
WantedBy=timers.target
"""


def daemon_service(python: str, environment: Mapping[str, str]) -> str:
    return f"""[Unit]
Description=Shadowvault coordinating service (shadow copies and backups)
Requires=shadowvault.socket
After=shadowvault.socket local-fs.target

[Service]
Type=notify
{_environment(environment)}ExecStart={_command(python, "daemon")}
KillMode=mixed
TimeoutStopSec=120
# descriptors for its connections (it caps them per user, docs/api.md) and its work's files
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
Also=shadowvault.socket
"""


def daemon_socket() -> str:
    return f"""[Unit]
Description=Shadowvault API socket

[Socket]
ListenStream={API_SOCKET}
SocketMode=0666
DirectoryMode=0755

[Install]
WantedBy=sockets.target
"""


def timer_name(definition: JobDefinition) -> str:
    return f"shadowvault-job@{definition.name}.timer"


def unit_files(
    definitions: Sequence[JobDefinition],
    python: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every unit's file name and text; `python` (default: this interpreter) runs the commands, with
    `environment` (default: the directories this process was given, carried_environment)."""
    python = python or sys.executable
    environment = carried_environment() if environment is None else environment
    units = {
        JOB_SERVICE: job_service(python, environment),
        DAEMON_SERVICE: daemon_service(python, environment),
        DAEMON_SOCKET: daemon_socket(),
    }
    for definition in definitions:
        units[timer_name(definition)] = job_timer(definition)
    return units


@dataclass
class Installed:
    """What `install` did: the files written, the units enabled (none when not asked), and the timers of
    jobs whose definitions are gone, removed."""

    written: list[Path]
    enabled: list[str]
    removed: list[Path]


def install(
    definitions: Sequence[JobDefinition], unit_dir: Path = DEFAULT_UNIT_DIR, *, enable: bool = True
) -> Installed:
    """Write the units into `unit_dir` and remove the timers of jobs no longer defined; with `enable`,
    disable those first, then reload systemd and enable and start the daemon's socket and the timers."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in unit_files(definitions).items():
        path = unit_dir / name
        fsutil.atomic_write(path, text.encode(), mode=0o644)
        written.append(path)
    stale = sorted(
        p
        for p in unit_dir.glob("shadowvault-job@?*.timer")
        if p.name not in {timer_name(d) for d in definitions}
    )
    if enable and stale:
        proc.run(["systemctl", "disable", "--now", *(p.name for p in stale)], check=False)
    for path in stale:
        path.unlink()
    enabled: list[str] = []
    if enable:
        proc.run(["systemctl", "daemon-reload"])
        # the socket, not the service: the daemon starts on the first call (socket activation)
        enabled = [DAEMON_SOCKET, *(timer_name(d) for d in definitions)]
        proc.run(["systemctl", "enable", "--now", *enabled])
    return Installed(written=written, enabled=enabled, removed=stale)
