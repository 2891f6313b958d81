"""`shadowvault mount`: every snapshot browsable as a read-only filesystem, read as a user would."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shadowvault.archive.listing import walk_tree
from shadowvault.archive.tree_paths import find_node
from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD, describe_tree, new_repo, restore
from tests.archive.test_metadata_roundtrip import build_metadata_tree
from tests.fixtures.tools import require_tools
from tests.mount.helpers import (
    in_view,
    is_mounted,
    mount_command,
    mounted_view,
    one_file_repository,
    save_snapshot,
    unmount,
)

NAME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ_([0-9a-f]{8,})$")
SPECIALS = ("fifo", "null")  # diff reports a fifo or a device as different from any other; compared below


def comparable(tree: dict[bytes, dict]) -> dict[bytes, dict]:
    """What a user compares between the view and a restore: everything but whether holes are holes
    (the view reports every byte as allocated)."""
    return {path: {k: v for k, v in info.items() if k != "sparse"} for path, info in tree.items()}


def test_the_view_is_a_restore_of_the_same_snapshot(ext4, tmp_path: Path):
    src = ext4.mount / "src"
    build_metadata_tree(src)
    odd = os.path.join(os.fsencode(src), b"caf\xe9 \\ name")  # not UTF-8, with a space and a backslash
    with open(odd, "wb") as f:
        f.write(b"a name that is not UTF-8")
    (src / "deep" / "er" / "est").mkdir(parents=True)
    (src / "deep" / "er" / "est" / "multi").write_bytes(os.urandom(5 << 20))  # several blobs
    repo = new_repo(tmp_path / "repo")
    with repo:
        snapshot_id = save_snapshot(repo, src, host="web1", tags=("nightly",))
        root = repo.load_snapshot(snapshot_id).tree
        assert restore(repo, root, ext4.mount / "restored").errors == []
    restored = in_view(ext4.mount / "restored", src)

    with mounted_view(tmp_path / "repo", tmp_path / "mnt") as view:
        names = os.listdir(view.mountpoint / "snapshots")
        assert sorted(names) == sorted(["latest", *[n for n in names if n != "latest"]])
        (name,) = [n for n in names if n != "latest"]
        match = NAME.match(name)
        assert match and snapshot_id.startswith(match.group(1)), name
        assert os.readlink(view.mountpoint / "snapshots" / "latest") == name
        assert sorted(os.listdir(view.mountpoint)) == ["hosts", "ids", "snapshots", "tags"]
        assert sorted(os.listdir(view.mountpoint / "hosts" / "web1")) == sorted([name, "latest"])
        assert sorted(os.listdir(view.mountpoint / "tags" / "nightly")) == sorted([name, "latest"])
        assert os.listdir(view.mountpoint / "ids") == [match.group(1)]

        shown = in_view(view.snapshot_root(), src)
        diff = subprocess.run(
            ["diff", "-r", "--no-dereference", *(f"--exclude={n}" for n in SPECIALS), shown, restored],
            capture_output=True,
            text=True,
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr
        in_restore = comparable(describe_tree(os.fsencode(restored)))
        assert comparable(describe_tree(os.fsencode(shown))) == in_restore
        for way in (
            view.mountpoint / "hosts" / "web1" / "latest",
            view.mountpoint / "tags" / "nightly" / name,
            view.mountpoint / "ids" / match.group(1),
        ):
            assert (in_view(way, src) / "plain").read_bytes() == b"plain file\n"
        plain = os.stat(shown / "plain")
        assert os.stat(shown / "hardlink").st_ino == plain.st_ino and plain.st_nlink == 2
        assert subprocess.run(["getfacl", "-n", "-p", shown / "acl"], capture_output=True, text=True).stdout
        assert (
            "user:4321:rw-"
            in subprocess.run(
                ["getfacl", "-n", "-p", shown / "acl"], capture_output=True, text=True, check=True
            ).stdout
        )

        for attempt in (
            lambda: open(shown / "plain", "r+b").close(),
            lambda: (shown / "new").write_bytes(b"x"),
            lambda: (shown / "newdir").mkdir(),
            lambda: os.unlink(shown / "plain"),
            lambda: os.rename(shown / "plain", shown / "moved"),
            lambda: os.chmod(shown / "plain", 0o777),
            lambda: os.setxattr(shown / "xattr", "user.colour", b"red"),
        ):
            with pytest.raises(OSError) as failed:
                attempt()
            assert failed.value.errno == errno.EROFS
    assert view.process.returncode == 0, view.stderr
    assert "unmounted" in view.stderr


def _write_islands(path: Path, size: int, rng: random.Random) -> None:
    """A sparse file of `size` bytes with islands of random data at random places (quick to make and
    to back up, and every offset has a known byte)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(48):
            f.seek(rng.randrange(0, size - (1 << 20)))
            f.write(rng.randbytes(256 << 10))


def test_a_1gib_file_read_at_random_offsets(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(1701)
    _write_islands(src / "big", 1 << 30, rng)
    with new_repo(tmp_path / "repo") as repo:
        save_snapshot(repo, src)
    with mounted_view(tmp_path / "repo", tmp_path / "mnt") as view:
        shown = in_view(view.snapshot_root(), src) / "big"
        assert shown.stat().st_size == 1 << 30
        with open(src / "big", "rb") as original, open(shown, "rb") as mounted:
            for _ in range(300):
                offset = rng.randrange(0, 1 << 30)
                length = rng.choice([1, 4096, 100_000, 3 << 20])
                assert os.pread(mounted.fileno(), length, offset) == os.pread(
                    original.fileno(), length, offset
                ), f"{length} bytes at {offset}"
            tail = os.pread(mounted.fileno(), 4096, (1 << 30) - 10)
            assert tail == os.pread(original.fileno(), 4096, (1 << 30) - 10) and len(tail) == 10


def test_twenty_readers_at_once(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom((1 << 20) + 4099 * i))
    (src / "shared").write_bytes(os.urandom(12 << 20))
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    with new_repo(tmp_path / "repo") as repo:
        save_snapshot(repo, src)
    with mounted_view(tmp_path / "repo", tmp_path / "mnt") as view:
        shown = in_view(view.snapshot_root(), src)
        results: dict[int, dict[str, str]] = {}
        errors: list[BaseException] = []

        def reader(n: int) -> None:
            try:  # half the readers share one file, the others read all the small ones in their own order
                names = ["shared"] if n % 2 else sorted(expected, key=lambda name: hash((n, name)))
                results[n] = {name: hashlib.sha256((shown / name).read_bytes()).hexdigest() for name in names}
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(results) == 20
        for got in results.values():
            assert got == {name: expected[name] for name in got}


def test_the_view_survives_a_prune_that_removes_other_snapshots(tmp_path: Path, cli):
    """A snapshot of everything, then one of a part (its data deduplicated into the first one's
    pack); forgetting the first and pruning repacks the part's blobs into a new pack and deletes the
    old one under the running view, which keeps reading."""
    everything = tmp_path / "data"
    old, kept = everything / "old", everything / "kept"
    old.mkdir(parents=True)
    kept.mkdir()
    for i in range(6):
        (old / f"o{i}").write_bytes(os.urandom(1 << 20))
        (kept / f"k{i}").write_bytes(os.urandom((1 << 20) + i))
    with new_repo(tmp_path / "repo") as repo:
        old_id = save_snapshot(repo, everything, when=time.time() - 60)
        kept_id = save_snapshot(repo, kept)
        kept_root = repo.load_snapshot(kept_id).tree
        packs_before = content_packs(repo, kept_root)
    env = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_NO_DAEMON": "1"}
    with mounted_view(tmp_path / "repo", tmp_path / "mnt") as view:
        assert len(os.listdir(view.mountpoint / "snapshots")) == 3
        shown = in_view(view.snapshot_root(), kept)
        with open(shown / "k3", "rb") as held:  # open before the prune, read after it
            forget = cli("forget", "--repo", tmp_path / "repo", old_id, "--prune", env=env)
            assert forget.returncode == 0, forget.stderr
            again = cli("prune", "--repo", tmp_path / "repo", env=env)  # deletes what the first left pending
            assert again.returncode == 0, again.stderr
            with Repository.open(tmp_path / "repo", PASSWORD) as repo:
                assert not content_packs(repo, kept_root) & packs_before, "the prune moved the kept data"
            assert not [p for p in (tmp_path / "repo" / "data").rglob("*") if p.name in packs_before]
            names = os.listdir(view.mountpoint / "snapshots")
            assert len(names) == 2 and any(n.endswith(kept_id[:8]) for n in names), names
            assert not os.path.exists(view.mountpoint / "ids" / old_id[:8])
            assert held.read() == (kept / "k3").read_bytes()
            for i in range(6):
                assert (shown / f"k{i}").read_bytes() == (kept / f"k{i}").read_bytes()
        with new_repo_open(tmp_path / "repo") as repo:  # a backup made while mounted appears
            new_id = save_snapshot(repo, old)
        assert any(n.endswith(new_id[:8]) for n in os.listdir(view.mountpoint / "snapshots"))
        assert (in_view(view.snapshot_root(), old) / "o1").read_bytes() == (old / "o1").read_bytes()


def content_packs(repo: Repository, root: bytes) -> set[str]:
    """The packs that hold the content of the snapshot with this root tree."""
    packs = set()
    for _, node in walk_tree(repo, root, b"/"):
        for blob in node.content:
            location = repo.lookup(blob)
            assert location is not None
            packs.add(location.pack)
    return packs


def new_repo_open(path: Path) -> Repository:
    return Repository.open(path, PASSWORD, write=True)


@pytest.mark.parametrize("how", ["fusermount", "SIGINT", "SIGTERM"])
def test_stopping_unmounts_cleanly(tmp_path: Path, how: str):
    src = one_file_repository(tmp_path)
    mountpoint = tmp_path / "mnt"
    with mounted_view(tmp_path / "repo", mountpoint) as view:
        assert (in_view(view.snapshot_root(), src) / "f").read_bytes() == b"data"
        if how == "fusermount":
            unmount(mountpoint)
        else:
            view.process.send_signal(getattr(signal, how))
        assert view.process.wait(timeout=60) == 0, view.stderr
        assert not is_mounted(mountpoint)
    assert view.stderr.splitlines() == [
        f"snapshots of {tmp_path / 'repo'} at {mountpoint}; stop with Ctrl-C or `fusermount -u {mountpoint}`",
        f"unmounted {mountpoint}",
    ]


def test_a_relative_repository_and_mount_point_and_a_filter(tmp_path: Path):
    """libfuse makes / the working directory once it runs; relative paths keep their meaning."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    with new_repo(tmp_path / "repo") as repo:
        shown = save_snapshot(repo, src)
        save_snapshot(repo, src, host="elsewhere")
    # a mount point with a space and a line break: the notes stay one line each, the advice a
    # command a shell takes as it is shown (it split into two lines, and `fusermount -u my mnt`)
    with mounted_view(Path("repo"), Path("my mnt\n2"), "--host", "web1", cwd=tmp_path) as view:
        assert (in_view(view.snapshot_root(), src) / "f").read_bytes() == b"data"
        assert os.listdir(view.mountpoint / "ids") == [shown[:8]], "--host web1 shows web1's snapshot only"
        assert view.stderr.splitlines() == [
            "snapshots of repo at my mnt\\n2; stop with Ctrl-C or `fusermount -u 'my mnt\\n2'`"
        ]
    assert view.stderr.splitlines()[-1] == "unmounted my mnt\\n2"


def test_bad_mount_point_and_wrong_password_are_one_line(tmp_path: Path, cli):
    require_tools("fusermount")
    with new_repo(tmp_path / "repo"):
        pass
    env = {"SHADOWVAULT_PASSWORD": PASSWORD}
    missing = cli(*mount_command(tmp_path / "repo", tmp_path / "nowhere")[3:], env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"shadowvault: error: {tmp_path / 'nowhere'}: the mount point must be an existing directory"
    ]
    for over in (tmp_path / "repo", tmp_path):  # the view would hide the repository from itself
        hiding = cli(*mount_command(tmp_path / "repo", over)[3:], env=env)
        assert hiding.returncode == 2
        assert hiding.stderr.strip().splitlines() == [
            f"shadowvault: error: {over}: a view mounted there would hide the repository it shows"
            f" ({tmp_path / 'repo'}): choose another mount point"
        ]
    (tmp_path / "mnt").mkdir()
    wrong = cli(*mount_command(tmp_path / "repo", tmp_path / "mnt")[3:], env={"SHADOWVAULT_PASSWORD": "nope"})
    assert wrong.returncode != 0 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert not is_mounted(tmp_path / "mnt")


def test_other_users_read_what_the_stored_modes_allow(tmp_path: Path):
    """With --allow-other, the kernel checks each access against the stored owner, mode and POSIX
    ACL (judged by the modes alone, a file whose ACL shuts a user out was readable to that user)."""
    require_tools("setpriv", "setfacl")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    reachable = Path(tempfile.mkdtemp(prefix="sv-mount-"))  # every user can reach it, and its copy
    try:
        os.chmod(reachable, 0o755)
        src = reachable / "src"
        src.mkdir()
        (src / "public").write_bytes(b"for everyone\n")
        (src / "secret").write_bytes(b"root only\n")
        os.chmod(src / "secret", 0o600)
        (src / "shut-out").write_bytes(b"not for nobody\n")  # 0644, but nobody's ACL entry is ---
        (src / "let-in").write_bytes(b"nobody too\n")  # 0640, but nobody's ACL entry is r--
        os.chmod(src / "let-in", 0o640)
        subprocess.run(["setfacl", "-m", "u:65534:---", src / "shut-out"], check=True)
        subprocess.run(["setfacl", "-m", "u:65534:r", src / "let-in"], check=True)
        with new_repo(tmp_path / "repo") as repo:
            save_snapshot(repo, src)
        for allow_other in (False, True):
            args = ("--allow-other",) if allow_other else ()
            with mounted_view(tmp_path / "repo", reachable / "mnt", *args) as view:
                shown = in_view(view.snapshot_root(), src)
                public = subprocess.run([*as_nobody, "cat", shown / "public"], capture_output=True, text=True)
                secret = subprocess.run([*as_nobody, "cat", shown / "secret"], capture_output=True, text=True)
                if allow_other:
                    assert public.returncode == 0 and public.stdout == "for everyone\n", public.stderr
                    assert secret.returncode != 0 and "Permission denied" in secret.stderr
                    shut_out = subprocess.run(
                        [*as_nobody, "cat", shown / "shut-out"], capture_output=True, text=True
                    )
                    assert shut_out.returncode != 0 and "Permission denied" in shut_out.stderr
                    let_in = subprocess.run(
                        [*as_nobody, "cat", shown / "let-in"], capture_output=True, text=True
                    )
                    assert let_in.stdout == "nobody too\n", let_in.stderr
                else:  # a FUSE mount is its owner's alone unless allowed
                    assert public.returncode != 0 and "Permission denied" in public.stderr
                assert (shown / "secret").read_bytes() == b"root only\n"
    finally:
        shutil.rmtree(reachable, ignore_errors=True)


def test_a_damaged_blob_fails_only_the_reads_that_need_it(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "damaged").write_bytes(os.urandom(2 << 20))
    (src / "intact").write_bytes(os.urandom(2 << 20))
    with new_repo(tmp_path / "repo") as repo:
        snapshot_id = save_snapshot(repo, src)
        node = find_node(repo, repo.load_snapshot(snapshot_id).tree, str(src / "damaged"))
        assert node is not None
        location = repo.lookup(node.content[0])
        assert location is not None
    (pack,) = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.name == location.pack]
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.seek(location.offset + 40)
        f.write(b"\xff" * 64)
    with mounted_view(tmp_path / "repo", tmp_path / "mnt") as view:
        shown = in_view(view.snapshot_root(), src)
        with pytest.raises(OSError) as failed:
            (shown / "damaged").read_bytes()
        assert failed.value.errno == errno.EIO
        assert (shown / "intact").read_bytes() == (src / "intact").read_bytes()
        assert sorted(os.listdir(shown)) == ["damaged", "intact"]
    assert view.process.returncode == 0
    assert "failed authentication" in view.stderr
