"""PostgreSQL on a logical volume, in the guest lab: backed up through the lvm provider under a write load
with the postgresql writer, and restored with it, as a user would do both.

The cluster (PostgreSQL 15 from the guest image, our own initdb, port and socket; fsync on) lives on
XFS on a classic logical volume. A client commits numbered transactions (a row and a counter each) and
notes, outside the volume, when it sent each one and when the server acknowledged it. `shadowvault
backup --writer postgresql:DATADIR --provider lvm` backs the volume up; `shadowvault restore --writer`
lays the cluster down twice beside the running one, on ports of its own: once with the writer's
backup_label and kept WAL (the default), once by plain crash recovery, which is only right because
the snapshot is one instant of the whole volume. Each copy must open out of recovery, hold rows 1..k
with no gap and the counter at k, k covering every transaction acknowledged before the freeze (and,
for the crash copy, nothing sent after the snapshot was made), and pass pg_amcheck (every heap and
B-tree index of its database, with --heapallindexed).

A module of its own, on a guest it shares with test_lvm_validity.py (tests/scheduling.py runs the two
one after another).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures.guest_lab import GuestLab, shared_guest_lab_fixture
from tests.shadow.lvm_guest import init_repository

lab = shared_guest_lab_fixture()  # disk `pv`; the first module to use the guest may build its image
# a hang guard: its first setup may wait for the guest image's build (11 min seen in all, under load)
pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]
VG = "svpg"
MOUNT = "/mnt/pg"
DATADIR = f"{MOUNT}/data"
PORT = 5433
SOCKETS = "/run/sv-pg"
PG_BIN = "/usr/lib/postgresql/15/bin"
ACKS = "/tmp/pg-acks"
ENV = {"SHADOWVAULT_REPOSITORY": "/tmp/repo", "SHADOWVAULT_PASSWORD": "secret"}

# A classic logical volume with XFS (the SQLite test of test_lvm_provider.py has ext4 on a thin one),
# and a cluster made and started as Debian's tools would, but on our own port and socket directory
# (the image has no cluster of its own, and nothing in the guest starts one). Settings go into the
# data directory's postgresql.conf, so a restored copy has them too.
CLUSTER = f"""
set -e
if pgrep -x postgres >/dev/null; then echo "a PostgreSQL server runs in the fresh guest" >&2; exit 1; fi
pvcreate -q "$DISK"
vgcreate -q {VG} "$DISK"
lvcreate -q -y -Wy -L 400M -n pg {VG}
mkfs.xfs -q -f /dev/{VG}/pg
mkdir -p {MOUNT} {SOCKETS}
mount /dev/{VG}/pg {MOUNT}
install -d -o postgres -g postgres -m 700 {DATADIR}
chown postgres:postgres {SOCKETS}
runuser -u postgres -- {PG_BIN}/initdb -D {DATADIR} -U postgres -A trust -E UTF8 --locale=C \\
    --wal-segsize=1 --no-sync --no-instructions >/tmp/initdb.log
cat >> {DATADIR}/postgresql.conf <<EOF
port = {PORT}
listen_addresses = ''
unix_socket_directories = '{SOCKETS}'
shared_buffers = 16MB
min_wal_size = 4MB
max_wal_size = 32MB
jit = off
EOF
runuser -u postgres -- {PG_BIN}/pg_ctl -D {DATADIR} -l /tmp/pg.log -w -t 120 start >/dev/null
"""

# The application: one transaction per number (a row, and the counter set to it), one line per
# acknowledged commit: "n sent acked" (time.time() before the insert and after the commit returned).
LOAD = """
import sys, time
import psycopg
conn = psycopg.connect(host=sys.argv[1], port=int(sys.argv[2]), user="postgres", dbname="postgres")
conn.execute("create table load (n int primary key, pad text)")
conn.execute("create table counter (id int primary key, n int not null)")
conn.execute("insert into counter values (1, 0)")
conn.commit()
acks = open(sys.argv[3], "a", buffering=1)
n = 0
while True:
    n += 1
    sent = time.time()
    with conn.transaction():
        conn.execute("insert into load values (%s, repeat('x', 200))", [n])
        conn.execute("update counter set n = %s where id = 1", [n])
    acks.write(f"{n} {sent} {time.time()}\\n")
    time.sleep(0.01)  # bounded (~50 a second under emulation): each commit is an fsync on the host
"""

# What a restored copy holds (in recovery?, rows, highest n, the counter), pg_amcheck's exit status
# over the database of the load (every table, the catalogs too, and each B-tree index against its
# table; its report on stderr), then the copy stopped. One guest call, for the copy at $SOCK,
# $PGPORT, $DATA. (--all would add template1's catalogs: seconds more under emulation.)
CHECK = f"""
set -e
runuser -u postgres -- {PG_BIN}/psql -h "$SOCK" -p "$PGPORT" -U postgres -d postgres -XAtq -F ' ' \\
    -c "select pg_is_in_recovery(), count(*), coalesce(max(n), 0), (select n from counter) from load"
amcheck=0
runuser -u postgres -- {PG_BIN}/pg_amcheck -h "$SOCK" -p "$PGPORT" -U postgres --database postgres \\
    --install-missing --heapallindexed >&2 || amcheck=$?
echo $amcheck
runuser -u postgres -- {PG_BIN}/pg_ctl -D "$DATA" -m fast -w -t 120 stop >/dev/null
"""


@dataclass(frozen=True)
class Ack:
    n: int
    sent: float
    acked: float


@pytest.fixture(scope="module")
def cluster(lab: GuestLab) -> Iterator[str]:
    """The cluster, running on its logical volume; stopped and the volume group removed afterwards."""
    lab.check(CLUSTER, env={"DISK": lab.disk("pv")}, timeout=300)
    yield DATADIR
    lab.run(
        f"runuser -u postgres -- {PG_BIN}/pg_ctl -D {DATADIR} -m immediate -w stop; "
        f"umount {MOUNT}; vgremove -qff {VG}; pvremove -qff {lab.disk('pv')}",
        timeout=180,
    )


def sv_json(lab: GuestLab, *args: str) -> dict:
    done = lab.sv(*args, env=ENV)
    assert done.returncode == 0, done.context()
    return json.loads(done.stdout)


def acknowledged(lab: GuestLab) -> list[Ack]:
    lines = lab.check(f"cat {ACKS}").stdout.splitlines()
    return [Ack(int(n), float(sent), float(acked)) for n, sent, acked in (line.split() for line in lines)]


def restore(lab: GuestLab, snapshot: str, name: str, port: int, *options: str) -> int:
    """`restore SNAP --writer postgresql:DATADIR` below /tmp/NAME on `port`, checked (CHECK) and stopped.

    Returns k: the copy is out of recovery, holds transactions 1..k with no gap and the counter at k,
    and passes pg_amcheck.
    """
    target, sockets = f"/tmp/{name}", f"/run/sv-pg-{name}"
    lab.check(f"install -d -o postgres -g postgres {sockets}")
    done = lab.sv(
        "restore", snapshot, "--writer", f"postgresql:{DATADIR}", "--target-root", target,
        "--writer-option", f"port={port}", "--writer-option", f"socket_dir={sockets}",
        *[arg for option in options for arg in ("--writer-option", option)],
        env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.context()
    checked = lab.check(CHECK, env={"SOCK": sockets, "PGPORT": str(port), "DATA": f"{target}{DATADIR}"})
    in_recovery, count, highest, counter, amcheck = checked.stdout.split()
    assert in_recovery == "f" and amcheck == "0", checked.context()
    assert int(count) == int(highest) == int(counter), checked.context()
    return int(highest)


def test_a_cluster_backed_up_under_load_restores_with_every_transaction_acknowledged_before_the_freeze(
    lab: GuestLab, cluster: str
):
    lab.check(f"cat > /tmp/load.py <<'EOF'\n{LOAD}\nEOF")
    start = f"setsid python3 /tmp/load.py {SOCKETS} {PORT} {ACKS} </dev/null >/tmp/load.log 2>&1 & echo $!"
    pid = lab.check(start).stdout.strip()
    try:
        lab.check(f"until test -s {ACKS} && test $(wc -l < {ACKS}) -ge 20; do sleep 0.2; done", timeout=180)
        init_repository(lab, ENV["SHADOWVAULT_REPOSITORY"], ENV["SHADOWVAULT_PASSWORD"])
        writer = f"postgresql:{cluster}"
        backup = lab.sv("backup", "--json", "--provider", "lvm", "--writer", writer, MOUNT, env=ENV)
        assert backup.returncode == 0, backup.context()
    finally:
        lab.run(f"kill -9 {pid}")
    load_log = lab.check("cat /tmp/load.log").stdout
    assert "Traceback" not in load_log, load_log
    summary = [m for m in map(json.loads, backup.stdout.splitlines()) if m.get("message_type") == "summary"]
    snapshot = summary[0]["snapshot_id"]
    acks = acknowledged(lab)

    manifest = sv_json(lab, "cat", "blob", sv_json(lab, "cat", "snapshot", snapshot)["manifest"])
    (shadow,) = manifest["shadows"]
    assert (shadow["provider"], shadow["atomic"], shadow["volume"]) == ("lvm", True, MOUNT)
    (report,) = [w for w in manifest["writers"] if w["name"] == "postgresql"]
    assert report["failure"] is None, report
    (component,) = report["components"]
    assert component["consistency"] == "application"
    assert component["metadata"]["crash_consistent_alone"] is True
    assert component["metadata"]["wal"], "the WAL from pg_backup_start to pg_backup_stop is kept"
    frozen = component["metadata"].get("freeze_started") or manifest["frozen_at"]
    must_have = max((a.n for a in acks if a.acked < frozen), default=0)
    assert must_have >= 20
    sent_after = [a.n for a in acks if a.sent > shadow["created"]]

    # The base backup: backup_label and the kept WAL, recovered to pg_backup_stop (after the snapshot).
    by_label = restore(lab, snapshot, "by-label", PORT + 1)
    assert by_label >= must_have, f"acknowledged before the freeze: 1..{must_have}; restored: 1..{by_label}"
    # Crash recovery of the snapshot alone: the volume at one instant, between the freeze and the
    # snapshot's commit, so it holds nothing sent after that commit.
    by_crash = restore(lab, snapshot, "by-crash", PORT + 2, "postgresql_mode=crash")
    assert by_crash >= must_have, f"acknowledged before the freeze: 1..{must_have}; restored: 1..{by_crash}"
    assert by_crash < min(sent_after, default=by_crash + 1), f"{min(sent_after)} was sent after the snapshot"
