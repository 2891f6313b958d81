"""A DC recovered into a directory that is a mount point: refused in one line before samba-tool runs
(before, the whole recovery ran and its last step, the rename onto the mount point, failed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shadowvault.components import system_state
from tests.directory.test_samba_archive import _archive, samba_json
from tests.fixtures.tools import require_root
from tests.inprocess_cli import run


def test_a_dc_bound_for_a_mount_point_is_refused_before_any_work(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root()
    documents = {"samba.json": samba_json(), "samba/SV.TEST.tar.bz2": _archive()}
    monkeypatch.setattr(system_state, "collect_samba", lambda _root: (documents, []))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert run(env, "backup", "--component", "system-state", "--source-root", root).exit_code == 0
    called = tmp_path / "samba-tool-called"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "samba-tool").write_text(f"#!/bin/sh\ntouch {called}\nexit 1\n")
    (tmp_path / "bin" / "samba-tool").chmod(0o755)
    target = tmp_path / "target"
    dc = target / "var/lib/samba"
    dc.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "svtest", str(dc)], check=True)
    try:
        args = ["restore", "latest", "--component", "system-state", "--no-packages", "--target-root", target]
        args += ["--directory-restore", "new-dc", "--writer-option", "samba.newservername=svdc9"]
        done = run({**env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}, *args)
        assert done.exit_code != 0 and "Traceback" not in done.stderr
        (why,) = [line for line in done.stderr.splitlines() if "is a mount point" in line]
        assert f"{dc} is a mount point" in why and "unmount it and recover" in why, done.stderr
        assert not called.exists()  # refused before the recovery began
        assert os.listdir(dc) == [] and sorted(os.listdir(dc.parent)) == ["samba"]  # nothing made beside
    finally:
        subprocess.run(["umount", str(dc)], check=True)
