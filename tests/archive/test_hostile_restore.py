"""A hostile repository: crafted trees must never make a restore write outside its target.

Whoever holds the password of a shared repository (a compromised client) can store any tree: names
with `..` or `/`, absolute names, a symlink and a directory under one name, and the target itself can
hold a symlink planted before the restore. Each case is restored through the library and through
`shadowvault restore`, in every --overwrite mode, as root; a sentinel directory next to the target must
come out byte for byte, mode for mode, owner for owner, ctime for ctime the same; the legitimate entries
are restored and every refused one is named in the result (exit 3 on the command line).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shadowvault.archive.diff import Change, diff_trees
from shadowvault.archive.dump import write_tar
from shadowvault.archive.listing import walk_tree
from shadowvault.archive.restore import Overwrite, Restorer, find_node
from shadowvault.errors import ShadowvaultError
from shadowvault.repo.format import BlobType
from shadowvault.repo.repair_snapshots import repair_snapshots
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree
from tests.archive.helpers import FAST_KDF, PASSWORD

EVIL_UID, EVIL_GID = 4321, 8765
ETC_PROBE = b"/etc/shadowvault-hostile-restore-probe"
NEWER = time.time_ns() + 86_400 * 10**9  # newer than anything in the target: if-newer replaces


class Crafter:
    """Builds trees exactly as given (order, duplicates, bad names) through the repository API."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def file(self, name: bytes, data: bytes = b"evil", **fields) -> Node:
        blob = self.repo.save_blob(BlobType.DATA, data)
        evil = {"mode": 0o6777, "uid": EVIL_UID, "gid": EVIL_GID, "mtime_ns": NEWER}
        return Node(name=name, type="file", size=len(data), content=[blob], **{**evil, **fields})

    def dir(self, name: bytes, *children: Node) -> Node:
        subtree = self.repo.save_tree(Tree(nodes=list(children)))
        return Node(name=name, type="dir", mode=0o777, uid=EVIL_UID, gid=EVIL_GID, subtree=subtree)

    def symlink(self, name: bytes, target: bytes) -> Node:
        return Node(name=name, type="symlink", link_target=target, uid=EVIL_UID, gid=EVIL_GID)

    def root(self, *children: Node) -> bytes:
        return self.repo.save_tree(Tree(nodes=list(children)))


@dataclass
class Case:
    root: bytes
    good: dict[str, bytes]  # relative path in the target -> content
    bad: set[str]  # snapshot paths the result must name (bad names escaped)
    plant: Callable[[Path], None] | None = None
    bad_unless_always: set[str] = field(default_factory=set)  # refused unless --overwrite always
    good_in_mode: dict[str, dict[str, bytes]] = field(default_factory=dict)  # mode -> more restored files


def _dotdot(c: Crafter, outside: Path) -> Case:
    root = c.root(
        c.dir(b"a", c.file(b"../../outside/victim"), c.file(b"../../X"), c.file(b"good", b"good a")),
        c.file(b"good", b"good root"),
    )
    return Case(
        root,
        {"good": b"good root", "a/good": b"good a"},
        {
            "/a/..\\x2f..\\x2foutside\\x2fvictim",
            "/a/..\\x2f..\\x2fX",
        },
    )


def _dir_named_dotdot(c: Crafter, outside: Path) -> Case:
    escape = c.dir(b"..", c.dir(b"outside", c.file(b"victim"), c.file(b"new")), c.file(b"X"))
    root = c.root(
        c.dir(b"..", escape, c.file(b"victim")), c.dir(b".", c.file(b"dot")), c.file(b"good", b"ok")
    )
    return Case(root, {"good": b"ok"}, {"/\\x2e\\x2e", "/\\x2e"})


def _slash_names(c: Crafter, outside: Path) -> Case:
    root = c.root(
        c.file(b"x/../../outside/victim"),
        c.dir(b"sub/../..", c.file(b"X")),
        c.dir(b"sub", c.file(b"in/../../../outside/victim"), c.file(b"kept", b"kept")),
    )
    return Case(
        root,
        {"sub/kept": b"kept"},
        {
            "/x\\x2f..\\x2f..\\x2foutside\\x2fvictim",
            "/sub\\x2f..\\x2f..",
            "/sub/in\\x2f..\\x2f..\\x2f..\\x2foutside\\x2fvictim",
        },
    )


def _absolute_names(c: Crafter, outside: Path) -> Case:
    victim = os.fsencode(outside / "victim")
    root = c.root(
        c.file(victim),
        c.file(ETC_PROBE),
        c.dir(os.fsencode(outside), c.file(b"new")),
        c.file(b"good", b"fine"),
    )
    shown = lambda raw: "/" + os.fsdecode(raw).replace("/", "\\x2f")  # noqa: E731
    return Case(root, {"good": b"fine"}, {shown(victim), shown(ETC_PROBE), shown(os.fsencode(outside))})


def _empty_and_nul_names(c: Crafter, outside: Path) -> Case:
    root = c.root(
        c.dir(b"a", c.file(b""), c.file(b"nul\0byte"), c.file(b"ok", b"ok")), c.dir(b"", c.file(b"x"))
    )
    return Case(root, {"a/ok": b"ok"}, {"/a/", "/a/nul\\x00byte", "/"})


def _symlink_then_dir_same_name(c: Crafter, outside: Path) -> Case:
    root = c.root(
        c.symlink(b"lnk", os.fsencode(outside)),
        c.dir(b"lnk", c.file(b"victim"), c.file(b"new")),
        c.file(b"good", b"still restored"),
    )
    return Case(root, {"good": b"still restored"}, {"/lnk"})


def _symlink_then_entries_below_it(c: Crafter, outside: Path) -> Case:
    root = c.root(
        c.symlink(b"lnk", os.fsencode(outside)),
        c.file(b"lnk/victim"),
        c.dir(b"lnk/sub", c.file(b"new")),
    )
    return Case(root, {}, {"/lnk\\x2fvictim", "/lnk\\x2fsub"})


def _hard_link_to_a_bad_name(c: Crafter, outside: Path) -> Case:
    link = {"nlink": 2, "inode": 77, "device": 1, "mode": 0o644, "uid": 0, "gid": 0}
    root = c.root(c.file(b"../outside/victim", b"linked", **link), c.file(b"good-link", b"linked", **link))
    return Case(root, {"good-link": b"linked"}, {"/..\\x2foutside\\x2fvictim"})


def _planted_symlinks_in_target(c: Crafter, outside: Path) -> Case:
    def plant(target: Path) -> None:
        os.symlink(outside, target / "sub")
        os.symlink(outside / "victim", target / "file")

    root = c.root(
        c.dir(b"sub", c.file(b"victim", b"inside"), c.file(b"new", b"new")),
        c.file(b"file", b"a file now", mode=0o644, uid=0, gid=0),
    )
    return Case(
        root,
        {},
        set(),
        plant=plant,
        bad_unless_always={"/sub"},
        good_in_mode={
            "if-newer": {"file": b"a file now"},
            "always": {"file": b"a file now", "sub/victim": b"inside", "sub/new": b"new"},
        },
    )


CASES = {
    "dotdot-in-name": _dotdot,
    "dir-named-dotdot": _dir_named_dotdot,
    "slash-in-name": _slash_names,
    "absolute-name": _absolute_names,
    "empty-and-nul-name": _empty_and_nul_names,
    "symlink-then-dir-same-name": _symlink_then_dir_same_name,
    "symlink-then-names-below-it": _symlink_then_entries_below_it,
    "hard-link-to-bad-name": _hard_link_to_a_bad_name,
    "planted-symlink-in-target": _planted_symlinks_in_target,
}


def disk_state(root: Path, skip: set[Path]) -> dict[str, tuple]:
    """What a restore could have touched below `root`: every entry's type, mode, owner, times, bytes."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name)
            st = os.lstat(path)
            content: bytes | str | None = None
            if stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            found[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, content)
    return found


@dataclass
class Scene:
    repo_path: Path
    target: Path
    outside: Path
    case: Case
    before: dict[str, tuple]
    base: Path

    def assert_nothing_outside_changed(self) -> None:
        after = disk_state(self.base, {self.target, self.repo_path})
        assert sorted(after) == sorted(self.before), "entries appeared or vanished outside the target"
        for path, was in self.before.items():
            assert after[path] == was, f"{path} was changed: {was} -> {after[path]}"
        assert not os.path.lexists(ETC_PROBE)

    def assert_restored(self, mode: str, error_paths: list[str]) -> None:
        case = self.case
        good = {**case.good, **case.good_in_mode.get(mode, {})}
        for rel, content in good.items():
            path = self.target / rel
            assert stat.S_ISREG(os.lstat(path).st_mode), f"{rel} is not a regular file"
            assert path.read_bytes() == content, rel
        expected = case.bad | (set() if mode == "always" else case.bad_unless_always)
        assert set(error_paths) == expected
        leftovers = [p for p in self.target.rglob(".svtmp-*")]
        assert leftovers == []


@pytest.fixture(params=list(CASES))
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Scene:
    base = tmp_path / "base"
    outside = base / "outside"
    outside.mkdir(parents=True)
    (outside / "victim").write_bytes(b"victim")
    os.chmod(outside / "victim", 0o640)
    (outside / "subdir").mkdir()
    target = base / "target"
    target.mkdir()
    repo_path = tmp_path / "repo"
    with Repository.init(repo_path, PASSWORD, kdf_params=FAST_KDF) as repo:
        case = CASES[request.param](Crafter(repo), outside)
        repo.save_snapshot(Snapshot(time=time.time(), host="hostile", paths=["/"], tree=case.root))
    if case.plant is not None:
        case.plant(target)
    before = disk_state(base, {target, repo_path})
    return Scene(repo_path, target, outside, case, before, base)


@pytest.mark.parametrize("mode", [o.value for o in Overwrite])
def test_library_restore_stays_in_its_target(scene: Scene, mode: str):
    with Repository.open(scene.repo_path, PASSWORD) as repo:
        stats = Restorer(repo, scene.target, overwrite=mode).restore(scene.case.root)
    scene.assert_nothing_outside_changed()
    scene.assert_restored(mode, [os.fsdecode(path) for path, _ in stats.errors])


@pytest.mark.parametrize("mode", [o.value for o in Overwrite])
def test_cli_restore_stays_in_its_target(scene: Scene, mode: str, cli):
    env = {"SHADOWVAULT_REPOSITORY": str(scene.repo_path), "SHADOWVAULT_PASSWORD": PASSWORD}
    done = cli("restore", "latest", "--target", scene.target, "--overwrite", mode, "--json", env=env)
    assert "Traceback" not in done.stderr
    scene.assert_nothing_outside_changed()
    messages = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    errors = [m["path"] for m in messages if m["message_type"] == "error"]
    scene.assert_restored(mode, errors)
    summary = next(json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line)
    assert summary["errors"] == len(errors)
    assert done.returncode == (3 if errors else 0), done.stderr


def test_existing_files_under_a_planted_symlink_are_untouched_in_every_mode(tmp_path: Path):
    """target/sub -> outside, and the snapshot's sub/victim is older and newer than outside/victim."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"victim")
    os.utime(outside / "victim", (1_000_000_000, 1_000_000_000))
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(c.dir(b"sub", c.file(b"victim", b"snapshot", mode=0o600, uid=0, gid=0)))
        for mode in Overwrite:
            target = tmp_path / f"target-{mode.value}"
            target.mkdir()
            os.symlink(outside, target / "sub")
            before = disk_state(outside, set())
            stats = Restorer(repo, target, overwrite=mode).restore(root)
            assert disk_state(outside, set()) == before, mode
            if mode is Overwrite.ALWAYS:
                assert stats.errors == []
                assert not (target / "sub").is_symlink()
                assert (target / "sub" / "victim").read_bytes() == b"snapshot"
            else:
                assert [(p, "refused") for p, _ in stats.errors] == [(b"/sub", "refused")]
                assert "not a directory" in stats.errors[0][1]
                assert (target / "sub").is_symlink()


def test_unforeseen_failures_in_workers_are_errors_of_the_result(tmp_path: Path):
    """Values no filesystem call accepts (a NUL in a link target) raise ValueError in a worker
    thread: each is an error naming its path, the rest is restored. (A mode past 12 bits, once
    another, is a tree that does not decode: tests/repo/test_check.py.)"""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(c.symlink(b"nul-target", b"a\0b"), c.file(b"good", b"good", mode=0o644))
        target = tmp_path / "target"
        stats = Restorer(repo, target).restore(root)
    assert sorted(path for path, _ in stats.errors) == [b"/nul-target"]
    assert all("unexpected" in reason for _, reason in stats.errors)
    assert sorted(os.listdir(target)) == ["good"]


def test_an_owner_name_no_one_can_have_leaves_the_other_files_of_its_blob_alone(tmp_path: Path):
    """A user or group name with a NUL made the name lookup raise ValueError while the file was
    created, inside the reading of its pack range: the files sharing its blob were left unwritten
    and reported as "the restore was interrupted". Such a name matches no one: the stored ids hold."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        plain = {"mode": 0o644, "uid": EVIL_UID, "gid": EVIL_GID}
        root = c.root(
            c.file(b"a", b"shared", **plain),
            c.file(b"b", b"shared", user="no\0one", group="none\0", **plain),
            c.file(b"c", b"shared", **plain),
        )
        target = tmp_path / "target"
        stats = Restorer(repo, target).restore(root)
    assert stats.errors == []
    assert {name: (target / name).read_bytes() for name in os.listdir(target)} == dict.fromkeys(
        ("a", "b", "c"), b"shared"
    )
    assert (os.lstat(target / "b").st_uid, os.lstat(target / "b").st_gid) == (EVIL_UID, EVIL_GID)


@contextlib.contextmanager
def open_files_limit(soft: int):
    """Lower (or raise) this process's RLIMIT_NOFILE soft limit for the duration of the block."""
    was = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, was[1]), was[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, was)


def _deep(c: Crafter, depth: int, leaf: Node) -> Node:
    node = c.dir(b"d", leaf)
    for _ in range(depth - 1):
        node = c.dir(b"d", node)
    return node


def test_thousands_of_directories_within_a_few_hundred_open_files(tmp_path: Path):
    """Directory descriptors are closed as each directory is finished, not held for the whole restore."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        big = c.file(b"big", os.urandom(8 << 20), mode=0o644)  # keeps the oldest directory busy a while
        dirs = [c.dir(b"%05d" % i, c.file(b"f", b"%d" % i, mode=0o600)) for i in range(3000)]
        root = c.root(c.dir(b"first", big), *dirs)
        with open_files_limit(400):
            stats = Restorer(repo, tmp_path / "target").restore(root)
    assert stats.errors == []
    assert (stats.files, stats.dirs) == (3001, 3001)
    assert (tmp_path / "target" / "02999" / "f").read_bytes() == b"2999"


def test_a_tree_deeper_than_the_interpreter_stack_restores(tmp_path: Path):
    """Depth is not bounded by Python's recursion limit (a crafted tree cannot crash the restore)."""
    depth = 1200
    target = tmp_path / "target"
    try:
        with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
            c = Crafter(repo)
            root = c.root(_deep(c, depth, c.file(b"leaf", b"deep", mode=0o600)))
            with open_files_limit(4096):
                stats = Restorer(repo, target).restore(root)
        assert stats.errors == []
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(depth):  # the path is past PATH_MAX: walk it by descriptors
                inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = inner
            leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
            assert os.read(leaf, 10) == b"deep"
            os.close(leaf)
        finally:
            os.close(fd)
    finally:  # pytest's own clean-up (shutil.rmtree) recurses once per level and would fail
        subprocess.run(["rm", "-rf", "--", str(target)], check=True)


def test_a_tree_deeper_than_the_interpreter_stack_is_listed_and_dumped(tmp_path: Path):
    """`ls`, `find`, `stats` (listing.walk_tree) and `dump` walked one generator inside another and
    ended in a RecursionError on a crafted tree a few thousand directories deep."""
    depth = 1500
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(_deep(c, depth, c.file(b"leaf", b"deep", mode=0o600)))
        paths = [path for path, _ in walk_tree(repo, root, b"/")]
        out = io.BytesIO()
        write_tar(repo, root, "/", out)
    assert len(paths) == depth + 1 and paths[-1] == b"/d" * depth + b"/leaf"
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        members = archive.getmembers()
    assert len(members) == depth + 1 and members[-1].name.endswith("d/leaf")


def test_trees_deeper_than_the_interpreter_stack_are_diffed_and_repaired(tmp_path: Path):
    """`diff` and `repair snapshots` descended by recursion and ended in a RecursionError on two
    crafted trees a few thousand directories deep."""
    depth = 1500
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        lost = Node(name=b"lost", type="file", size=3, content=[b"\x07" * 32], mode=0o600)
        first = c.root(_deep(c, depth, c.file(b"leaf", b"one", mode=0o600)))
        second = c.root(_deep(c, depth, c.dir(b"sub", lost)))
        changes = [(d.path.rsplit(b"/", 1)[1], d.change) for d in diff_trees(repo, first, second)]
        snapshot_id = repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/"], tree=second))
    assert changes == [(b"leaf", Change.REMOVED), (b"sub", Change.ADDED), (b"lost", Change.ADDED)]
    with Repository.open(tmp_path / "repo", PASSWORD, write=True, kind="repair") as repo:
        result = repair_snapshots(repo, [snapshot_id])
    [repaired] = result.repaired
    assert repaired.original == snapshot_id and len(repaired.lost) == 1
    assert repaired.lost[0].endswith("/d/sub/lost: content lost (1 of 1 chunks)")


def test_a_tree_deeper_than_the_open_files_limit_is_an_error_not_a_crash(tmp_path: Path):
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(c.file(b"top", b"top", mode=0o600), _deep(c, 400, c.file(b"leaf", mode=0o600)))
        with open_files_limit(200):
            stats = Restorer(repo, tmp_path / "target").restore(root)
    assert stats.errors and all("Too many open files" in reason for _, reason in stats.errors)
    assert (tmp_path / "target" / "top").read_bytes() == b"top"


def test_hard_links_across_directories_are_found_again_by_descriptors(tmp_path: Path):
    """The later names of a hard link are linked to the first one even after its directory was closed."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        link = {"nlink": 3, "inode": 99, "device": 1, "mode": 0o640, "uid": 0, "gid": 0}
        root = c.root(
            c.dir(b"a", c.dir(b"deep", c.file(b"first", b"shared", **link))),
            c.dir(b"b", c.file(b"second", b"shared", **link)),
            c.file(b"third", b"shared", **link),
        )
        target = tmp_path / "target"
        stats = Restorer(repo, target).restore(root)
    assert stats.errors == []
    inodes = {os.lstat(target / rel).st_ino for rel in ("a/deep/first", "b/second", "third")}
    assert len(inodes) == 1 and os.lstat(target / "third").st_nlink == 3


def test_find_node_refuses_unsafe_names(tmp_path: Path):
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(c.dir(b"..", c.file(b"x")), c.dir(b"srv", c.file(b"ok", b"ok")))
        assert find_node(repo, root, "/srv/ok").name == b"ok"
        for bad in ("/..", "/../x", "/srv/../srv/ok", "/./srv"):
            with pytest.raises(ShadowvaultError):
                find_node(repo, root, bad)


def test_ls_and_diff_list_crafted_names_as_one_marked_component(scene: Scene, cli):
    """`ls` and `diff` never print a crafted name so that it reads as a path (`/a/../../x`): its `/`,
    NUL and the dots of `..` are escaped, it is marked, and nothing below it is listed."""
    env = {"SHADOWVAULT_REPOSITORY": str(scene.repo_path), "SHADOWVAULT_PASSWORD": PASSWORD}
    with Repository.open(scene.repo_path, PASSWORD) as repo:
        [(crafted, _)] = repo.list_snapshots()
        empty = repo.save_snapshot(
            Snapshot(time=time.time() - 60, host="hostile", paths=["/"], tree=Crafter(repo).root())
        )
    short, long, as_json = (cli("ls", crafted, *extra, env=env) for extra in ((), ("-l",), ("--json",)))
    diff = cli("diff", empty, crafted, env=env)
    assert short.returncode == long.returncode == as_json.returncode == diff.returncode == 0, diff.stderr
    nodes = [json.loads(line) for line in as_json.stdout.splitlines()][1:]
    unsafe = [n for n in nodes if "unsafe_name" in n]
    diffed = [line.split(" ", 1)[1] for line in diff.stdout.splitlines() if line and line[0] in "+-MU!"]
    for path in short.stdout.splitlines() + [n["path"] for n in nodes] + diffed:
        assert all(part not in (".", "..") for part in path.split("/")[1:]), path
    marked = [line for line in long.stdout.splitlines() if "unsafe name, a restore skips it" in line]
    assert len(marked) == len(unsafe) == short.stderr.count("unsafe name, a restore skips it")
    assert sorted(short.stdout.splitlines()) == sorted(n["path"] for n in nodes)
