"""Providers on real loop filesystems: btrfs snapshots, reflink copies, live volumes, and the registry."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from shadowvault.errors import ProviderError, UnsupportedError, UsageError
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME, FreezePolicy, ReadScope
from shadowvault.shadow.providers.names import PROVIDER_NAMES
from shadowvault.shadow.providers.registry import (
    all_providers,
    choose_provider,
    consistency_note,
    get_provider,
    provider_names,
    supported_providers,
)
from shadowvault.shadow.volumes import find_volume
from tests.fixtures import loopfs
from tests.fixtures.loopfs import unmount_tree
from tests.fixtures.tools import require_tools

SET_ID = "20261125T140312-3f9a1c"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _populate(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "dir/b.bin": os.urandom(200_000),
        "dir/deep/c.txt": b"gamma\n" * 1000,
        "empty": b"",
    }
    for name, data in files.items():
        _write(root / name, data)
    return files


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> a digest of content (or 'dir'/'link:target') for everything but .shadowvault."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != SHADOW_DIR_NAME]
        for name in dirnames:
            out[os.path.normpath(os.path.join(rel_dir, name))] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                out[rel] = f"special:{stat.S_IFMT(st.st_mode):o}"
    return out


def _change_live(root: Path) -> None:
    (root / "a.txt").write_bytes(b"changed after the shadow\n")
    with open(root / "dir/b.bin", "r+b") as f:
        f.write(b"\0" * 4096)
    (root / "dir/deep/c.txt").unlink()
    _write(root / "new-after.txt", b"later\n")


# -- btrfs ----------------------------------------------------------------------------------------


def test_btrfs_snapshot_is_point_in_time_and_read_only(btrfs):
    _populate(btrfs.mount)
    before = _tree(btrfs.mount)
    provider = get_provider("btrfs")
    assert provider.atomic and provider.freeze_policy is FreezePolicy.FORBIDS
    shadow = provider.create(find_volume(str(btrfs.mount)), SET_ID, 0)
    assert shadow.atomic and shadow.provider == "btrfs"
    assert shadow.path == str(btrfs.mount / SHADOW_DIR_NAME / f"{SET_ID}-0")
    assert consistency_note(shadow) is None

    _change_live(btrfs.mount)
    assert _tree(Path(shadow.path)) == before
    assert _tree(btrfs.mount) != before

    with pytest.raises(OSError) as err:
        (Path(shadow.path) / "a.txt").write_bytes(b"x")
    assert err.value.errno == errno.EROFS
    assert stat.S_IMODE(os.stat(btrfs.mount / SHADOW_DIR_NAME).st_mode) == 0o700

    provider.delete(shadow)
    assert not os.path.lexists(shadow.path)
    provider.delete(shadow)  # already gone: not an error


def _subvolume(path: Path, *, snapshot_of: Path | None = None) -> None:
    argv = ["btrfs", "subvolume", "create", str(path)]
    if snapshot_of is not None:
        argv = ["btrfs", "subvolume", "snapshot", "-r", str(snapshot_of), str(path)]
    subprocess.run(argv, check=True, capture_output=True)


def test_btrfs_nested_subvolumes_get_images_of_their_own(btrfs):
    """A btrfs snapshot shows nested subvolumes as empty directories: each writable one gets its own
    snapshot at the point in time, a read-only one is read where it is, and delete removes them all."""
    require_tools("btrfs")
    (btrfs.mount / "data").mkdir()
    _subvolume(btrfs.mount / "data/nested")
    _write(btrfs.mount / "data/nested/inside.txt", b"at the point in time\n")
    _subvolume(btrfs.mount / "data/nested/deeper")
    _write(btrfs.mount / "data/nested/deeper/deep.txt", b"two levels down\n")
    _subvolume(btrfs.mount / "frozen", snapshot_of=btrfs.mount / "data/nested/deeper")
    provider = get_provider("btrfs")
    volume = find_volume(str(btrfs.mount))
    first = provider.create(volume, SET_ID, 0)
    second = provider.create(volume, SET_ID, 1)
    try:
        assert first.provider_data["nested_subvolumes"] == ["data/nested", "data/nested/deeper", "frozen"]
        # our own earlier snapshots (in .shadowvault) are not taken for user data
        assert second.provider_data["nested_subvolumes"] == first.provider_data["nested_subvolumes"]
        images = first.provider_data["nested_images"]
        assert images["frozen"] == str(btrfs.mount / "frozen")  # read-only: read in place
        (btrfs.mount / "data/nested/inside.txt").write_bytes(b"changed after\n")
        (btrfs.mount / "data/nested/deeper/deep.txt").unlink()
        assert Path(images["data/nested"], "inside.txt").read_bytes() == b"at the point in time\n"
        assert Path(images["data/nested/deeper"], "deep.txt").read_bytes() == b"two levels down\n"
        assert os.listdir(Path(first.path) / "data/nested") == []  # the volume's own image leaves it out
        found = sorted(Path(image.shadow.path).name for image in provider.found_images(volume))
        assert found == [f"{SET_ID}-{i}{n}" for i in (0, 1) for n in ("", ".1", ".2")]
    finally:
        provider.delete(second)
        provider.delete(first)
    assert os.listdir(btrfs.mount / SHADOW_DIR_NAME) == []
    assert (btrfs.mount / "frozen/deep.txt").exists()  # the user's read-only subvolume is left alone


def test_btrfs_leaves_out_nested_subvolumes_a_mount_covers(btrfs, mounts):
    """What is mounted inside the volume is a volume of its own, so a nested subvolume under a mount
    gets no image with the volume's: one mounted at its own place is not snapshotted twice when the
    set holds both, and one hidden below a tmpfs no longer fails the commit."""
    require_tools("btrfs")
    for sub in ("home", "cache/sub", "kept"):
        (btrfs.mount / sub).parent.mkdir(parents=True, exist_ok=True)
        _subvolume(btrfs.mount / sub)
    _write(btrfs.mount / "home/f", b"in the mounted subvolume\n")
    mounts("-o", "subvol=home", btrfs.device, btrfs.mount / "home")
    mounts("-t", "tmpfs", "tmpfs", btrfs.mount / "cache")
    provider = get_provider("btrfs")
    shadow = provider.create(find_volume(str(btrfs.mount)), SET_ID, 0)
    try:
        assert shadow.provider_data["nested_subvolumes"] == ["kept"]
        assert sorted(os.listdir(btrfs.mount / SHADOW_DIR_NAME)) == [f"{SET_ID}-0", f"{SET_ID}-0.1"]
    finally:
        provider.delete(shadow)
    assert os.listdir(btrfs.mount / SHADOW_DIR_NAME) == []


def test_btrfs_images_only_the_nested_subvolumes_its_requester_reads(btrfs):
    """With a ReadScope the provider snapshots the nested subvolumes at or below the paths read and
    the innermost one holding a path, none left out, none elsewhere; without one, every one."""
    require_tools("btrfs")
    for sub in ("srv/app", "srv/app/data", "srv/app/data/tmp", "docker/a", "docker/b", "home"):
        (btrfs.mount / sub).parent.mkdir(parents=True, exist_ok=True)
        _subvolume(btrfs.mount / sub)
    (btrfs.mount / "home/docs").mkdir()
    provider = get_provider("btrfs")
    volume = find_volume(str(btrfs.mount))
    mount = str(btrfs.mount)
    scope = ReadScope(paths=(f"{mount}/srv", f"{mount}/home/docs"), left_out=(f"{mount}/srv/app/data/tmp",))
    shadow = provider.create(volume, SET_ID, 0, scope)
    whole = provider.create(volume, SET_ID, 1)
    try:
        assert shadow.provider_data["nested_subvolumes"] == ["home", "srv/app", "srv/app/data"]
        assert sorted(shadow.provider_data["nested_images"]) == ["home", "srv/app", "srv/app/data"]
        assert sorted(os.listdir(btrfs.mount / SHADOW_DIR_NAME)) == sorted(
            [f"{SET_ID}-0", f"{SET_ID}-0.1", f"{SET_ID}-0.2", f"{SET_ID}-0.3"]
            + [f"{SET_ID}-1"]
            + [f"{SET_ID}-1.{n}" for n in range(1, 7)]
        )
        assert len(whole.provider_data["nested_images"]) == 6
        inside = provider.create(volume, SET_ID, 2, ReadScope(paths=(f"{mount}/srv/app/data/x",)))
        assert inside.provider_data["nested_subvolumes"] == ["srv/app/data"]  # the one holding the path
        provider.delete(inside)
    finally:
        provider.delete(whole)
        provider.delete(shadow)
    assert os.listdir(btrfs.mount / SHADOW_DIR_NAME) == []


def test_btrfs_snapshots_the_mounted_subvolume(btrfs):
    """A volume whose mount root is a subvolume other than the top level: that subvolume is shadowed."""
    require_tools("btrfs", "mount", "umount")
    subprocess.run(
        ["btrfs", "subvolume", "create", str(btrfs.mount / "home")], check=True, capture_output=True
    )
    _write(btrfs.mount / "home/user.txt", b"in the subvolume\n")
    _write(btrfs.mount / "top.txt", b"in the top level\n")
    mnt = Path(tempfile.mkdtemp(prefix="sv-subvol-"))
    try:
        subprocess.run(
            ["mount", "-o", "subvol=home", btrfs.device, str(mnt)], check=True, capture_output=True
        )
        volume = find_volume(str(mnt))
        assert volume.root == "/home"
        assert "btrfs" in supported_providers(volume)
        provider = get_provider("btrfs")
        shadow = provider.create(volume, SET_ID, 0)
        assert _tree(Path(shadow.path)) == {"user.txt": hashlib.sha256(b"in the subvolume\n").hexdigest()}
        provider.delete(shadow)
        assert not os.path.lexists(shadow.path)
    finally:
        unmount_tree(mnt)
        mnt.rmdir()


# -- reflink --------------------------------------------------------------------------------------


def _rich_tree(root: Path) -> None:
    """Files with every kind of metadata a user would check after a restore."""
    require_tools("setfacl")
    _populate(root)
    os.chown(root / "a.txt", 1234, 5678)
    os.chmod(root / "a.txt", 0o4751)
    os.utime(root / "a.txt", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    os.setxattr(root / "a.txt", "user.color", b"blue")
    os.setxattr(root / "dir/b.bin", "trusted.secret", b"\x00\x01")
    subprocess.run(["setfacl", "-m", "u:1001:rw,g:1002:r", str(root / "dir/b.bin")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1001:rx", str(root / "dir/deep")], check=True)
    os.link(root / "dir/b.bin", root / "hardlink.bin")
    os.symlink("dir/deep/c.txt", root / "link")
    os.lchown(root / "link", 2000, 2001)
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(root / "dir", 0o750)
    os.utime(root / "dir", ns=(1_400_000_000_000_000_001, 1_400_000_000_000_000_002))


def _metadata(root: Path) -> dict[str, tuple]:
    out = {}
    for rel in _tree(root):
        path = root / rel
        st = os.lstat(path)
        link = stat.S_ISLNK(st.st_mode)
        xattrs = {
            name: os.getxattr(path, name, follow_symlinks=False)
            for name in os.listxattr(path, follow_symlinks=False)
            if not name.startswith("trusted.SGI_ACL_")
        }
        mtime = None if stat.S_ISDIR(st.st_mode) and rel != "dir" else st.st_mtime_ns
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, mtime, st.st_rdev, st.st_nlink, xattrs, link)
    return out


def _getfacl(root: Path, rel: str) -> str:
    done = subprocess.run(
        ["getfacl", "-n", "--omit-header", rel], cwd=root, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.mark.parametrize("fstype", ["xfs", "btrfs"])
def test_reflink_copy_preserves_content_and_metadata(request, fstype):
    fs = request.getfixturevalue(fstype)
    _rich_tree(fs.mount)
    content, meta = _tree(fs.mount), _metadata(fs.mount)
    provider = get_provider("reflink")
    assert not provider.atomic and provider.freeze_policy is FreezePolicy.FORBIDS
    shadow = provider.create(find_volume(str(fs.mount)), SET_ID, 0)
    copy = Path(shadow.path)
    assert not shadow.atomic
    assert "not atomic" in consistency_note(shadow)

    assert _tree(copy) == content
    assert _metadata(copy) == meta
    assert _getfacl(copy, "dir/b.bin") == _getfacl(fs.mount, "dir/b.bin")
    assert "user:1001:rw-" in _getfacl(copy, "dir/b.bin")
    assert _getfacl(copy, "dir/deep") == _getfacl(fs.mount, "dir/deep")
    assert os.stat(copy / "a.txt").st_mtime_ns == 1_500_000_000_987_654_321
    assert os.stat(copy / "hardlink.bin").st_ino == os.stat(copy / "dir/b.bin").st_ino
    assert os.stat(copy / "hardlink.bin").st_ino != os.stat(fs.mount / "dir/b.bin").st_ino
    assert stat.S_ISFIFO(os.lstat(copy / "fifo").st_mode)
    assert os.lstat(copy / "null").st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(os.stat(fs.mount / SHADOW_DIR_NAME).st_mode) == 0o700

    _change_live(fs.mount)
    assert _tree(copy) == content  # copy-on-write: later writes to the volume do not reach the copy

    provider.delete(shadow)
    assert not os.path.lexists(copy)
    provider.delete(shadow)


def test_reflink_leaves_out_other_mounts_and_its_own_directory(xfs):
    require_tools("mount", "umount")
    _populate(xfs.mount)
    (xfs.mount / "mnt").mkdir()
    provider = get_provider("reflink")
    first = provider.create(find_volume(str(xfs.mount)), SET_ID, 0)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(xfs.mount / "mnt")], check=True)
    try:
        _write(xfs.mount / "mnt/on-tmpfs.txt", b"other filesystem\n")
        second = provider.create(find_volume(str(xfs.mount)), SET_ID, 1)
        assert not (Path(second.path) / SHADOW_DIR_NAME).exists()
        assert not (Path(second.path) / "mnt").exists()
        assert any("mnt" in note for note in second.notes)
        assert (Path(second.path) / "dir/deep/c.txt").read_bytes() == b"gamma\n" * 1000
        provider.delete(second)
    finally:
        unmount_tree(xfs.mount / "mnt")
        provider.delete(first)


# -- live and the registry ------------------------------------------------------------------------


def test_live_reads_the_volume_itself(ext4):
    _populate(ext4.mount)
    provider = get_provider("live")  # auto picks fanotify on ext4 (test_fanotify_provider.py)
    assert provider.freeze_policy is FreezePolicy.IGNORES
    shadow = provider.create(find_volume(str(ext4.mount)), SET_ID, 0)
    assert shadow.path == str(ext4.mount) and not shadow.atomic
    assert "nothing on it, writer data included" in consistency_note(shadow)
    provider.delete(shadow)
    assert (ext4.mount / "a.txt").read_bytes() == b"alpha\n"
    assert not (ext4.mount / SHADOW_DIR_NAME).exists()


def test_btrfs_and_reflink_refuse_ext4_with_a_clear_reason(ext4):
    volume = find_volume(str(ext4.mount))
    assert supported_providers(volume) == ["fanotify", "live"]
    expected = f"provider btrfs cannot shadow {ext4.mount}: it is ext4, not btrfs"
    with pytest.raises(UnsupportedError, match=expected):
        choose_provider(volume, "btrfs")
    with pytest.raises(UnsupportedError, match=r"provider reflink cannot shadow .*ext4.*no reflinks"):
        choose_provider(volume, "reflink")
    with pytest.raises(UnsupportedError, match="not btrfs"):
        get_provider("btrfs").create(volume, SET_ID, 0)
    assert not (ext4.mount / SHADOW_DIR_NAME).exists()


def test_auto_picks_the_best_provider(btrfs, xfs):
    assert choose_provider(find_volume(str(btrfs.mount))).name == "btrfs"
    assert choose_provider(find_volume(str(xfs.mount))).name == "reflink"
    assert supported_providers(find_volume(str(btrfs.mount))) == ["btrfs", "reflink", "fanotify", "live"]
    assert [p.name for p in all_providers()] == ["btrfs", "lvm", "reflink", "fanotify", "live"]


def test_the_names_the_cli_offers_are_the_registrys():
    """The CLI lists --provider choices without importing the providers (shadow/providers/names.py)."""
    assert tuple(provider_names()) == PROVIDER_NAMES


def test_unknown_provider_names_the_choices():
    with pytest.raises(UsageError, match="auto, btrfs, lvm, reflink"):
        get_provider("zfs")


def test_pseudo_filesystems_are_not_volumes():
    proc = find_volume("/proc")
    assert supported_providers(proc) == []
    with pytest.raises(UnsupportedError, match="pseudo filesystem"):
        choose_provider(proc)


def test_reflink_commit_can_be_cancelled_and_leaves_nothing(xfs):
    for i in range(300):
        _write(xfs.mount / f"d{i % 7}/f{i}", b"x")
    provider = get_provider("reflink")
    provider.cancel()  # as the coordinator does when the commit passes its hard limit
    with pytest.raises(ProviderError, match="cancelled"):
        provider.create(find_volume(str(xfs.mount)), SET_ID, 0)
    assert os.listdir(xfs.mount / SHADOW_DIR_NAME) == []


def test_reflink_sweeps_copies_left_half_made_by_a_dead_process(xfs):
    _populate(xfs.mount)
    provider = get_provider("reflink")
    first = provider.create(find_volume(str(xfs.mount)), SET_ID, 0)
    hidden = xfs.mount / SHADOW_DIR_NAME
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = hidden / f".{SET_ID}-7.partial-{gone.pid}"
    (left / "dir").mkdir(parents=True)
    running = hidden / f".{SET_ID}-8.partial-{os.getpid()}"  # a copy still being made: kept
    running.mkdir()
    second = get_provider("reflink").create(find_volume(str(xfs.mount)), SET_ID, 1)
    assert sorted(os.listdir(hidden)) == sorted([f"{SET_ID}-0", f"{SET_ID}-1", running.name])
    running.rmdir()
    provider.delete(first)
    provider.delete(second)


def test_reflink_refuses_an_xfs_made_without_reflink(monkeypatch):
    monkeypatch.setitem(loopfs.MKFS, "xfs", ["mkfs.xfs", "-q", "-f", "-m", "reflink=0"])
    with loopfs.loop_filesystem("xfs") as fs:
        volume = find_volume(str(fs.mount))
        assert supported_providers(volume) == ["fanotify", "live"]
        with pytest.raises(UnsupportedError, match=r"without reflink \(mkfs.xfs -m reflink=1\)"):
            choose_provider(volume, "reflink")
