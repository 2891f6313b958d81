"""A restore names what it kept, warned about and could not restore by its place in the target (where
a user looks, and what `restore --dry-run` shows); under --json each line also has the snapshot path.

One snapshot serves every test: `www/index.html` (kept: the target's copy is newer), `www/sealed`
(unreadable at backup: a warning) and `www/blocked` (a directory is in its place: an error), restored
whole, as `SNAP:SUBPATH`, and file by file.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.archive.restore import find_node
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.archive.test_backup_errors import without_dac_override
from tests.archive.test_honest_output import all_json, of_type
from tests.archive.test_hostile_restore import Crafter

KEPT_WHY = "already in the target, not older than the snapshot's (--overwrite if-newer; always replaces it)"
SEALED_WHY = "not restored: not read at backup: Permission denied"
BLOCKED_WHY = "not restored: a directory is in the way (it is never replaced by a file)"
FUTURE = 4_000_000_000  # the target's copy of index.html is newer than the snapshot's


@dataclass
class Snap:
    www: Path  # the backed-up directory, as the snapshot names it
    env: dict[str, str]


@pytest.fixture
def snap(env: dict[str, str], tmp_path: Path) -> Snap:
    www = tmp_path / "srv" / "www"
    www.mkdir(parents=True)
    (www / "index.html").write_text("<h1>snapshot</h1>\n")
    (www / "blocked").write_text("a file in the snapshot\n")
    (www / "sealed").write_text("no permission\n")
    os.chmod(www / "sealed", 0o000)
    done = without_dac_override(["backup", "--provider", "none", str(www)], env)
    assert done.returncode == 3, done.stderr  # sealed could not be read
    return Snap(www, env)


def prepare(place: Path) -> None:
    """What the user has in the target at these places: a newer index.html, a directory `blocked`."""
    place.mkdir(parents=True, exist_ok=True)
    (place / "index.html").write_text("the user's page\n")
    os.utime(place / "index.html", (FUTURE, FUTURE))
    (place / "blocked").mkdir()


def restore(env: dict[str, str], spec: str, target: Path | str, *flags: str, cwd: Path | None = None):
    """`shadowvault restore SPEC --target TARGET --overwrite if-newer`, as a user runs it (`env` names
    the repository, and a daemon to do it, if any)."""
    command = ["restore", spec, "--target", str(target), "--overwrite", "if-newer", *flags]
    return subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", *command],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=300,
    )


def entries_said(done: subprocess.CompletedProcess[str]) -> list[dict]:
    """The kept, warning and error lines of a --json restore, in a stable order."""
    lines = of_type(all_json(done.stdout), "kept")
    lines += of_type(all_json(done.stderr), "warning") + of_type(all_json(done.stderr), "error")
    return sorted(lines, key=lambda m: (m["message_type"], m["path"]))


def expected_lines(www: Path, place: str, names: tuple[str, ...] = ("index.html", "sealed", "blocked")):
    """The --json lines for `names` of www restored at `place` (the directory standing for www)."""
    every = {
        "index.html": {"message_type": "kept", "reason": KEPT_WHY},
        "sealed": {"message_type": "warning", "message": SEALED_WHY},
        "blocked": {"message_type": "error", "message": BLOCKED_WHY},
    }
    lines = [{**every[n], "path": f"{www}/{n}", "target": f"{place}/{n}"} for n in names]
    return sorted(lines, key=lambda m: (m["message_type"], m["path"]))


def assert_text(done: subprocess.CompletedProcess[str], place: str) -> None:
    """The warning and the error name their places in the target; the kept file is counted."""
    assert done.returncode == 3, done.stderr
    said = done.stderr.splitlines()
    assert f"shadowvault: warning: {place}/sealed: {SEALED_WHY}" in said, done.stderr
    assert f"shadowvault: warning: {place}/blocked: {BLOCKED_WHY}" in said, done.stderr
    assert f"1 kept, {KEPT_WHY}" in said, done.stderr
    assert "Traceback" not in done.stderr


def test_a_whole_snapshot_restore_names_the_places_below_the_full_paths(snap: Snap, tmp_path: Path):
    for as_json in (False, True):
        target = tmp_path / f"whole-{as_json}"
        place = f"{target}{snap.www}"  # the snapshot's full paths are recreated below the target
        prepare(Path(place))
        done = restore(snap.env, "latest", target, *(["--json"] if as_json else []))
        if as_json:
            assert done.returncode == 3, done.stderr
            assert entries_said(done) == expected_lines(snap.www, place)
        else:
            assert_text(done, place)
        assert (Path(place) / "index.html").read_text() == "the user's page\n"


def test_a_subpath_restore_names_the_places_in_the_target(snap: Snap, tmp_path: Path):
    for as_json in (False, True):
        target = tmp_path / f"sub-{as_json}"
        prepare(target)
        done = restore(snap.env, f"latest:{snap.www}", target, *(["--json"] if as_json else []))
        if as_json:
            assert done.returncode == 3, done.stderr
            assert entries_said(done) == expected_lines(snap.www, str(target))
        else:
            assert_text(done, str(target))


def test_a_single_file_restore_names_the_file_in_the_target(snap: Snap, tmp_path: Path):
    target = tmp_path / "single"
    prepare(target)
    for name, code in (("index.html", 0), ("sealed", 0), ("blocked", 1)):  # 1: nothing restored
        done = restore(snap.env, f"latest:{snap.www}/{name}", target, "--json")
        assert done.returncode == code, done.stderr
        assert entries_said(done) == expected_lines(snap.www, str(target), (name,))
    done = restore(snap.env, f"latest:{snap.www}/sealed", target)
    assert done.stderr.splitlines()[0] == f"shadowvault: warning: {target}/sealed: {SEALED_WHY}"
    done = restore(snap.env, f"latest:{snap.www}/blocked", target)
    assert f"shadowvault: warning: {target}/blocked: {BLOCKED_WHY}" in done.stderr.splitlines()


def test_a_relative_target_is_named_as_the_user_gave_it(snap: Snap, tmp_path: Path):
    prepare(tmp_path / "here" / "restored")
    done = restore(snap.env, f"latest:{snap.www}", "restored", "--json", cwd=tmp_path / "here")
    assert entries_said(done) == expected_lines(snap.www, "restored")
    done = restore(snap.env, f"latest:{snap.www}", "restored", cwd=tmp_path / "here")
    assert_text(done, "restored")


def test_a_file_whose_blob_is_damaged_is_named_by_its_place(snap: Snap, tmp_path: Path):
    """A blob that fails verification fails its file: the error names where the file would be."""
    with Repository.open(snap.env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:
        _, snapshot = repo.find_snapshot("latest")
        node = find_node(repo, snapshot.tree, f"{snap.www}/index.html")
        location = repo.lookup(node.content[0])
    pack = Path(snap.env["SHADOWVAULT_REPOSITORY"]) / pack_name(location.pack)
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.seek(location.offset + location.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))

    target = tmp_path / "damaged"
    done = restore(snap.env, f"latest:{snap.www}", target, "--json")
    assert done.returncode == 3, done.stderr
    (error,) = of_type(all_json(done.stderr), "error")
    assert (error["path"], error["target"]) == (f"{snap.www}/index.html", f"{target}/index.html")
    assert not (target / "index.html").exists()
    done = restore(snap.env, f"latest:{snap.www}", tmp_path / "damaged-text")
    (line,) = [line for line in done.stderr.splitlines() if "index.html" in line]
    assert line.startswith(f"shadowvault: warning: {tmp_path}/damaged-text/index.html: "), line


def test_an_unsafe_name_is_named_in_its_directorys_place(tmp_path: Path):
    """An entry whose name is not one component is never created: the error names the place of its
    directory in the target and the name escaped, as `ls` shows it."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(c.dir(b"srv", c.dir(b"www", c.file(b"../../escape"), c.file(b"ok", b"ok"))))
        repo.save_snapshot(Snapshot(time=time.time(), host="crafted", paths=["/srv"], tree=root))
    env = {"SHADOWVAULT_REPOSITORY": str(tmp_path / "repo"), "SHADOWVAULT_PASSWORD": PASSWORD}
    target = tmp_path / "target"
    done = restore(env, "latest:/srv/www", target, "--json")
    assert done.returncode == 3, done.stderr
    (error,) = of_type(all_json(done.stderr), "error")
    escaped = r"..\x2f..\x2fescape"
    assert (error["path"], error["target"]) == (f"/srv/www/{escaped}", f"{target}/{escaped}")
    assert (target / "ok").read_bytes() == b"ok"
    done = restore(env, "latest:/srv/www", tmp_path / "text")
    assert f"shadowvault: warning: {tmp_path}/text/{escaped}: not restored: unsafe name" in done.stderr


CAFE, SEALED, BLOCKED = b"caf\xe9", b"sealed-\xff", b"blocked-\xe9"  # names that are not UTF-8


@pytest.fixture
def latin1(env: dict[str, str], tmp_path: Path) -> Snap:
    """A snapshot of www holding names that are not UTF-8: `caf\\xe9` (the target keeps a newer
    copy), `sealed-\\xff` (unreadable at backup) and `blocked-\\xe9` (a directory is in its way)."""
    www = tmp_path / "latin1" / "www"
    www.mkdir(parents=True)
    raw = os.fsencode(www)
    for name in (CAFE, SEALED, BLOCKED):
        with open(raw + b"/" + name, "wb") as f:
            f.write(b"from the snapshot\n")
    os.chmod(raw + b"/" + SEALED, 0o000)
    done = without_dac_override(["backup", "--provider", "none", str(www)], env)
    assert done.returncode == 3, done.stderr
    return Snap(www, env)


def prepare_latin1(place: Path) -> None:
    """The user's newer `caf\\xe9` and a directory `blocked-\\xe9` at the place standing for www."""
    raw = os.fsencode(place)
    os.makedirs(raw, exist_ok=True)
    with open(raw + b"/" + CAFE, "wb") as f:
        f.write(b"the user's\n")
    os.utime(raw + b"/" + CAFE, (FUTURE, FUTURE))
    os.mkdir(raw + b"/" + BLOCKED)


def exact(key: str, raw: bytes) -> dict[str, str]:
    """What `ls --json` says for a name that is not UTF-8: escaped text, and the bytes in base64."""
    return {key: raw.decode("utf-8", "backslashreplace"), f"{key}_bytes": base64.b64encode(raw).decode()}


def assert_latin1_said(
    done: subprocess.CompletedProcess[str], www: Path, place: str, cwd: Path = Path(".")
) -> None:
    """The kept, warning and error lines give path and target as `ls --json` does: exact bytes (a
    relative `place` is below `cwd`)."""
    assert done.returncode == 3, done.stderr
    every = {
        CAFE: {"message_type": "kept", "reason": KEPT_WHY},
        SEALED: {"message_type": "warning", "message": SEALED_WHY},
        BLOCKED: {"message_type": "error", "message": BLOCKED_WHY},
    }
    raw_www, raw_place = os.fsencode(www), os.fsencode(place)
    expected = [
        {**line, **exact("path", raw_www + b"/" + name), **exact("target", raw_place + b"/" + name)}
        for name, line in every.items()
    ]
    assert entries_said(done) == sorted(expected, key=lambda m: (m["message_type"], m["path"]))
    for line in entries_said(done):  # a script takes the bytes: they name what is there (kept, in the way)
        there = os.path.join(os.fsencode(cwd), base64.b64decode(line["target_bytes"]))
        assert os.path.lexists(there) == (line["message_type"] != "warning"), there


def assert_latin1_text(done: subprocess.CompletedProcess[str], place: str) -> None:
    """For people, the places with the bytes that are not UTF-8 escaped, as `ls` shows them."""
    assert done.returncode == 3, done.stderr
    said = done.stderr.splitlines()
    assert f"shadowvault: warning: {place}/sealed-\\xff: {SEALED_WHY}" in said, done.stderr
    assert f"shadowvault: warning: {place}/blocked-\\xe9: {BLOCKED_WHY}" in said, done.stderr
    assert f"1 kept, {KEPT_WHY}" in said, done.stderr


def test_names_that_are_not_utf8_are_given_exactly(latin1: Snap, tmp_path: Path):
    target = tmp_path / "latin1-target"
    prepare_latin1(target)
    done = restore(latin1.env, f"latest:{latin1.www}", target, "--json")
    assert_latin1_said(done, latin1.www, str(target))
    with open(os.fsencode(target) + b"/" + CAFE, "rb") as f:
        assert f.read() == b"the user's\n"
    assert_latin1_text(restore(latin1.env, f"latest:{latin1.www}", target), str(target))
