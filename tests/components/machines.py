"""The "source machine" of the system-state tests: a minbase Debian root changed the way an admin would."""

from __future__ import annotations

import os
from pathlib import Path

from tests.fixtures.debootstrap import nspawn

PROBE_APP_UNIT = """[Unit]
Description=the source machine's own service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /var/lib/probe-app && cat /etc/probe-app.conf > /var/lib/probe-app/ran'

[Install]
WantedBy=multi-user.target
"""

SOURCE_FSTAB = """# <file system> <mount point> <type> <options> <dump> <pass>
UUID=11111111-2222-3333-4444-555555555555\t/\text4\terrors=remount-ro\t0\t1
UUID=66666666-7777-8888-9999-000000000000\t/data\txfs\tdefaults\t0\t2
tmpfs\t/scratch\ttmpfs\tsize=64m\t0\t0
"""


def change_source_machine(root: Path) -> None:
    """Users, a group, a package, a service enabled, a timer masked, a unit disabled, files in /etc."""
    script = "; ".join(
        [
            "set -e",
            "groupadd -g 1500 devs",
            "useradd -m -u 1000 -s /bin/bash -c 'Alice,,,' -G devs alice",
            "echo 'alice:$y$j9T$abc$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG' | chpasswd -e",
            "useradd -r -s /usr/sbin/nologin -d /var/lib/probe-app probeapp",
            "apt-get install -y -q --no-install-recommends hello",
            "systemctl enable probe-app.service",
            "systemctl mask apt-daily.timer",
            "systemctl disable e2scrub_reap.service",
        ]
    )
    etc = root / "etc"
    (etc / "probe-app.conf").write_text("greeting=from the source machine\n")
    (etc / "systemd/system/probe-app.service").write_text(PROBE_APP_UNIT)
    (etc / "hostname").write_text("sourcebox\n")
    with open(etc / "issue", "a") as issue:  # a conffile of base-files, changed by the admin
        issue.write("Property of the source machine\n")
    (etc / "fstab").write_text(SOURCE_FSTAB)
    done = nspawn(root, "sh", "-c", script)
    assert done.returncode == 0, done.stdout + done.stderr
    crontabs = root / "var/spool/cron/crontabs"
    crontabs.mkdir(parents=True, exist_ok=True)
    (crontabs / "alice").write_text("0 3 * * * echo backup\n")
    os.chown(crontabs / "alice", 1000, 0)
    os.chmod(crontabs / "alice", 0o600)
