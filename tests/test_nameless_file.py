"""`fsutil.nameless_file`: a secret handed to a command by path is never left behind, even when the
process holding it is killed (a DC's backup archive, written for samba-tool, used to stay in /tmp)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shadowvault.fsutil import nameless_file

HOLDER = """
import subprocess, sys, time
from shadowvault.fsutil import nameless_file
with nameless_file(b"the domain's secrets") as path:
    print(subprocess.run(["cat", path], capture_output=True, check=True).stdout.decode(), flush=True)
    time.sleep(600)
"""


def test_the_file_has_no_name_a_command_reads_it_and_a_kill_leaves_nothing(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "the domain's secrets\n"
        assert os.listdir(tmp_path) == []  # no name in the temporary directory while it is held
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert os.listdir(tmp_path) == []


def test_a_temp_directory_without_o_tmpfile_gets_a_memory_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc cannot hold an O_TMPFILE (EOPNOTSUPP), as some filesystems a TMPDIR may point at."""
    monkeypatch.setattr(tempfile, "tempdir", "/proc")
    with nameless_file(b"the domain's secrets") as path:
        done = subprocess.run(["cat", path], capture_output=True, check=True)
        assert done.stdout == b"the domain's secrets"
        assert "memfd:" in os.readlink(path)
