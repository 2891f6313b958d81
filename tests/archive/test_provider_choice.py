"""An explicit --provider that cannot serve a path is an error, and a btrfs root filesystem is shadowed
with a snapshot (issue 16, "Honest output" 2). Freezing / stays refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    return {
        "SHADOWVAULT_REPOSITORY": str(repo),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
    }


def root_fstype() -> str:
    return subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "/"], capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.parametrize("provider", ["btrfs", "reflink"])
def test_an_explicit_provider_that_cannot_serve_the_root_filesystem_is_an_error(cli, env, tmp_path, provider):
    assert root_fstype() != "btrfs", "this test needs a machine whose / is not btrfs"
    src = tmp_path / "src"  # on the machine's root filesystem
    src.mkdir()
    (src / "file").write_text("x")
    done = cli("backup", "--provider", provider, str(src), env=env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert f"--provider {provider}" in line and "root filesystem" in line and "--provider none" in line
    assert json.loads(cli("snapshots", "--json", env=env).stdout) == []
    auto = cli("backup", "--provider", "auto", str(src), env=env)  # auto reads it live, and says so
    assert auto.returncode == 0, auto.stderr
    assert "root filesystem" in auto.stderr


def test_an_explicit_provider_that_cannot_serve_a_volume_is_an_error(cli, env, ext4):
    (ext4.mount / "file").write_text("x")
    done = cli("backup", "--provider", "btrfs", str(ext4.mount), env=env)
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert "btrfs" in line and "ext4" in line
