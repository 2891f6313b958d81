"""A job fired by a systemd timer, with systemd as PID 1: `systemd-nspawn -b` of the cached minbase root.

The project and its interpreter are bind-mounted read-only at the paths they have here; a btrfs
loop filesystem is bind-mounted at /srv/data. A driver unit inside the container runs `jobs install`
(the real `systemctl daemon-reload` and `enable --now`), waits for the timer to fire the job, saves
what a user would look at (the job's journal, `jobs status --json`, the default metrics textfile,
the timers) and powers the container off. The test then checks the snapshot in the repository.
`jobs install` runs with SHADOWVAULT_CONFIG_DIR and SHADOWVAULT_STATE_DIR set, as an administrator
may: the job the timer fires (through the daemon, which the socket starts) is found, and recorded,
only if the units carry them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import textwrap
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD, restore
from tests.fixtures.debootstrap import minbase_root
from tests.fixtures.loopfs import loop_filesystem
from tests.fixtures.nspawn_boot import PYTHON, boot_with_driver, install_driver, write_file
from tests.fixtures.tools import require_root, require_tools

pytestmark = pytest.mark.lab  # boots the minbase root with systemd-nspawn (make test-lab)

JOB = "nightly"
CONFIG_DIR, STATE_DIR = "/etc/shadowvault-alt", "/var/lib/shadowvault-alt"

DRIVER = """\
#!/bin/sh
# runs once at boot: install the units, let the timer fire the job, save what a user checks, power off
out=/result
export SHADOWVAULT_CONFIG_DIR={config_dir} SHADOWVAULT_STATE_DIR={state_dir}
sv() {{ {python} -m shadowvault.cli.launch "$@"; }}
sv jobs install > $out/install.txt 2>&1; echo $? > $out/install.rc
i=0
while [ ! -s {state_dir}/jobs/{job}.json ] && [ $i -lt 1200 ]; do sleep 0.5; i=$((i+1)); done
systemctl stop shadowvault-job@{job}.timer
i=0
while systemctl -q is-active shadowvault-job@{job}.service && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done
systemctl show -p Result -p ExecMainStatus shadowvault-job@{job}.service > $out/service.txt
sv jobs status {job} --json > $out/status.json 2> $out/status.err
journalctl --no-pager -o cat -u shadowvault-job@{job}.service > $out/journal.txt 2>&1
cp /var/lib/prometheus/node-exporter/shadowvault.prom $out/metrics.prom
systemctl list-timers --all --no-pager > $out/timers.txt
systemctl poweroff
"""


@pytest.fixture
def container(tmp_path: Path):
    require_root()
    require_tools("systemd-nspawn", "debootstrap")
    with minbase_root() as root, loop_filesystem("btrfs") as fs:
        yield root, fs


@pytest.mark.slow
def test_a_timer_fires_the_job_under_systemd(container, tmp_path: Path) -> None:
    root, fs = container
    (fs.mount / "app").mkdir()
    (fs.mount / "app" / "data.txt").write_text("precious\n")
    (fs.mount / "app" / "blob.bin").write_bytes(os.urandom(20000))

    repo = root / "var" / "backups" / "repo"
    repo.parent.mkdir(parents=True, exist_ok=True)
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    write_file(root / "etc" / "shadowvault" / "repo.pass", PASSWORD + "\n", 0o600)
    write_file(
        root / CONFIG_DIR.lstrip("/") / "jobs.d" / f"{JOB}.toml",
        textwrap.dedent("""\
            schedule = "*:*:0/10"
            repository = "/var/backups/repo"
            password_file = "/etc/shadowvault/repo.pass"
            paths = ["/srv/data"]
            tags = ["timer"]

            [retention]
            keep_last = 3
        """),
    )
    install_driver(root, DRIVER.format(python=PYTHON, job=JOB, config_dir=CONFIG_DIR, state_dir=STATE_DIR))
    (root / "srv" / "data").mkdir(parents=True)

    boot = boot_with_driver(root, tmp_path / "result", binds=[(fs.mount, "/srv/data")])
    saved, context = boot.saved, boot.context()
    assert saved.get("install.rc") == "0\n", context
    assert "OnCalendar=*:*:0/10" in (root / "etc/systemd/system/shadowvault-job@nightly.timer").read_text()
    fired = [line for line in saved["timers.txt"].splitlines() if "shadowvault-job@nightly.timer" in line]
    assert fired and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fired[0]), context  # LAST: it fired

    record = json.loads(saved["status.json"])
    assert record["status"] == "success" and record["exit_status"] == 0, context
    assert record["consistency"] == {"files": "crash"}, context  # a btrfs snapshot, no writer
    assert "ExecMainStatus=0" in saved["service.txt"] and "Result=success" in saved["service.txt"], context
    assert record["snapshot_id"][:8] in saved["journal.txt"], context

    metrics = saved["metrics.prom"]
    assert 'shadowvault_job_last_exit_status{job="nightly"} 0.0' in metrics
    assert f'shadowvault_job_last_added_bytes{{job="nightly"}} {float(record["added_bytes"])}' in metrics

    with Repository.open(repo, PASSWORD) as r:
        snapshots = dict(r.list_snapshots())
    assert record["snapshot_id"] in snapshots
    snapshot = snapshots[record["snapshot_id"]]
    assert snapshot.paths == ["/srv/data"] and "job:nightly" in snapshot.tags
    restored = tmp_path / "restored"
    with Repository.open(repo, PASSWORD) as r:
        restore(r, snapshot.tree, restored)
    assert (restored / "srv/data/app/data.txt").read_text() == "precious\n"
    assert (restored / "srv/data/app/blob.bin").read_bytes() == (fs.mount / "app" / "blob.bin").read_bytes()
    assert not (root / "var/lib/shadowvault/jobs/nightly.json").exists()  # recorded where install said
    mode = (root / STATE_DIR.lstrip("/") / "jobs/nightly.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
