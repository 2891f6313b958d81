"""Helpers for archive tests: a real repository, and a field-by-field comparison of two trees."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shadowvault.archive.restore import Restorer
from shadowvault.archive.walker import Archiver, Source, WalkStats
from shadowvault.repo.repository import Repository

PASSWORD = "correct horse"
FAST_KDF = {"n": 1 << 10, "r": 8, "p": 1}
XFS_ACL_DUPLICATES = {"trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT"}


def all_end(threads: list[threading.Thread], timeout: float) -> bool:
    """Wait for the (started) threads, each at most `timeout`: whether every one ended."""
    for thread in threads:
        thread.join(timeout=timeout)
    return not any(thread.is_alive() for thread in threads)


def in_threads(target: Callable[[int], None], count: int, timeout: float = 120) -> bool:
    """Run `target(n)` in `count` threads at once: whether every one ended within `timeout`."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    return all_end(threads, timeout)


def big_and_many(src: Path, big_mib: int, many: int, small: int) -> None:
    """`src/big/f` of `big_mib` random MiB and `src/many/` of `many` random files of `small` bytes:
    nothing deduplicates, so a restore of either takes its time (what a cancel needs)."""
    (src / "big").mkdir(parents=True)
    (src / "many").mkdir()
    with open(src / "big" / "f", "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    for i in range(many):
        (src / "many" / f"f{i:04}").write_bytes(os.urandom(small))


def new_repo(path: Path) -> Repository:
    return Repository.init(path, PASSWORD, kdf_params=FAST_KDF)


def archive(repo: Repository, src: Path, parent_tree: bytes | None = None, **kw) -> tuple[bytes, WalkStats]:
    """Archive `src` under its absolute path; returns (root tree id, stats)."""
    stats = WalkStats()
    raw = os.fsencode(src)
    root = Archiver(repo, stats=stats, **kw).archive([Source(raw, raw)], parent_tree)
    repo.flush()
    return root, stats


def restore(repo: Repository, root: bytes, target: Path, subpath: str = "/", **kw):
    return Restorer(repo, target, **kw).restore(root, subpath)


def xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n not in XFS_ACL_DUPLICATES}


def getfacl(path: bytes) -> str:
    out = subprocess.run(
        ["getfacl", "-p", "-n", "--omit-header", os.fsdecode(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def describe_tree(root: bytes) -> dict[bytes, dict]:
    """Everything a user checks about a tree, per relative path (hard links by group, not by inode)."""
    found: dict[bytes, dict] = {}
    link_groups: dict[tuple[int, int], bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            info = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
                "xattrs": xattrs(path),
            }
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    info["content"] = f.read()
                info["sparse"] = st.st_blocks * 512 < st.st_size
                if st.st_nlink > 1:
                    info["link_group"] = link_groups.setdefault((st.st_dev, st.st_ino), rel)
                info["acl"] = getfacl(path) if info["xattrs"] else ""
            elif stat.S_ISLNK(st.st_mode):
                info["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info["rdev"] = st.st_rdev
            elif stat.S_ISDIR(st.st_mode):
                info["acl"] = getfacl(path) if info["xattrs"] else ""
            found[rel] = info
    return found


def assert_same_tree(expected: bytes | Path, actual: bytes | Path) -> None:
    a, b = describe_tree(os.fsencode(expected)), describe_tree(os.fsencode(actual))
    assert sorted(a) == sorted(b), "different entries"
    for rel in a:
        for field, value in a[rel].items():
            assert b[rel].get(field) == value, (
                f"{rel!r}: {field} differs: {value!r:.200} != {b[rel].get(field)!r:.200}"
            )


def child_processes(parent: int, marker: bytes) -> set[int]:
    """The processes `parent` runs whose command line holds `marker` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat_line[stat_line.rindex(")") + 2 :].split()[1]) == parent and marker in cmdline:
            found.add(int(entry.name))
    return found


def cli_with_workers(
    args: list[str], env: dict[str, str], marker: bytes
) -> tuple[subprocess.Popen[str], set[int]]:
    """Start the CLI with `args` and wait (up to 2 minutes) until it runs worker processes whose
    command line holds `marker`: the command and those workers (none if it ended first)."""
    command = subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while not workers and command.poll() is None and time.monotonic() < deadline:
        workers = child_processes(command.pid, marker)
        time.sleep(0.01)
    return command, workers


def files_being_written(pid: int, dest: Path) -> list[int]:
    """Sizes of the files a restore (process `pid`) is writing in `dest`: under a temporary name,
    or unnamed (O_TMPFILE, seen only as the process's descriptor of a deleted `dest/#inode`)."""
    sizes = []
    for path in [*dest.glob(".svtmp-*"), *Path(f"/proc/{pid}/fd").glob("*")] if dest.exists() else []:
        try:
            unnamed = not path.name.startswith(".svtmp-") and os.readlink(path)
            if not unnamed or (unnamed.startswith(f"{dest}/#") and unnamed.endswith(" (deleted)")):
                sizes.append(path.stat().st_size)
        except OSError:
            continue  # gone meanwhile
    return sizes


def whole_files(restored: Path, source: Path) -> int:
    """Check that what an interrupted restore left is only whole files: no temporary name, every
    file under its name identical to its source. How many there are."""
    whole = 0
    for directory, _, names in os.walk(restored):
        for name in names:
            assert not name.startswith(".svtmp-"), f"a temporary file is left: {directory}/{name}"
            path = Path(directory) / name
            assert path.read_bytes() == (source / path.relative_to(restored)).read_bytes(), path
            whole += 1
    return whole
