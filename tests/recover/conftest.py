"""Fixtures shared by the recover tests that need a snapshot but no bootable machine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.components.roots import make_root
from tests.inprocess_cli import run

SMALL_ROOT_UUID = "5eed0001-7a11-4b0c-9d0e-0123456789ab"


@pytest.fixture
def small_snapshot(env: dict[str, str], tmp_path: Path) -> str:
    """A snapshot with the files and system-state components of a tiny machine root (no disk layout:
    recover is given one with --layout)."""
    root = make_root(tmp_path / "small-root")
    (root / "etc" / "fstab").write_text(f"UUID={SMALL_ROOT_UUID} / ext4 defaults 0 1\n")
    done = run(
        env, "backup", "--component", "system-state", "--component", "files", "--source-root", root, "/"
    )
    assert done.exit_code == 0, done.stderr
    return "latest"


@pytest.fixture
def loops() -> Iterator[list[str]]:
    """Loop devices a test attaches (append each); detached by name, last first, whatever happened."""
    attached: list[str] = []
    yield attached
    for device in reversed(attached):
        subprocess.run(["losetup", "-d", device], check=False)


def attach_loop(loops: list[str], *argv: str) -> str:
    out = subprocess.run(["losetup", "--find", "--show", *argv], capture_output=True, text=True, check=True)
    loops.append(out.stdout.strip())
    return loops[-1]
