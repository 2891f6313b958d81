"""The lvm provider, in the guest lab (this host has no device-mapper): ext4 and XFS on logical volumes,
classic and thin snapshots, under a write load; delete, reap, fsfreeze refused, the space a classic
snapshot gets (and a set whose space another process took after planning). Overflows:
test_lvm_validity.py.

Everything runs `shadowvault` inside the guest as a user would, and checks what a user would look at:
the files in the shadow, `lvs`, the mount table, exit codes and messages.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.fixtures.guest_lab import CLI_SOCKET, GUEST_CLI, GuestLab, shared_guest_lab_fixture
from tests.shadow.lvm_guest import (
    SLOW,
    created_set,
    install_script_writer,
    lvm_configured,
    lvm_volume,
    mounted,
    snapshot_lvs,
    volume_group,
    wait_for,
)

lab = shared_guest_lab_fixture()  # disk `pv`; the first module to use the guest may build its image
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

# One process appends the same counter to two files in each of the directories $DIRS, in lock-step,
# one line at a time, until killed. In images of the directories taken at one instant every count is
# the same, except that the writer may be caught mid-round: then the directories in $DIRS's order
# (and a before b in each) hold n up to that point and n - 1 after it, never a gap. It pauses 20 ms
# between rounds (bash's `read -t` on a FIFO nobody writes: no program started), ~50 rounds a
# second: an lvcreate takes seconds here, so snapshots taken one after another would differ by
# dozens, and a writer that never paused would keep one emulated CPU busy for the whole test.
WRITER = (
    "mkfifo /tmp/tick.$$; exec 9<>/tmp/tick.$$; rm /tmp/tick.$$; i=0; while :; do "
    "for d in $DIRS; do echo $i >> $d/a; echo $i >> $d/b; done; i=$((i + 1)); read -t 0.02 -u 9; done"
)


@pytest.fixture(scope="module")
def vg(lab: GuestLab) -> Iterator[str]:
    with volume_group(lab) as name:
        yield name


@contextmanager
def lockstep_writer(lab: GuestLab, directories: list[str]) -> Iterator[None]:
    """The appending writer running (niced) over the directories, stopped after the block."""
    fixed = "; ".join(f"echo before > {d}/fixed" for d in directories)
    start = f"{fixed}; setsid nice -n 19 bash -c {shlex.quote(WRITER)} </dev/null >/dev/null 2>&1 & echo $!"
    pid = lab.check(start, env={"DIRS": " ".join(directories)}).stdout.strip()
    try:
        wait_for(lab, f"test $(wc -l < {directories[-1]}/b) -ge 50")
        yield
    finally:
        lab.run(f"kill -9 {pid}")


# For each (live, shadow): change the live `fixed`, read the shadow's a and b, let the live writer
# run on past them, drop the page cache, read the shadow again (from its blocks this time), and try
# to write into it. One guest call: under emulation each costs ~0.5 s.
AFTER_SCRIPT = """
set -e
echo after > "$LIVE/fixed"
cat "$SHADOW/a" > /tmp/first-a; cat "$SHADOW/b" > /tmp/first-b
until [ $(wc -l < "$LIVE/a") -gt $(( $(wc -l < /tmp/first-a) + 20 )) ]; do sleep 0.2; done
sync; echo 3 > /proc/sys/vm/drop_caches
if touch "$SHADOW/new" 2>/dev/null; then writable=yes; else writable=no; fi
printf '{"fixed": "%s", "live_fixed": "%s", "writable": "%s", ' \
    "$(cat "$SHADOW/fixed")" "$(cat "$LIVE/fixed")" "$writable"
printf '"a": [%s], "b": [%s], ' "$(paste -sd, /tmp/first-a)" "$(paste -sd, /tmp/first-b)"
printf '"a_again": [%s], "b_again": [%s]}' "$(paste -sd, "$SHADOW/a")" "$(paste -sd, "$SHADOW/b")"
"""


def after_the_shadow(lab: GuestLab, live: str, shadow: str) -> dict:
    result = lab.check(AFTER_SCRIPT, env={"LIVE": live, "SHADOW": shadow})
    return json.loads(result.stdout)


LAYOUT = (("ext4", "classic"), ("xfs", "thin"), ("ext4", "thin"), ("xfs", "classic"))  # one set, four LVs


def test_the_volumes_of_a_set_under_a_write_load_hold_one_point_in_time_together(lab: GuestLab, vg: str):
    with contextlib.ExitStack() as stack:
        mounts = [stack.enter_context(lvm_volume(lab, vg, fstype, kind)) for fstype, kind in LAYOUT]
        with lockstep_writer(lab, mounts):
            volumes = [arg for mount in mounts for arg in ("--volume", mount)]
            made = lab.sv("shadows", "create", *volumes, *SLOW, "--json")
            assert made.returncode == 0, made.context()
            manifest = created_set(made.stdout)
            shadows = {s["volume"]: s for s in manifest["shadows"]}
            assert sorted(shadows) == sorted(mounts)
            # The guest's kernel (6.12) lets lvcreate snapshot a frozen filesystem: all four are
            # frozen together and taken at one instant, so the set has no "one after another" note.
            assert not [note for note in manifest["notes"] if "one after another" in note], manifest["notes"]
            assert sorted(snapshot_lvs(lab, vg)) == sorted(s["provider_data"]["lv"] for s in shadows.values())
            seen = {mount: after_the_shadow(lab, mount, shadows[mount]["path"]) for mount in mounts}

        for (_, kind), mount in zip(LAYOUT, mounts, strict=True):
            shadow, found = shadows[mount], seen[mount]
            assert (shadow["provider"], shadow["atomic"], shadow["frozen"]) == ("lvm", True, True)
            assert shadow["provider_data"]["kind"] == kind
            assert (found["fixed"], found["live_fixed"], found["writable"]) == ("before", "after", "no")
            a, b = found["a"], found["b"]
            assert a == list(range(len(a))) and len(a) >= 50
            assert b == list(range(len(b))) and len(b) in (len(a), len(a) - 1)
            assert (found["a_again"], found["b_again"]) == (a, b)
        # One instant for all: the last record of each file, in the writer's order, is one number, or
        # that number up to where the writer was caught and one less after it.
        last = [seen[mount][name][-1] for mount in mounts for name in ("a", "b")]
        assert last == sorted(last, reverse=True) and last[0] - last[-1] <= 1, last

        deleted = lab.sv("shadows", "delete", manifest["id"])
        assert deleted.returncode == 0, deleted.context()
        assert snapshot_lvs(lab, vg) == []
        for shadow in shadows.values():
            assert lab.run(f"mountpoint -q {shadow['path']} || test -e {shadow['path']}").returncode != 0


def test_volumes_list_offers_lvm_first_for_a_filesystem_on_a_logical_volume(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        listed = lab.sv("volumes", "list", "--json")
        assert listed.returncode == 0, listed.context()
        (volume,) = [v for v in json.loads(listed.stdout) if v["mount_point"] == mount]
        assert volume["providers"][0] == "lvm"
        (root,) = [v for v in json.loads(listed.stdout) if v["mount_point"] == "/"]
        assert "not on an LVM logical volume" in root["unsupported"]["lvm"]


def test_fsfreeze_with_lvm_is_refused_before_anything_is_made(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        refused = lab.sv("shadows", "create", "--volume", mount, "--writer", "fsfreeze")
        assert refused.returncode == 2, refused.context()
        assert "lvm freezes the filesystem itself" in refused.stderr
        assert snapshot_lvs(lab, vg) == []
        lab.check(f"touch {mount}/still-writable")  # not left frozen


def test_the_set_of_a_killed_requester_is_reaped(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "xfs", "classic") as mount:
        call = shlex.join(["python3", "-S", GUEST_CLI, "call", CLI_SOCKET, "exec", "--volume", mount])
        lab.check(f"setsid {call} --commit-timeout 120 -- sleep 600 </dev/null >/tmp/exec.log 2>&1 &")
        wait_for(lab, "pgrep -f '^sleep 600' >/dev/null")  # exec runs its command once the set is made
        listed = json.loads(lab.sv("shadows", "list", "--json").stdout)
        (held,) = listed
        requester = held["requester_pid"]
        lab.check(f"pkill -9 -P {requester} sleep; kill -9 {requester}")
        wait_for(lab, f"! kill -0 {requester} 2>/dev/null")

        listed_after = lab.sv("shadows", "list", "--json")  # reaps the sets of ended requesters
        assert json.loads(listed_after.stdout) == [], listed_after.context()
        assert snapshot_lvs(lab, vg) == []
        assert not mounted(lab, held["shadows"][0]["path"])


def test_a_snapshot_no_record_knows_is_removed_as_an_orphan(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "ext4", "thin") as mount:
        first = created_set(lab.sv("shadows", "create", "--volume", mount, "--json", *SLOW).stdout)
        lab.check(f"rm /var/lib/shadowvault/sets/{first['id']}.json")  # the record lost
        second = lab.sv("shadows", "create", "--volume", mount, "--json", *SLOW)
        assert second.returncode == 0, second.context()
        kept = created_set(second.stdout)["shadows"][0]
        assert snapshot_lvs(lab, vg) == [kept["provider_data"]["lv"]]
        assert not mounted(lab, first["shadows"][0]["path"])
        assert lab.sv("shadows", "delete", "--all").returncode == 0
        assert snapshot_lvs(lab, vg) == []


# An application committing one row per transaction, and noting each acknowledged commit (id, time)
# outside the volume; 10 ms apart (a loop that never paused would keep one emulated CPU busy).
SQLITE_APP = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=120)
db.execute("create table if not exists t (id integer primary key, v text)")
acks = open(sys.argv[2], "a", buffering=1)
i = 0
while True:
    i += 1
    db.execute("begin immediate")
    db.execute("insert into t values (?, ?)", (i, "x" * 200))
    db.execute("commit")
    acks.write(f"{i} {time.time()}\\n")
    time.sleep(0.01)
"""

SQLITE_CHECK = """
import json, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
ids = [row[0] for row in db.execute("select id from t order by id")]
frozen_at = float(sys.argv[3])
acked = [int(line.split()[0]) for line in open(sys.argv[2]) if float(line.split()[1]) < frozen_at]
print(json.dumps({"integrity": db.execute("pragma integrity_check").fetchone()[0], "ids": ids,
                  "acked_before_freeze": max(acked, default=0)}))
"""


def test_an_sqlite_database_in_the_shadow_has_every_commit_acknowledged_before_the_freeze(
    lab: GuestLab, vg: str
):
    with lvm_volume(lab, vg, "ext4", "thin") as mount:
        db = f"{mount}/app.db"
        lab.check(f"cat > /tmp/app.py <<'EOF'\n{SQLITE_APP}\nEOF")
        lab.check(f"cat > /tmp/check.py <<'EOF'\n{SQLITE_CHECK}\nEOF")
        pid = lab.check(f"setsid python3 /tmp/app.py {db} /tmp/acks </dev/null >/tmp/app.log 2>&1 & echo $!")
        try:
            wait_for(lab, "test -s /tmp/acks && test $(wc -l < /tmp/acks) -ge 20")
            made = lab.sv("shadows", "create", "--volume", mount, "--writer", f"sqlite:{db}", *SLOW, "--json")
            assert made.returncode == 0, made.context()
            manifest = created_set(made.stdout)
            shadow_db = f"{manifest['shadows'][0]['path']}/app.db"
            checked = lab.check(f"python3 /tmp/check.py {shadow_db} /tmp/acks {manifest['frozen_at']}")
        finally:
            lab.run(f"kill -9 {pid.stdout.strip()}; rm -f /tmp/acks")
        found = json.loads(checked.stdout)
        assert found["integrity"] == "ok"
        assert found["ids"] == list(range(1, len(found["ids"]) + 1))
        assert len(found["ids"]) >= found["acked_before_freeze"] >= 20
        (writer,) = manifest["writers"]
        assert writer["components"][0]["consistency"] == "application"
        assert lab.sv("shadows", "delete", manifest["id"]).returncode == 0


@pytest.fixture
def lvm_config(lab: GuestLab) -> Iterator[Callable[[str], None]]:
    with lvm_configured(lab) as share:
        yield share


def test_a_classic_snapshot_gets_its_share_of_the_free_extents_and_a_thin_one_no_size(
    lab: GuestLab, vg: str, lvm_config
):
    def shadow_set(*mounts: str) -> tuple[dict[str, dict], dict[str, tuple[str, int]], int]:
        """A set of `mounts` made and deleted: its shadows' provider data by volume, our snapshot
        LVs (segment type, extents) as lvs listed them, and the free extents the set left."""
        made = lab.sv("shadows", "create", *(f"--volume={m}" for m in mounts), *SLOW, "--json")
        assert made.returncode == 0, made.context()
        manifest = created_set(made.stdout)
        lvs = f"lvs --noheadings -o lv_name,segtype,seg_size_pe {vg}"
        free, *rows = lab.check(f"vgs --noheadings -o vg_free_count {vg}; {lvs}").stdout.splitlines()
        assert lab.sv("shadows", "delete", manifest["id"]).returncode == 0
        lvs_found = {name: (kind, int(n)) for name, kind, n in map(str.split, rows) if name.startswith("sv-")}
        return {s["volume"]: s["provider_data"] for s in manifest["shadows"]}, lvs_found, int(free)

    with contextlib.ExitStack() as stack:
        first, second = (stack.enter_context(lvm_volume(lab, vg, "ext4", "classic")) for _ in range(2))
        thin = stack.enter_context(lvm_volume(lab, vg, "ext4", "thin"))
        # 100 extents left free: the shares below stay under what a 128 MiB origin can use (LVM
        # cuts a larger one down to that, about 33 extents).
        free_count = f"$(vgs --noheadings -o vg_free_count {vg})"
        lab.check(f"lvcreate -q -y -Wn -n filler -l $(({free_count} - 100)) {vg}")
        stack.callback(lab.run, f"lvremove -qy {vg}/filler")
        extent = 4 << 20  # vgcreate's default

        # The default share, 20 %: 20 of the 100 free extents; the thin snapshot takes none of them.
        made, snapshots, free = shadow_set(first, thin)
        assert snapshots[made[first]["lv"]] == ("linear", 20) and made[first]["cow_bytes"] == 20 * extent
        assert snapshots[made[thin]["lv"]][0] == "thin" and made[thin]["cow_bytes"] == 0 and free == 80

        # 30 %: each classic snapshot of a set gets its share of what the ones before it left, and
        # its record says what it got (not its share of what was free when the set was planned).
        lvm_config('"30%"')
        made, snapshots, _ = shadow_set(first, second)
        assert sorted(n for _, n in snapshots.values()) == [21, 30]  # 30 % of 100, then of 70
        assert all(data["cow_bytes"] == snapshots[data["lv"]][1] * extent for data in made.values())

        # Room for one classic snapshot but not for two: 30 % of 4 extents is one, 30 % of the 3
        # left is none. The set is refused when it is planned, naming the volume crowded out.
        lab.check(f"lvextend -q -l +$(({free_count} - 4)) {vg}/filler")
        both = lab.sv("shadows", "create", "--volume", first, "--volume", second, "--provider", "lvm", *SLOW)
        assert both.returncode == 1, both.context()
        (line,) = both.stderr.strip().splitlines()
        assert f"provider lvm cannot shadow {second}: volume group {vg} has 16.0 MiB free" in line, line
        assert "after the set's other classic snapshot there took their shares" in line, line
        assert snapshot_lvs(lab, vg) == []
        alone = lab.sv("shadows", "create", "--volume", second, "--provider", "lvm", *SLOW, "--json")
        assert alone.returncode == 0, alone.context()  # each alone still fits
        assert lab.sv("shadows", "delete", created_set(alone.stdout)["id"]).returncode == 0

        # Too little free space (30 % of 2 extents is none): refused before anything is made.
        lab.check(f"lvextend -q -l +$(({free_count} - 2)) {vg}/filler")
        refused = lab.sv("shadows", "create", "--volume", first, "--provider", "lvm", *SLOW)
        assert refused.returncode == 1, refused.context()
        (line,) = refused.stderr.strip().splitlines()
        assert f"volume group {vg} has 8.0 MiB free" in line and "less than one extent" in line, line
        assert snapshot_lvs(lab, vg) == []
        # `auto` serves it with a lesser provider, and the set's notes say why lvm did not.
        fallback = lab.sv("shadows", "create", "--volume", first, *SLOW, "--json")
        assert fallback.returncode == 0, fallback.context()
        manifest = created_set(fallback.stdout)
        assert lab.sv("shadows", "delete", manifest["id"]).returncode == 0
        (served,) = manifest["shadows"]
        assert served["provider"] != "lvm"
        assert any(
            f"provider lvm cannot shadow {first}: volume group {vg} has 8.0 MiB free" in note
            and f"(so {served['provider']} served it)" in note
            for note in manifest["notes"]
        ), manifest["notes"]


def test_a_set_whose_space_is_taken_after_planning_fails_in_one_line_and_leaves_nothing(
    lab: GuestLab, vg: str, lvm_config
):
    with contextlib.ExitStack() as stack:
        thin = stack.enter_context(lvm_volume(lab, vg, "ext4", "thin"))
        classic = stack.enter_context(lvm_volume(lab, vg, "ext4", "classic"))
        lvm_config("0.2")
        # Planning saw room for the classic snapshot; then, while the writers hold their
        # applications (after planning, before the lvcreates), another program takes every free
        # extent. The thin snapshot (in the pool) is made first, the classic one finds no room.
        install_script_writer(
            lab,
            "grab",
            classic,
            freeze=f"lvcreate -q -y -Wn -n grab -l 100%FREE {vg}",
            thaw="echo thawed > /tmp/grab-thawed",
        )
        stack.callback(lab.run, f"lvremove -qy {vg}/grab; rm -f /tmp/grab-thawed")
        history = f"ls /etc/lvm/archive/{vg}_*.vg"
        before = set(lab.check(history).stdout.split())

        made = lab.sv("shadows", "create", "--volume", thin, "--volume", classic, *SLOW)

        assert made.returncode == 1, made.context()
        (line,) = made.stderr.strip().splitlines()
        assert f"volume group {vg} has no room left for the lvm snapshot of {classic}" in line, line
        assert "it needs at least 20.0 MiB free" in line and "snapshot_share" in line, line
        # The thin snapshot was made (LVM's metadata history says so) and removed again.
        new = sorted(set(lab.check(history).stdout.split()) - before)
        said = lab.check(f"grep -h '^description' {' '.join(new)}").stdout
        assert "--setactivationskip n" in said and "lvremove" in said, said
        assert snapshot_lvs(lab, vg) == []
        assert ".shadowvault" not in lab.check("cat /proc/mounts").stdout  # no snapshot left mounted
        # Nothing stays frozen: both filesystems take writes (a frozen one would block past the
        # timeout), and the writer was thawed.
        assert lab.run(f"touch {thin}/after {classic}/after", timeout=60).returncode == 0
        assert lab.check("cat /tmp/grab-thawed").stdout == "thawed\n"
        listed = lab.sv("shadows", "list", "--json")
        assert json.loads(listed.stdout) == [], listed.context()
