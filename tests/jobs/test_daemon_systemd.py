"""Socket activation with systemd as PID 1: `systemd-nspawn -b` of the cached minbase root.

A driver inside the container runs `jobs install` (an empty jobs.d: only the daemon's units matter
here), then reaches the daemon the way any requester would, through /run/shadowvault/api.sock:
the socket listens before any daemon runs, the first call starts shadowvault.service, a shadow set
of a btrfs loop filesystem (bind-mounted at /srv/data) is made, read and deleted through the API,
and after `systemctl stop shadowvault.service` the socket still listens and the next call starts
the daemon again, which still lists the persistent set the first one made.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.debootstrap import minbase_root
from tests.fixtures.loopfs import loop_filesystem
from tests.fixtures.nspawn_boot import PYTHON, boot_with_driver, install_driver, write_file
from tests.fixtures.tools import require_root, require_tools

pytestmark = pytest.mark.lab  # boots the minbase root with systemd-nspawn (make test-lab)

DRIVER = """\
#!/bin/sh
# runs once at boot: install the units, call the API through the socket, restart by a call, power off
out=/result
sv() {{ {python} -m shadowvault.cli.launch "$@"; }}
api() {{ {python} /usr/local/sbin/sv-api-calls "$@"; }}
wait_active() {{  # a Type=notify unit is active once the daemon said READY=1
  i=0; while ! systemctl -q is-active "$1" && [ $i -lt 240 ]; do sleep 0.25; i=$((i+1)); done
}}
sv jobs install > $out/install.txt 2>&1; echo $? > $out/install.rc
systemctl is-enabled shadowvault.socket > $out/socket-enabled.txt 2>&1
systemctl is-active shadowvault.socket > $out/socket-after-install.txt 2>&1
systemctl is-active shadowvault.service > $out/service-after-install.txt 2>&1
stat -c '%F %a' /run/shadowvault/api.sock > $out/socket-file.txt 2>&1
api first > $out/first.json 2> $out/first.err; echo $? > $out/first.rc
wait_active shadowvault.service
systemctl is-active shadowvault.service > $out/service-after-first.txt 2>&1
systemctl show -p MainPID --value shadowvault.service > $out/pid-first.txt 2>&1
grep "Max open files" /proc/$(cat $out/pid-first.txt)/limits > $out/limits.txt 2>&1
systemctl stop shadowvault.service > $out/stop.txt 2>&1; echo $? > $out/stop.rc
systemctl is-active shadowvault.service > $out/service-after-stop.txt 2>&1
systemctl is-active shadowvault.socket > $out/socket-after-stop.txt 2>&1
api second > $out/second.json 2> $out/second.err; echo $? > $out/second.rc
wait_active shadowvault.service
systemctl is-active shadowvault.service > $out/service-after-second.txt 2>&1
systemctl show -p MainPID --value shadowvault.service > $out/pid-second.txt 2>&1
systemctl stop shadowvault.service
journalctl --no-pager -o cat -u shadowvault.service > $out/journal.txt 2>&1
systemctl poweroff
"""

# What a requester does through the API; prints what it saw as one JSON document.
API_CALLS = '''\
#!{python}
"""first: volumes, a set made, read, listed and deleted, then a persistent set; second: list, delete."""
import json
import sys
from pathlib import Path

from shadowvault.client import Client

DATA = Path("/srv/data/app/data.txt")


def first(client: Client) -> dict:
    volumes = [v["mount_point"] for v in client.volumes()]
    made = client.create_shadow_set(["/srv/data"], provider="btrfs", auto_writers=False)
    DATA.write_text("changed after the set\\n")
    shadow = Path(made["shadows"][0]["path"])
    seen = (shadow / "app" / "data.txt").read_text()
    listed = [s["id"] for s in client.shadow_sets()]
    deleted = client.delete_shadow_set(made["id"])
    kept = client.create_shadow_set(["/srv/data"], provider="btrfs", auto_writers=False, persistent=True)
    return {{
        "volumes": volumes,
        "made": made["id"],
        "provider": made["shadows"][0]["provider"],
        "seen": seen,
        "listed": listed,
        "deleted": deleted,
        "shadow_left": shadow.exists(),
        "kept": kept["id"],
        "kept_seen": (Path(kept["shadows"][0]["path"]) / "app" / "data.txt").read_text(),
    }}


def second(client: Client) -> dict:
    listed = [s["id"] for s in client.shadow_sets()]
    return {{"listed": listed, "deleted": [client.delete_shadow_set(i) for i in listed]}}


with Client(timeout=120) as client:
    print(json.dumps({{"first": first, "second": second}}[sys.argv[1]](client)))
'''


@pytest.fixture
def container():
    require_root()
    require_tools("systemd-nspawn", "debootstrap", "btrfs")
    with minbase_root() as root, loop_filesystem("btrfs") as fs:
        yield root, fs


def _state(saved: dict[str, str], name: str) -> str:
    return saved.get(name, "").strip()


@pytest.mark.slow
def test_the_socket_starts_the_daemon_under_systemd(container, tmp_path: Path) -> None:
    root, fs = container
    (fs.mount / "app").mkdir()
    (fs.mount / "app" / "data.txt").write_text("precious\n")
    (root / "etc" / "shadowvault" / "jobs.d").mkdir(parents=True)
    (root / "srv" / "data").mkdir(parents=True)
    write_file(root / "usr" / "local" / "sbin" / "sv-api-calls", API_CALLS.format(python=PYTHON), 0o755)
    install_driver(root, DRIVER.format(python=PYTHON))

    boot = boot_with_driver(root, tmp_path / "result", binds=[(fs.mount, "/srv/data")])
    saved, context = boot.saved, boot.context()

    # install: the socket listens (everyone may connect; the policy decides), no daemon runs yet
    assert _state(saved, "install.rc") == "0", context
    assert "/etc/systemd/system/shadowvault.socket" in saved["install.txt"], context
    assert _state(saved, "socket-enabled.txt") == "enabled", context
    assert _state(saved, "socket-after-install.txt") == "active", context
    assert _state(saved, "service-after-install.txt") == "inactive", context
    assert _state(saved, "socket-file.txt") == "socket 666", context

    # the first call started the daemon, which served it on the socket systemd handed over
    assert _state(saved, "first.rc") == "0", context
    assert _state(saved, "service-after-first.txt") == "active", context
    first = json.loads(saved["first.json"])
    assert "/srv/data" in first["volumes"]
    assert first["provider"] == "btrfs"
    assert first["seen"] == "precious\n"  # the set's point in time, not the later write
    assert first["made"] in first["listed"]
    assert first["deleted"] == first["made"] and first["shadow_left"] is False
    assert first["kept_seen"] == "changed after the set\n"

    # stopped: the socket stays and listens; the next call starts a new daemon
    assert _state(saved, "stop.rc") == "0", context
    assert _state(saved, "service-after-stop.txt") == "inactive", context
    assert _state(saved, "socket-after-stop.txt") == "active", context
    assert _state(saved, "second.rc") == "0", context
    assert _state(saved, "service-after-second.txt") == "active", context
    first_pid, second_pid = _state(saved, "pid-first.txt"), _state(saved, "pid-second.txt")
    assert first_pid.isdigit() and second_pid.isdigit() and int(first_pid) > 0, context
    assert first_pid != second_pid, context
    soft, hard = saved["limits.txt"].split()[3:5]  # LimitNOFILE=65536, within what the host allows
    assert soft == hard and 1024 < int(soft) <= 65536, context  # the soft limit raised to the hard one
    second = json.loads(saved["second.json"])
    assert second["listed"] == [first["kept"]]  # the persistent set outlived its daemon
    assert second["deleted"] == [first["kept"]]

    journal = saved["journal.txt"]
    assert journal.count("listening on /run/shadowvault/api.sock (handed over by systemd)") == 2, journal
    assert "Traceback" not in journal, journal
    left = subprocess.run(
        ["btrfs", "subvolume", "list", str(fs.mount)], capture_output=True, text=True, check=True
    )
    assert left.stdout == "", left.stdout  # every snapshot the API made is gone
    assert (fs.mount / "app" / "data.txt").read_text() == "changed after the set\n"
