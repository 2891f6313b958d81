"""Account records and account creation in a target root (real files, no NSS)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from shadowvault.components.accounts import AccountDb, apply_accounts, plan_accounts
from tests.components.roots import group_entry, make_root, passwd_entry


def _source(tmp_path: Path) -> Path:
    return make_root(
        tmp_path / "src",
        users=[
            ("alice", 1000, 1000, "Alice A,,,", "/home/alice", "/bin/bash"),
            ("bob", 1001, 1001, "Bob", "/home/bob", "/bin/zsh"),
            ("svc", 1002, 1002, "", "/srv/svc", "/usr/sbin/nologin"),
        ],
        groups=[("alice", 1000, ""), ("bob", 1001, ""), ("svc", 1002, ""), ("devs", 1500, "alice,bob")],
    )


def test_records_hold_what_recreates_an_account(tmp_path: Path) -> None:
    db = AccountDb(_source(tmp_path))
    assert [u.name for u in db.human_users()] == ["alice", "bob"]  # svc has no login shell
    doc = db.document(["alice"])
    alice = doc.users[0]
    assert (alice.uid, alice.gid, alice.group, alice.groups) == (1000, 1000, "alice", ["devs"])
    assert (alice.gecos, alice.home, alice.shell) == ("Alice A,,,", "/home/alice", "/bin/bash")
    assert alice.shadow is not None and alice.shadow.password == "$y$hash-alice"
    assert sorted(g.name for g in doc.groups) == ["alice", "devs"]


def test_uid_collision_gets_a_new_uid_and_the_files_stay_valid(tmp_path: Path) -> None:
    source = AccountDb(_source(tmp_path)).document(["alice", "bob"])
    target_root = make_root(
        tmp_path / "dst",
        users=[("carol", 1000, 1000, "", "/home/carol", "/bin/sh")],
        groups=[("carol", 1000, ""), ("devs", 2000, "carol")],
    )
    before = (target_root / "etc" / "passwd").read_text()
    changes, preview = plan_accounts(source, AccountDb(target_root), ["alice", "bob"])
    assert (target_root / "etc" / "passwd").read_text() == before  # planning writes nothing
    assert ("user", "alice", "create") in {(c.kind, c.name, c.action) for c in changes}

    _, idmap = apply_accounts(source, AccountDb(target_root), ["alice", "bob"])
    assert idmap.uids == preview.uids
    alice = passwd_entry(target_root, "alice")
    bob = passwd_entry(target_root, "bob")
    assert alice is not None and bob is not None
    assert alice[2] not in ("1000",) and int(alice[2]) >= 1000  # 1000 is carol's
    assert bob[2] == "1001"  # free in the target: kept
    assert idmap.uids[1000] == int(alice[2])
    devs = group_entry(target_root, "devs")
    assert devs is not None and devs[2] == "2000" and sorted(devs[3].split(",")) == ["alice", "bob", "carol"]
    assert idmap.gids[1500] == 2000
    alice_group = group_entry(target_root, "alice")
    assert alice_group is not None and alice[3] == alice_group[2] != "1000"
    shadow = (target_root / "etc" / "shadow").read_text()
    assert "alice:$y$hash-alice:19000:0:99999:7:::" in shadow
    assert stat.S_IMODE(os.stat(target_root / "etc" / "shadow").st_mode) == 0o640
    assert (target_root / "etc" / "passwd-").read_text() == before  # backup like the shadow tools
    # the shadow suite's own checker accepts the result
    done = subprocess.run(["pwck", "-r", "-q", "-R", str(target_root)], capture_output=True, text=True)
    assert "invalid" not in done.stdout + done.stderr, done.stdout + done.stderr
    done = subprocess.run(["grpck", "-r", "-R", str(target_root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_existing_account_is_left_alone(tmp_path: Path) -> None:
    source = AccountDb(_source(tmp_path)).document(["alice"])
    target_root = make_root(
        tmp_path / "dst",
        users=[("alice", 1234, 1234, "Other", "/home/al", "/bin/sh")],
        groups=[("alice", 1234, "")],
    )
    changes, idmap = apply_accounts(source, AccountDb(target_root), ["alice"])
    expected = ["alice", "x", "1234", "1234", "Other", "/home/al", "/bin/sh"]
    assert passwd_entry(target_root, "alice") == expected
    assert idmap.uids[1000] == 1234 and idmap.gids[1000] == 1234
    assert ("user", "alice", "leave") in {(c.kind, c.name, c.action) for c in changes}


def test_records_without_root_have_no_shadow_entries() -> None:
    """A backup run by an ordinary user cannot read /etc/shadow: the records say so, nothing fails."""
    import json
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sv-accounts-"))
    try:
        os.chmod(base, 0o755)
        root = make_root(
            base / "root",
            users=[("alice", 1000, 1000, "", "/home/alice", "/bin/bash")],
            groups=[("alice", 1000, "")],
        )
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child drops to nobody and reads the records
            code = 1
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                doc = AccountDb(root).document(["alice"])
                os.write(
                    write_end,
                    json.dumps(
                        {"shadow": doc.shadow_included, "entry": doc.users[0].shadow is not None}
                    ).encode(),
                )
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert json.loads(answer) == {"shadow": False, "entry": False}
    finally:
        shutil.rmtree(base, ignore_errors=True)
