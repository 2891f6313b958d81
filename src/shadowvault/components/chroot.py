"""Running package tools inside a target root: apt-get in a container (systemd-nspawn) or a chroot.

systemd-nspawn gives the tree its own /proc, /dev and /run, so maintainer scripts behave as on a
real machine, and nothing it starts outlives the command. Plain chroot is the fallback when nspawn
is missing. Either way a policy-rc.d that forbids starting services is in place while apt runs
(removed afterwards if we created it), so a restore never starts the target's daemons.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from shadowvault import proc
from shadowvault.errors import CommandError, UnsupportedError

log = logging.getLogger(__name__)

APT_TIMEOUT = 1800.0
POLICY_RC_D = "usr/sbin/policy-rc.d"
_POLICY = b"#!/bin/sh\n# written by shadowvault while it installs packages: start no services\nexit 101\n"
APT_OPTIONS = (
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
)


@dataclass(frozen=True)
class Package:
    name: str
    version: str | None = None
    arch: str | None = None

    def spec(self, pinned: bool = True) -> str:
        return f"{self.name}={self.version}" if pinned and self.version else self.name


def runner(root: Path) -> list[str]:
    """The argv prefix that runs a command inside `root` (directly when `root` is this system's /)."""
    if root.resolve() == Path("/"):
        return ["env", "DEBIAN_FRONTEND=noninteractive"]
    if shutil.which("systemd-nspawn"):
        return [
            "systemd-nspawn",
            "-q",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "-D",
            str(root),
            "-E",
            "DEBIAN_FRONTEND=noninteractive",
        ]
    if shutil.which("chroot"):
        return ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive"]
    raise UnsupportedError("neither systemd-nspawn nor chroot is installed; cannot run apt in the target")


def run_in_root(root: Path, argv: list[str], timeout: float = APT_TIMEOUT) -> str:
    """Run `argv` inside `root`; returns its output, raises CommandError with apt's last line."""
    done = proc.run([*runner(root), *argv], timeout=timeout, input=b"", check=False)
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if done.returncode != 0:
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "dpkg:"))]
        raise CommandError(f"{' '.join(argv[:2])} in {root} failed: {(errors or lines or ['?'])[-1]}")
    return out


class _NoServices:
    """Context manager: a policy-rc.d in the target that forbids starting services."""

    def __init__(self, root: Path) -> None:
        self.path = root / POLICY_RC_D
        self.created = False

    def __enter__(self) -> _NoServices:
        if not self.path.exists() and not self.path.is_symlink() and self.path.parent.is_dir():
            self.path.write_bytes(_POLICY)
            os.chmod(self.path, 0o755)
            self.created = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.created:
            self.path.unlink(missing_ok=True)


def apt_lists_present(root: Path) -> bool:
    lists = root / "var/lib/apt/lists"
    return lists.is_dir() and any(p.name.endswith("_Packages") for p in lists.iterdir())


def install_commands(root: Path, packages: list[Package], *, update: bool) -> list[list[str]]:
    """The apt commands `install_packages` will run (what --dry-run shows)."""
    commands = []
    if update or not apt_lists_present(root):
        commands.append(["apt-get", "update", "-q"])
    if packages:
        commands.append(["apt-get", "install", *APT_OPTIONS, *(p.spec() for p in packages)])
    return commands


_MISSING_VERSION = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


def install_packages(root: Path, packages: list[Package], *, update: bool) -> list[str]:
    """Install `packages` in `root` at their recorded versions (any version when that one is gone).

    Returns warnings (versions that could not be had). Services are never started.
    """
    warnings: list[str] = []
    if not packages and not update:
        return warnings
    with _NoServices(root):
        if update or not apt_lists_present(root):
            run_in_root(root, ["apt-get", "update", "-q"])
        if not packages:
            return warnings
        try:
            run_in_root(root, ["apt-get", "install", *APT_OPTIONS, *(p.spec() for p in packages)])
        except CommandError as err:
            if not _MISSING_VERSION.search(str(err)) and "has no installation candidate" not in str(err):
                raise
            warnings.append(f"recorded versions are not all available ({err}); installing current versions")
            run_in_root(root, ["apt-get", "install", *APT_OPTIONS, *(p.spec(pinned=False) for p in packages)])
    log.info("installed %d packages in %s", len(packages), root)
    return warnings
