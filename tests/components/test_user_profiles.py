"""New-laptop restore of user profiles between real trees: accounts, owners, key modes, ACLs, xattrs."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from shadowvault.components.base import CollectOptions, DirectoryView, RestoreOptions
from shadowvault.components.user_profiles import UserProfiles
from shadowvault.errors import NotFoundError
from tests.components.roots import make_root, passwd_entry
from tests.fixtures.tools import require_tools


def _profile_source(tmp_path: Path) -> Path:
    root = make_root(
        tmp_path / "laptop",
        users=[
            ("alice", 1000, 1000, "Alice", "/home/alice", "/bin/bash"),
            ("bob", 1001, 1001, "Bob", "/home/bob", "/bin/bash"),
        ],
        groups=[("alice", 1000, ""), ("bob", 1001, ""), ("devs", 1500, "alice")],
    )
    home = root / "home" / "alice"
    for sub, mode in (
        (".ssh", 0o700),
        (".gnupg", 0o700),
        (".pki/nssdb", 0o700),
        (".config/app", 0o755),
        (".local/share/keyrings", 0o700),
    ):
        (home / sub).mkdir(parents=True)
        os.chmod(home / sub, mode)
    files = {
        ".bashrc": (b"alias ll='ls -l'\n", 0o644),
        ".ssh/id_ed25519": (b"PRIVATE KEY\n", 0o600),
        ".ssh/id_ed25519.pub": (b"ssh-ed25519 AAAA alice\n", 0o644),
        ".ssh/authorized_keys": (b"ssh-ed25519 BBBB\n", 0o600),
        ".gnupg/pubring.kbx": (b"kbx", 0o600),
        ".pki/nssdb/cert9.db": (b"sqlite", 0o600),
        ".local/share/keyrings/login.keyring": (b"ring", 0o600),
        ".config/app/settings": (b"x=1\n", 0o644),
    }
    for rel, (data, mode) in files.items():
        (home / rel).write_bytes(data)
        os.chmod(home / rel, mode)
    for path in [home, *home.rglob("*")]:
        os.lchown(path, 1000, 1000)
    os.chmod(home, 0o750)
    # an ACL naming bob and an xattr on the private key
    subprocess.run(["setfacl", "-m", "u:1001:r", str(home / ".ssh/id_ed25519")], check=True)
    os.setxattr(home / ".ssh/id_ed25519", "user.origin", b"laptop-1")
    (root / "home" / "bob").mkdir()
    os.chown(root / "home" / "bob", 1001, 1001)
    (root / "home" / "bob" / ".profile").write_text("bob\n")
    crontabs = root / "var/spool/cron/crontabs"
    crontabs.mkdir(parents=True)
    (crontabs / "alice").write_text("0 * * * * echo hi\n")
    os.chown(crontabs / "alice", 1000, 101)
    os.chmod(crontabs / "alice", 0o600)
    return root


def _collect(source: Path, staging: Path, **kw) -> DirectoryView:
    collection = UserProfiles().collect(source, CollectOptions(**kw))
    collection.write_documents(staging)
    return DirectoryView(source, documents_root=staging)


def test_new_laptop_restore_with_uid_collision_acls_and_xattrs(tmp_path: Path) -> None:
    require_tools("setfacl", "getfacl")
    source = _profile_source(tmp_path)
    collection = UserProfiles().collect(source, CollectOptions())
    assert collection.paths == ["/home/alice", "/var/spool/cron/crontabs/alice", "/home/bob"]
    view = _collect(source, tmp_path / "staging")
    # the new laptop: uid 1000 belongs to someone else already
    target = make_root(
        tmp_path / "new",
        users=[("carol", 1000, 1000, "", "/home/carol", "/bin/sh")],
        groups=[("carol", 1000, "")],
    )
    options = RestoreOptions(target_root=target, users=["alice"])
    component = UserProfiles()
    plan = component.plan(view, options)
    assert not (target / "home" / "alice").exists()  # planning changes nothing
    assert "/home/alice/.ssh/id_ed25519" in plan.targets("create")
    assert "alice" in plan.targets("create", "user")
    assert any("alice" in w and "taken" in w for w in plan.warnings)
    component.apply(plan, view, options)

    alice = passwd_entry(target, "alice")
    assert alice is not None and alice[2] != "1000"
    new_uid = int(alice[2])
    key = target / "home/alice/.ssh/id_ed25519"
    assert key.read_bytes() == b"PRIVATE KEY\n"
    st = key.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (new_uid, 0o640)  # 0600 + ACL mask r
    assert stat.S_IMODE((target / "home/alice/.ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "home/alice/.gnupg/pubring.kbx").stat().st_mode) == 0o600
    assert (target / "home/alice/.pki/nssdb/cert9.db").read_bytes() == b"sqlite"
    assert stat.S_IMODE((target / "home/alice").stat().st_mode) == 0o750
    assert all(p.lstat().st_uid == new_uid for p in (target / "home/alice").rglob("*"))
    assert os.getxattr(key, "user.origin") == b"laptop-1"
    acl = subprocess.run(["getfacl", "-n", "-p", str(key)], capture_output=True, text=True, check=True).stdout
    # bob was not restored, so his ACL entry keeps its number; alice's own entry follows her new uid
    assert "user:1001:r--" in acl
    tab = target / "var/spool/cron/crontabs/alice"
    assert tab.read_text() == "0 * * * * echo hi\n"
    assert (tab.stat().st_uid, tab.stat().st_gid, stat.S_IMODE(tab.stat().st_mode)) == (new_uid, 101, 0o600)
    spool = target / "var/spool/cron/crontabs"
    assert (stat.S_IMODE(spool.stat().st_mode), spool.stat().st_gid) == (0o1730, 101)
    assert not (target / "home/bob").exists()  # only --users alice


def test_acl_entries_follow_remapped_accounts(tmp_path: Path) -> None:
    source = _profile_source(tmp_path)
    view = _collect(source, tmp_path / "staging")
    target = make_root(
        tmp_path / "new",
        users=[("carol", 1001, 1001, "", "/home/carol", "/bin/sh")],
        groups=[("carol", 1001, "")],
    )
    options = RestoreOptions(target_root=target)
    component = UserProfiles()
    component.apply(component.plan(view, options), view, options)
    bob = passwd_entry(target, "bob")
    assert bob is not None and bob[2] != "1001"
    acl = subprocess.run(
        ["getfacl", "-n", "-p", str(target / "home/alice/.ssh/id_ed25519")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"user:{bob[2]}:r--" in acl and "user:1001:" not in acl  # carol must not read alice's key


def test_existing_profile_is_left_alone_unless_overwrite(tmp_path: Path) -> None:
    source = _profile_source(tmp_path)
    view = _collect(source, tmp_path / "staging")
    target = make_root(
        tmp_path / "new",
        users=[("alice", 1000, 1000, "", "/home/alice", "/bin/bash")],
        groups=[("alice", 1000, "")],
    )
    (target / "home/alice").mkdir(parents=True)
    (target / "home/alice/.bashrc").write_text("mine\n")
    (target / "home/alice/notes").write_text("keep\n")
    component = UserProfiles()
    options = RestoreOptions(target_root=target, users=["alice"])
    plan = component.plan(view, options)
    assert "/home/alice" in plan.targets("leave", "profile")
    assert not plan.of("create", "file")
    component.apply(plan, view, options)
    assert (target / "home/alice/.bashrc").read_text() == "mine\n"
    assert not (target / "home/alice/.ssh").exists()

    options = RestoreOptions(target_root=target, users=["alice"], overwrite=True)
    plan = component.plan(view, options)
    assert "/home/alice/.bashrc" in plan.targets("replace")
    component.apply(plan, view, options)
    assert (target / "home/alice/.bashrc").read_text() == "alias ll='ls -l'\n"
    assert (target / "home/alice/notes").read_text() == "keep\n"  # files only in the target stay
    assert (target / "home/alice/.ssh/id_ed25519").read_bytes() == b"PRIVATE KEY\n"


def test_unknown_user_names_what_the_snapshot_has(tmp_path: Path) -> None:
    source = _profile_source(tmp_path)
    view = _collect(source, tmp_path / "staging")
    target = make_root(tmp_path / "new")
    with pytest.raises(NotFoundError, match=r"no profile for mallory \(it has: alice, bob\)"):
        UserProfiles().plan(view, RestoreOptions(target_root=target, users=["mallory"]))
    with pytest.raises(NotFoundError, match="no such account"):
        UserProfiles().collect(source, CollectOptions(users=["mallory"]))


def test_include_picks_items_into_an_existing_profile(tmp_path: Path) -> None:
    source = _profile_source(tmp_path)
    view = _collect(source, tmp_path / "staging")
    target = make_root(
        tmp_path / "new",
        users=[("alice", 1000, 1000, "", "/home/alice", "/bin/bash")],
        groups=[("alice", 1000, "")],
    )
    (target / "home/alice").mkdir(parents=True)
    (target / "home/alice/.bashrc").write_text("mine\n")
    options = RestoreOptions(target_root=target, users=["alice"], includes=["/home/alice/.ssh"])
    component = UserProfiles()
    plan = component.plan(view, options)
    assert "/home/alice/.ssh/id_ed25519" in plan.targets("create")
    assert "/home/alice/.bashrc" not in plan.targets("create") | plan.targets("replace")
    component.apply(plan, view, options)
    assert (target / "home/alice/.ssh/id_ed25519").read_bytes() == b"PRIVATE KEY\n"
    assert (target / "home/alice/.bashrc").read_text() == "mine\n"
    assert not (target / "home/alice/.gnupg").exists()
