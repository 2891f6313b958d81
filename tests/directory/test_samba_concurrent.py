"""Two recoveries of one DC into the same directory at once: the second is refused in one line while
the first holds its lock, and the first still ends with a complete DC (before, the second removed the
first one's staging directory as an interrupted run's leftover)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shadowvault.components import system_state
from tests.directory.test_samba_archive import _archive, samba_json
from tests.inprocess_cli import run


def _held_samba_tool(base: Path) -> dict[str, str]:
    """A PATH whose samba-tool writes the new DC's smb.conf, and the first time waits while
    base/hold exists (the first recovery is then half-way, its staging directory made)."""
    (base / "samba-tool").write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --targetdir=*) dir="${a#--targetdir=}";; esac; done\n'
        'mkdir -p "$dir/etc" && printf "[global]\\n\\tnetbios name = SVDC9\\n" > "$dir/etc/smb.conf"\n'
        f"if [ ! -e {base}/first ]; then touch {base}/first\n"
        f"  while [ -e {base}/hold ]; do sleep 0.1; done\nfi\n"
    )
    (base / "samba-tool").chmod(0o755)
    (base / "hold").touch()
    return {"PATH": f"{base}:{os.environ['PATH']}"}


def test_a_second_recovery_into_the_same_directory_is_refused(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = {"samba.json": samba_json(), "samba/SV.TEST.tar.bz2": _archive()}
    monkeypatch.setattr(system_state, "collect_samba", lambda _root: (documents, []))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert run(env, "backup", "--component", "system-state", "--source-root", root).exit_code == 0
    (tmp_path / "bin").mkdir()
    path = _held_samba_tool(tmp_path / "bin")
    target = tmp_path / "target"
    target.mkdir()
    args = ["restore", "latest", "--component", "system-state", "--no-packages", "--target-root", target]
    args += ["--directory-restore", "new-dc", "--writer-option", "samba.newservername=svdc9"]

    argv = [sys.executable, "-m", "shadowvault.cli.launch", *map(str, args)]
    first = subprocess.Popen(argv, env={**os.environ, **env, **path}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "bin" / "first").exists():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first recovery never reached samba-tool"
            time.sleep(0.1)
        staging = target / "var/lib/.samba.shadowvault-partial"
        assert (staging / "etc/smb.conf").is_file()

        second = run({**env, **path}, *args)  # the rest of system-state is restored; the DC is not
        assert second.exit_code != 0 and "Traceback" not in second.stderr
        (why,) = [line for line in second.stderr.splitlines() if "SV.TEST (SVDC1)" in line]
        assert f"another recovery into {target}/var/lib/samba is running" in why, second.stderr
        assert (staging / "etc/smb.conf").is_file()  # the first one's work is untouched
    finally:
        (tmp_path / "bin" / "hold").unlink()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    dc = target / "var/lib/samba"
    assert f"private dir = {dc}/private" in (dc / "etc/smb.conf").read_text()
    assert not staging.exists()
