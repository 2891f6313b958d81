"""Back up a tree with every kind of POSIX metadata and restore it: each field must come back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shadowvault.archive.patterns import PathFilter
from tests.archive.helpers import archive, assert_same_tree, describe_tree, new_repo, restore
from tests.fixtures.tools import require_tools

OTHER_UID, OTHER_GID = 4321, 8765


def build_metadata_tree(src: Path) -> None:
    """Owners, modes with setuid/sticky, ns mtimes, ACLs (access and default), xattrs, links, specials."""
    require_tools("setfacl", "setfattr", "mknod")
    src.mkdir()
    (src / "plain").write_bytes(b"plain file\n")
    (src / "owned").write_bytes(b"owned by someone else\n")
    os.chown(src / "owned", OTHER_UID, OTHER_GID)
    (src / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "setuid", 0o4755)
    (src / "setgid").write_bytes(b"g")
    os.chown(src / "setgid", 0, OTHER_GID)
    os.chmod(src / "setgid", 0o2710)
    (src / "sticky").mkdir()
    os.chmod(src / "sticky", 0o1777)
    (src / "acl").write_bytes(b"acl")
    subprocess.run(["setfacl", "-m", f"u:{OTHER_UID}:rw,g:{OTHER_GID}:r", src / "acl"], check=True)
    (src / "defacl").mkdir()
    subprocess.run(["setfacl", "-d", "-m", f"u:{OTHER_UID}:rwx", src / "defacl"], check=True)
    (src / "defacl" / "inner").write_bytes(b"inherits an ACL")
    (src / "xattr").write_bytes(b"x")
    subprocess.run(["setfattr", "-n", "user.colour", "-v", "blue", src / "xattr"], check=True)
    subprocess.run(["setfattr", "-n", "trusted.secret", "-v", "0x00ff10", src / "xattr"], check=True)
    (src / "empty-dir").mkdir()
    os.chmod(src / "empty-dir", 0o700)
    (src / "readonly-dir").mkdir()
    (src / "readonly-dir" / "file").write_bytes(b"in a read-only dir")
    os.chmod(src / "readonly-dir", 0o555)
    os.symlink("plain", src / "link")
    os.symlink("/nonexistent/target", src / "dangling")
    os.lchown(src / "dangling", OTHER_UID, OTHER_GID)
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.link(src / "plain", src / "hardlink")
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(6 << 20)
        f.write(b"tail")
    for i, path in enumerate(sorted(src.rglob("*"))):
        os.utime(
            path, ns=(1_600_000_000_123_456_789 + i, 1_500_000_000_987_654_321 + i), follow_symlinks=False
        )
    os.utime(src / "readonly-dir", ns=(1_600_000_000_000_000_001, 1_400_000_000_000_000_003))


def test_every_metadata_field_survives_a_round_trip(any_fs, tmp_path):
    src = any_fs.mount / "src"
    build_metadata_tree(src)
    repo = new_repo(tmp_path / "repo")
    root, stats = archive(repo, src)
    assert stats.errors == []
    target = any_fs.mount / "restored"
    result = restore(repo, root, target, verify=True)
    assert result.errors == []
    restored = target / str(src).lstrip("/")
    assert_same_tree(src, restored)
    tree = describe_tree(os.fsencode(restored))
    assert tree[b"sparse"]["sparse"], "holes were filled in"
    assert tree[b"acl"]["acl"] and f"user:{OTHER_UID}:rw-" in tree[b"acl"]["acl"]
    assert f"default:user:{OTHER_UID}:rwx" in tree[b"defacl"]["acl"]
    assert tree[b"xattr"]["xattrs"]["trusted.secret"] == b"\x00\xff\x10"
    assert tree[b"owned"]["uid"] == OTHER_UID and tree[b"owned"]["gid"] == OTHER_GID
    assert not any(name.startswith(b".svtmp-") for name in os.listdir(os.fsencode(restored)))


def test_numeric_owner_and_names(any_fs, tmp_path):
    """A file owned by a named user restores to that name's id; --numeric-owner keeps the stored id."""
    src = any_fs.mount / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    os.chown(src / "f", 0, 0)
    repo = new_repo(tmp_path / "repo")
    root, _ = archive(repo, src)
    for numeric in (False, True):
        target = any_fs.mount / f"r{int(numeric)}"
        restore(repo, root, target, numeric_owner=numeric)
        st = os.stat(target / str(src).lstrip("/") / "f")
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_subpath_include_exclude(ext4, tmp_path):
    src = ext4.mount / "data"
    (src / "keep" / "deep").mkdir(parents=True)
    (src / "drop").mkdir()
    (src / "keep" / "a.txt").write_bytes(b"a")
    (src / "keep" / "b.tmp").write_bytes(b"b")
    (src / "keep" / "deep" / "c.txt").write_bytes(b"c")
    (src / "drop" / "d.txt").write_bytes(b"d")
    repo = new_repo(tmp_path / "repo")
    root, _ = archive(repo, src, path_filter=PathFilter(excludes=["*.tmp"]))
    target = ext4.mount / "r1"
    restore(repo, root, target, subpath=str(src / "keep"))
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "a.txt",
        "deep",
        "deep/c.txt",
    ]
    target2 = ext4.mount / "r2"
    restore(repo, root, target2, path_filter=PathFilter(includes=[f"{src}/keep/deep"]))
    found = sorted(p.relative_to(target2).as_posix() for p in target2.rglob("*") if p.is_file())
    assert found == [f"{str(src).lstrip('/')}/keep/deep/c.txt"]
    target3 = ext4.mount / "r3"
    restore(repo, root, target3, path_filter=PathFilter(excludes=["deep", "drop"]))
    found = sorted(p.name for p in target3.rglob("*") if p.is_file())
    assert found == ["a.txt"]


def test_single_file_and_whole_root_sources(ext4, tmp_path):
    """A file can be a source on its own; a source recorded as `/` becomes the snapshot root."""
    from shadowvault.archive.listing import list_snapshot
    from shadowvault.archive.walker import Archiver, Source

    src = ext4.mount / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "file").write_bytes(b"content")
    repo = new_repo(tmp_path / "repo")
    root, _ = archive(repo, src / "sub" / "file")
    assert [p for p, _ in list_snapshot(repo, root)][-1] == os.fsencode(src / "sub" / "file")

    whole = Archiver(repo).archive([Source(b"/", os.fsencode(src)), Source(b"/other", b"/nonexistent")])
    repo.flush()
    assert sorted(p for p, _ in list_snapshot(repo, whole)) == [b"/sub", b"/sub/file"]
    target = ext4.mount / "restored"
    restore(repo, whole, target)
    assert (target / "sub" / "file").read_bytes() == b"content"


def test_non_directory_in_the_way_fails_only_that_directory(ext4, tmp_path):
    src = ext4.mount / "src"
    (src / "blocked").mkdir(parents=True)
    (src / "blocked" / "inner").write_text("inner")
    (src / "free").write_text("free")
    repo = new_repo(tmp_path / "repo")
    root, _ = archive(repo, src)
    target = ext4.mount / "restored"
    target.mkdir()
    (target / "blocked").symlink_to("/etc")
    result = restore(repo, root, target, subpath=str(src))
    assert [path for path, _ in result.errors] == [os.fsencode(f"{src}/blocked")]
    assert (target / "free").read_text() == "free"
    assert (target / "blocked").is_symlink() and not os.path.exists("/etc/inner")


def test_target_with_a_default_acl_adds_no_acl(ext4, tmp_path):
    """Files restored into a directory with a default ACL keep exactly their own ACLs (none here)."""
    src = ext4.mount / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "plain").write_text("no acl")
    repo = new_repo(tmp_path / "repo")
    root, _ = archive(repo, src)
    target = ext4.mount / "restored"
    target.mkdir()
    subprocess.run(["setfacl", "-d", "-m", f"u:{OTHER_UID}:rwx", target], check=True)
    restore(repo, root, target, subpath=str(src))
    for path in (target / "dir", target / "dir" / "plain"):
        assert "system.posix_acl_access" not in os.listxattr(path), path
    assert "system.posix_acl_default" not in os.listxattr(target / "dir")


def test_acl_entries_follow_names(ext4):
    """Named ACL entries are stored with their names and restored to the ids those names have here."""
    from shadowvault.archive import metadata

    path = ext4.mount / "f"
    path.write_text("x")
    subprocess.run(["setfacl", "-m", "u:nobody:r,g:nogroup:rw", path], check=True)
    node = metadata.capture(os.fsencode(path), os.lstat(path), b"f")
    nobody, nogroup = metadata.uid_of("nobody"), metadata.gid_of("nogroup")
    assert node.acl_users == {nobody: "nobody"} and node.acl_groups == {nogroup: "nogroup"}

    # as if on another machine "nobody"/"nogroup" had the ids root has here
    node.acl_users, node.acl_groups = {nobody: "root"}, {nogroup: "root"}
    copy = ext4.mount / "copy"
    copy.write_text("x")
    metadata.apply(os.fsencode(copy), node)
    acl = subprocess.run(["getfacl", "-n", "--omit-header", copy], capture_output=True, text=True).stdout
    assert "user:0:r--" in acl and "group:0:rw-" in acl
    metadata.apply(os.fsencode(copy), node, numeric_owner=True)
    acl = subprocess.run(["getfacl", "-n", "--omit-header", copy], capture_output=True, text=True).stdout
    assert f"user:{nobody}:r--" in acl and f"group:{nogroup}:rw-" in acl


def test_an_incremental_backup_sees_every_xattr_change_and_rereads_only_changed_inodes(
    ext4, tmp_path, monkeypatch
):
    """Extended attributes of an inode whose ctime did not move are taken from the parent snapshot
    (any xattr change moves the ctime); a set, changed or removed xattr is in the next snapshot."""
    from shadowvault.archive import metadata

    src = ext4.mount / "src"
    src.mkdir()
    for name, value in (("same", b"kept"), ("changed", b"before"), ("removed", b"gone soon")):
        (src / name).write_text(name)
        os.setxattr(src / name, "user.note", value)
    (src / "added").write_text("added")
    repo = new_repo(ext4.mount / "repo")
    first, _ = archive(repo, src)

    os.setxattr(src / "changed", "user.note", b"after")
    os.removexattr(src / "removed", "user.note")
    os.setxattr(src / "added", "user.note", b"new")
    read: list[bytes] = []
    real_read = metadata.read_xattrs

    def counting(path: bytes, *, follow: bool = False) -> dict[str, bytes]:
        read.append(os.path.basename(path))
        return real_read(path, follow=follow)

    monkeypatch.setattr(metadata, "read_xattrs", counting)
    second, _ = archive(repo, src, parent_tree=first)
    inside = sorted(n for n in read if n in (b"src", b"same", b"changed", b"removed", b"added"))
    assert inside == [b"added", b"changed", b"removed"], "only the inodes whose ctime moved"

    restore(repo, second, tmp_path / "out")
    out = tmp_path / "out" / src.relative_to("/")
    assert os.getxattr(out / "same", "user.note") == b"kept"
    assert os.getxattr(out / "changed", "user.note") == b"after"
    assert os.getxattr(out / "added", "user.note") == b"new"
    assert "user.note" not in os.listxattr(out / "removed")
