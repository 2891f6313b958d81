"""Every repository command, with --json and without, on a tree of hostile names (tests/hostile_names.py).

A name that is not UTF-8, holds a newline, a tab or an escape sequence, starts with "-" or is 255
bytes long must never end a command in "internal error", forge a line of text output or be given
inexactly in JSON (docs/archive.md, "Names"). One repository serves the module; the commands that
change it run last, on a copy.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.display import exact_bytes
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.hostile_names import (
    DIR,
    FILES,
    LATIN1,
    LINK,
    LINK_TARGET,
    NEWLINE,
    Outcome,
    arg,
    build_tree,
    checked,
    tree_paths,
)
from tests.inprocess_cli import run

MODES = ("restore-size", "files-by-contents", "blobs-per-file", "raw-data")


@dataclass
class Scene:
    env: dict[str, str]
    src: bytes
    first: str
    second: str
    work: Path

    def __call__(self, *argv: object, code: int = 0, binary: bool = False) -> Outcome:
        args = tuple(arg(a) for a in argv)
        return checked(run(self.env, *args), args, code=code, binary=binary)

    def both(self, *argv: object, code: int = 0) -> Outcome:
        """The command as text and as --json; the JSON outcome."""
        self(*argv, code=code)
        return self(*argv, "--json", code=code)

    def target(self, name: str) -> Path:
        path = self.work / name
        assert not path.exists(), name
        return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """Two snapshots of the hostile tree (the Latin-1 file changed, a file added in between)."""
    base = tmp_path_factory.mktemp("hostile")
    build_tree(base / "src")
    Repository.init(base / "repo", PASSWORD, kdf_params=FAST_KDF).close()
    (base / "config" / "writers.d").mkdir(parents=True)
    env = {
        "SHADOWVAULT_REPOSITORY": str(base / "repo"),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_FROM_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
        "SHADOWVAULT_CONFIG_DIR": str(base / "config"),
        "SHADOWVAULT_STATE_DIR": str(base / "state"),
        "SHADOWVAULT_CACHE_DIR": str(base / "cache"),
    }
    src = os.fsencode(base / "src")
    made = Scene(env, src, "", "", base / "work")
    made.work.mkdir()
    made("backup", "--provider", "none", src, "--json")
    with open(src + b"/" + LATIN1, "ab") as f:
        f.write(b"changed\n")
    with open(src + b"/" + DIR + b"/new\n\xe9", "wb") as f:
        f.write(b"new\n")
    made("backup", "--provider", "none", "-v", src)
    made.first, made.second = (s["id"] for s in json.loads(made("snapshots", "--json").stdout))
    return made


def test_backup_dry_run_and_listings_name_every_entry_exactly(scene: Scene):
    scene.both("backup", "--provider", "none", "--dry-run", "-v", scene.src)
    scene.both("snapshots")
    listed = scene.both("ls", "-l", "latest")
    assert listed.names() >= tree_paths(scene.src)
    [link] = [line for line in listed.lines if "name" in line and exact_bytes(line, "name") == LINK]
    assert exact_bytes(link, "link_target") == LINK_TARGET
    below = scene.both("ls", "latest", scene.src + b"/" + DIR)
    assert {os.path.basename(p) for p in below.names()} >= {DIR, b"inner\xe9", b"ok", b"new\n\xe9"}
    found = scene.both("find", "*\udce9*")
    assert scene.src + b"/" + LATIN1 in found.names()
    versions = scene.both("versions", scene.src + b"/" + LATIN1)
    assert scene.src + b"/" + LATIN1 in versions.names()
    changes = scene.both("diff", scene.first, scene.second)
    changed = {LATIN1, DIR + b"/new\n\xe9", DIR}
    assert changes.names() == {scene.src + b"/" + name for name in changed}
    for mode in MODES:
        scene.both("stats", "--mode", mode)
    scene.both("check", "--read-data")
    scene.both("forget", "--keep-last", "1", "--dry-run")
    scene.both("rewrite", "--exclude", b"*" + LATIN1, "--dry-run")


def test_dump_and_cat_give_names_and_bytes_as_stored(scene: Scene):
    dumped = scene("dump", "latest", scene.src + b"/" + NEWLINE, binary=True)
    assert dumped.stdout == FILES[NEWLINE]
    tar = scene("dump", "latest", scene.src + b"/" + DIR, binary=True)
    assert b"inner\xe9" in tar.stdout
    # exit 3: the FIFO has no zip form
    zipped = scene("dump", "--archive", "zip", "latest", scene.src, code=3, binary=True)
    names = {info.orig_filename for info in zipfile.ZipFile(io.BytesIO(zipped.stdout)).infolist()}
    member = scene.src.lstrip(b"/") + b"/" + DIR + b"/inner\xe9"
    assert member.decode("cp437") in names  # a name without the UTF-8 flag: its bytes, read as cp437
    tree = json.loads(scene("cat", "snapshot", scene.second, binary=True).stdout)["tree"]
    scene("cat", "tree", tree, binary=True)


def test_restores_place_and_name_hostile_entries_exactly(scene: Scene):
    for form in ((), ("--json",)):
        whole = scene.target(f"whole{len(form)}")
        scene("restore", "latest", "--target", whole, *form)
        top = os.fsencode(whole) + scene.src
        restored = {p[len(top) :] for p in tree_paths(top)}
        assert restored == {p[len(scene.src) :] for p in tree_paths(scene.src)}
        again = scene("restore", "latest", "--target", whole, "--overwrite", "never", "-v", *form)
        if form:
            assert scene.src + b"/" + NEWLINE in again.names()
        dry = scene.target(f"dry{len(form)}")
        preview = scene("restore", "latest", "--target", dry, "--dry-run", "-v", *form)
        if form:
            assert scene.src + b"/" + LATIN1 in preview.names()
        sub = scene.target(f"sub{len(form)}")
        scene("restore", arg(b"latest:" + scene.src + b"/" + DIR), "--target", sub, *form)
        assert os.path.exists(os.fsencode(sub) + b"/inner\xe9")
        picked = scene.target(f"picked{len(form)}")
        scene("restore", "latest", "--target", picked, "--include", "*\udce9*", "--exclude", "*ok", *form)
        assert os.path.exists(os.fsencode(picked) + scene.src + b"/" + LATIN1)
        assert not os.path.exists(os.fsencode(picked) + scene.src + b"/" + DIR + b"/ok")


def test_component_restores_show_names_in_one_line_and_map_them(scene: Scene):
    for form in ((), ("--json",)):
        root = scene.target(f"root{len(form)}")
        root.mkdir()
        files = ("restore", "latest", "--component", "files", "--target-root", root)
        scene(*files, "--dry-run", *form)
        scene(*files, *form)
        mapped = scene.target(f"mapped{len(form)}")
        mapped.mkdir()
        plan = scene(*files[:-1], mapped, "--map", arg(scene.src + b"=/d\xe9st"), *form)
        assert os.path.exists(os.fsencode(mapped) + b"/d\xe9st/" + NEWLINE)
        if form:
            [done] = [line for line in plan.lines if line["message_type"] == "plan"]
            assert b"/d\xe9st/" + NEWLINE in {exact_bytes(a, "target") for a in done["actions"]}


def test_snapshot_fields_that_are_not_utf8_are_refused_in_one_line(scene: Scene):
    scene("backup", "--provider", "none", scene.src + b"/" + DIR, code=2)
    scene("backup", "--provider", "none", "--tag", b"t\xe9", scene.src, "--json", code=2)
    scene("backup", "--provider", "none", "--host", b"h\xe9", scene.src, code=2)


def test_commands_that_change_the_repository(scene: Scene):
    """Run on a copy (copy itself is one of them): tag, rewrite, repair, forget and prune."""
    other = scene.work / "copy"
    Repository.init(other, PASSWORD, kdf_params=FAST_KDF).close()
    scene("copy", "--from-repo", scene.env["SHADOWVAULT_REPOSITORY"], "--repo", other)
    scene("copy", "--from-repo", scene.env["SHADOWVAULT_REPOSITORY"], "--repo", other, "--json")
    copied = Scene({**scene.env, "SHADOWVAULT_REPOSITORY": str(other)}, scene.src, "", "", scene.work)
    copied.both("tag", "latest", "--add", "checked")
    copied("backup", "--provider", "none", "--exclude", b"*\xff\xfe", scene.src, "--json")
    assert scene.src + b"/\xff\xfe" not in copied("ls", "latest", "--json").names()
    copied("rewrite", "--exclude", b"*" + LATIN1, "latest", "--json")
    assert scene.src + b"/" + LATIN1 not in copied("ls", "latest", "--json").names()
    copied("rewrite", "--exclude", b"*\n*", "latest")
    copied.both("repair", "snapshots")
    copied("forget", "--keep-last", "2", "--json")
    copied.both("prune")
    copied("check", "--read-data", "--json")
