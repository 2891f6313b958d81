"""`make run`'s job end to end, in a temporary directory instead of ./var."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def test_demo_backup_restores_and_verifies():
    with tempfile.TemporaryDirectory(prefix="sv-demo-test-") as var:
        env = {**os.environ, "SHADOWVAULT_DEMO_DIR": var}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "shadowvault.demo_backup"],
                capture_output=True,
                text=True,
                env=env,
                timeout=240,
            )
        finally:
            subprocess.run([sys.executable, "-m", "shadowvault.demo_backup", "--clean"], env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PRAGMA integrity_check = ok" in done.stdout
        assert "backup 2 (incremental)" in done.stdout and "OK:" in done.stdout
