"""The three backup tools as the benchmark drives them: same data, each with its own repository.

Each tool runs with its defaults apart from what is needed to run it unattended:
  shadowvault  the CLI of this checkout, `--provider none` (live files, no shadow set: the comparison
               is about the repository engine, not about snapshots)
  restic       repository format 2 (zstd, compression auto), cache in the work directory
  borg         repokey-blake2 encryption, default compression (lz4), cache in the work directory
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PASSWORD = "bench-password"


class Tool:
    """One tool: its executable, its directory on the work filesystem, its environment."""

    def __init__(self, name: str, exe: str, work: Path, env: dict[str, str]) -> None:
        self.name, self.exe, self.work, self.env = name, exe, work, env

    @property
    def repo(self) -> Path:
        return self.work / "repo"

    def init_argv(self) -> list[str]:
        raise NotImplementedError

    def backup_argv(self, data: Path, label: str) -> list[str]:
        raise NotImplementedError

    def restore(self, target: Path, label: str) -> tuple[list[str], Path]:
        """argv and working directory that restore snapshot `label` so that `data` appears below
        `target` at its absolute path."""
        raise NotImplementedError

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def _which(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed (make bench installs tools/bench-packages.txt)")
    return found


class Shadowvault(Tool):
    def __init__(self, work: Path) -> None:
        exe = Path(sys.executable).with_name("shadowvault")
        super().__init__(
            "shadowvault",
            str(exe) if exe.exists() else _which("shadowvault"),
            work,
            {
                "SHADOWVAULT_REPOSITORY": str(work / "repo"),
                "SHADOWVAULT_PASSWORD": PASSWORD,
                "SHADOWVAULT_CONFIG_DIR": str(work / "config"),
                "SHADOWVAULT_STATE_DIR": str(work / "state"),
            },
        )
        (work / "config").mkdir(parents=True, exist_ok=True)
        (work / "state").mkdir(parents=True, exist_ok=True)

    def init_argv(self) -> list[str]:
        return [self.exe, "init"]

    def backup_argv(self, data: Path, label: str) -> list[str]:
        return [self.exe, "backup", "--provider", "none", "--tag", label, str(data)]

    def restore(self, target: Path, label: str) -> tuple[list[str], Path]:
        return [self.exe, "restore", "latest", "--target", str(target)], self.work


class Restic(Tool):
    def __init__(self, work: Path) -> None:
        super().__init__(
            "restic",
            _which("restic"),
            work,
            {
                "RESTIC_REPOSITORY": str(work / "repo"),
                "RESTIC_PASSWORD": PASSWORD,
                "RESTIC_CACHE_DIR": str(work / "cache"),
            },
        )

    def init_argv(self) -> list[str]:
        return [self.exe, "init", "-q", "--repository-version", "2"]

    def backup_argv(self, data: Path, label: str) -> list[str]:
        return [self.exe, "backup", "-q", "--tag", label, str(data)]

    def restore(self, target: Path, label: str) -> tuple[list[str], Path]:
        return [self.exe, "restore", "latest", "-q", "--target", str(target)], self.work


class Borg(Tool):
    def __init__(self, work: Path) -> None:
        super().__init__(
            "borg",
            _which("borg"),
            work,
            {
                "BORG_REPO": str(work / "repo"),
                "BORG_PASSPHRASE": PASSWORD,
                "BORG_BASE_DIR": str(work / "base"),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            },
        )

    def init_argv(self) -> list[str]:
        return [self.exe, "init", "-e", "repokey-blake2"]

    def backup_argv(self, data: Path, label: str) -> list[str]:
        return [self.exe, "create", f"::{label}", str(data)]

    def restore(self, target: Path, label: str) -> tuple[list[str], Path]:
        # borg stores paths without the leading slash and extracts below the working directory
        return [self.exe, "extract", f"::{label}"], target


TOOLS = {"shadowvault": Shadowvault, "restic": Restic, "borg": Borg}
