"""Helpers for the VM tests: a repository, a VM declared in vms.d, the CLI, QEMU's own view, the tiny
guest's records in a restored image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from shadowvault.repo.repository import Repository
from shadowvault.vm.qmp import QmpClient
from tests.fixtures.tiny_vm import RECORD_SIZE

PASSWORD = "vm-test-password"
FAST_KDF = {"n": 1 << 10, "r": 8, "p": 1}
PROJECT = Path(__file__).resolve().parents[2]


def new_repository(path: Path) -> Repository:
    return Repository.init(path, PASSWORD, kdf_params=FAST_KDF)


def declare(config_dir: Path, name: str, qmp: Path, agent: Path | None = None) -> None:
    """A vms.d entry for the VM (tests/vm/conftest.py turns the /proc scan off)."""
    directory = config_dir / "vms.d"
    directory.mkdir(parents=True, exist_ok=True)
    text = f'name = "{name}"\nqmp = "{qmp}"\n' + (f'agent = "{agent}"\n' if agent else "")
    (directory / f"{name}.toml").write_text(text)


def cli(*args: str, repo: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # in process: a daemon answering on this machine's socket has its own vms.d (test_vm_commands.py
    # runs the VM commands through a daemon of its own)
    env = dict(os.environ, SHADOWVAULT_PASSWORD=PASSWORD, SHADOWVAULT_VM_SCAN="0", SHADOWVAULT_NO_DAEMON="1")
    if repo is not None:
        env["SHADOWVAULT_REPOSITORY"] = str(repo)
    return subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=PROJECT,
        check=False,
    )


def qmp(socket_path: Path, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One command on a connection of its own (the writer holds none between backups)."""
    with QmpClient(str(socket_path), timeout=30) as client:
        return client.execute(command, arguments)


def hmp_io(socket_path: Path, drive: str, io: str) -> str:
    """Write into a drive from the monitor (`qemu-io`), as a guest would."""
    return qmp(socket_path, "human-monitor-command", {"command-line": f'qemu-io {drive} "{io}"'})


def leftovers(socket_path: Path) -> dict[str, list[str]]:
    """What of ours QEMU still holds: copy jobs, target nodes, bitmaps."""
    nodes = qmp(socket_path, "query-named-block-nodes", {"flat": True})
    return {
        "jobs": [j["device"] for j in qmp(socket_path, "query-block-jobs")],
        "nodes": [n["node-name"] for n in nodes if n["node-name"].startswith("sv-")],
        "bitmaps": sorted({b["name"] for n in nodes for b in n.get("dirty-bitmaps", []) if b.get("name")}),
    }


def assert_same_image(restored: Path, live: Path, live_format: str = "qcow2") -> None:
    """`qemu-img compare` of a restored raw image with the live image a running QEMU holds (-U)."""
    compare = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "raw", "-F", live_format, str(restored), str(live)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def records_in(image: str) -> bytes:
    done = subprocess.run(
        ["debugfs", "-R", "cat /records", image], capture_output=True, timeout=120, check=True
    )
    return done.stdout


def assert_acknowledged_records(image: str, acked: int) -> int:
    """Every record up to `acked` is there, intact; returns how many records the image holds."""
    data = records_in(image)
    assert len(data) >= acked * RECORD_SIZE, f"{len(data) // RECORD_SIZE} records < {acked} acknowledged"
    for number in range(1, acked + 1):
        start = (number - 1) * RECORD_SIZE
        assert data[start : start + RECORD_SIZE] == f"record {number:010d}\n".encode(), number
    return len(data) // RECORD_SIZE
