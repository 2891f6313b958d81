"""The three backup tools as the benchmark drives them: same data, each with its own repository.

Each tool runs with its defaults apart from what is needed to run it unattended:
  shadowvault  the CLI of this checkout, `--provider none` (live files, no shadow set: the comparison
               is about the repository engine, not about snapshots), cache (the kept index) in the
               work directory
  restic       repository format 2 (zstd, compression auto), cache in the work directory
  borg         repokey-blake2 encryption, default compression (lz4), cache in the work directory

The maintenance phases of the scale set (compare.py --scale), the same for each tool:
  check        structure only, no data read: `shadowvault check`, `restic check`,
               `borg check --archives-only` (borg's repository part would read every segment)
  forget       keep the last snapshot, then free what nothing references any more: `forget
               --keep-last 1 --prune` (shadowvault, restic), `borg prune --keep-last 1` + `borg compact`
  one dir      restore one directory of the latest snapshot: shadowvault `latest:DIR`, restic
               `--include DIR` (0.14 has no `latest:DIR`), borg `extract ::NAME DIR`
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

    def check_argv(self) -> list[str]:
        raise NotImplementedError

    def forget_prune_argv(self) -> list[str]:
        """Forget every snapshot but the last, and free the space only they used."""
        raise NotImplementedError

    def restore_dir(self, target: Path, label: str, directory: Path) -> tuple[list[str], Path, Path]:
        """argv, working directory, and where the contents of `directory` (absolute, in snapshot
        `label`, the latest) appear once restored below `target`."""
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
                "SHADOWVAULT_CACHE_DIR": str(work / "cache"),  # the kept index, as restic's cache
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

    def check_argv(self) -> list[str]:
        return [self.exe, "check"]

    def forget_prune_argv(self) -> list[str]:
        return [self.exe, "forget", "--keep-last", "1", "--prune"]

    def restore_dir(self, target: Path, label: str, directory: Path) -> tuple[list[str], Path, Path]:
        return [self.exe, "restore", f"latest:{directory}", "--target", str(target)], self.work, target


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

    def check_argv(self) -> list[str]:
        return [self.exe, "check", "-q"]

    def forget_prune_argv(self) -> list[str]:
        return [self.exe, "forget", "-q", "--keep-last", "1", "--prune"]

    def restore_dir(self, target: Path, label: str, directory: Path) -> tuple[list[str], Path, Path]:
        argv = [self.exe, "restore", "latest", "-q", "--target", str(target), "--include", str(directory)]
        return argv, self.work, target / directory.relative_to("/")


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

    def check_argv(self) -> list[str]:
        return [self.exe, "check", "--archives-only"]

    def forget_prune_argv(self) -> list[str]:
        # borg 1.2 frees space only in `compact`; one shell, so GNU time sees the larger of the two
        return ["sh", "-c", f"{self.exe} prune --keep-last 1 && {self.exe} compact"]

    def restore_dir(self, target: Path, label: str, directory: Path) -> tuple[list[str], Path, Path]:
        rel = directory.relative_to("/")
        return [self.exe, "extract", f"::{label}", str(rel)], target, target / rel


TOOLS = {"shadowvault": Shadowvault, "restic": Restic, "borg": Borg}
