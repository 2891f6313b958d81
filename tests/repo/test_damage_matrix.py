"""The damage matrix: each kind of damage x check, restore, the next backup, repair, as a user runs them.

Every case ends the same way a user needs it to: `check --read-data` passes, and the newest
snapshot restores byte-identical to the source. What each step says on the way is asserted too.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from shadowvault.repo.check import check
from shadowvault.repo.crypto import open_key_file
from shadowvault.repo.repair import repair_packs
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.repo.helpers import make_snapshot, restore_all


@dataclass
class Case:
    """A source tree, a repository with one snapshot of it, and the CLI pointed at both."""

    src: Path
    repo: Path
    run: Callable[..., object]
    first: str

    def cli(self, *args: str, password: str = PASSWORD):
        env = {"SHADOWVAULT_REPOSITORY": str(self.repo), "SHADOWVAULT_PASSWORD": password}
        return self.run(*args, env=env)

    def backup(self) -> str:
        done = self.cli("backup", "--provider", "none", "--json", str(self.src))
        assert done.returncode == 0, done.stderr
        summary = [json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line][-1]
        return summary["snapshot_id"]

    def restore(self, snapshot: str, target: Path):
        return self.cli("restore", f"{snapshot}:{self.src}", "--target", str(target), "--json")

    def check(self, *extra: str, password: str = PASSWORD):
        return self.cli("check", "--json", *extra, password=password)

    def assert_restores_identically(self, snapshot: str, target: Path) -> None:
        done = self.restore(snapshot, target)
        assert done.returncode == 0, done.stderr
        assert _tree_bytes(target) == _tree_bytes(self.src)

    def pack_of(self, blob_id: bytes) -> Path:
        with Repository.open(self.repo, PASSWORD) as repo:
            location = repo.lookup(blob_id)
        assert location is not None
        return self.repo / "data" / location.pack[:2] / location.pack

    def ids_of(self, snapshot: str, name: bytes) -> tuple[list[bytes], bytes | None]:
        """(content blob ids, subtree id) of the entry `name` directly under the source directory."""
        with Repository.open(self.repo, PASSWORD) as repo:
            snap = repo.find_snapshot(snapshot)[1]
            tree = repo.load_tree(snap.tree)
            for part in [p for p in os.fsencode(self.src).split(b"/") if p]:
                tree = repo.load_tree(next(n for n in tree.nodes if n.name == part).subtree)
            node = next(n for n in tree.nodes if n.name == name)
            return node.content, node.subtree


def _tree_bytes(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            found[os.path.join(rel, d)] = None
        for f in filenames:
            found[os.path.join(rel, f)] = Path(dirpath, f).read_bytes()
    return found


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x55
    path.write_bytes(bytes(raw))


@pytest.fixture
def case(tmp_path: Path, cli) -> Case:
    rnd = random.Random(7)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(rnd.randbytes(3_000_000))
    (src / "small.txt").write_bytes(b"small file\n" * 100)
    (src / "sub" / "inner.bin").write_bytes(rnd.randbytes(200_000))
    (src / "sub" / "note.txt").write_text("inside\n")
    repo = tmp_path / "repo"
    # small packs: a damaged pack then holds one or a few blobs, as in a large repository
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF, pack_size=64 << 10).close()
    c = Case(src, repo, cli, "")
    c.first = c.backup()
    return c


def test_flipped_data_blob_is_found_healed_by_the_next_backup_and_repaired(case, tmp_path):
    content, _ = case.ids_of(case.first, b"big.bin")
    pack = case.pack_of(content[0])
    _flip(pack, 100)

    assert case.check().returncode == 0  # structure alone cannot see a flipped bit
    found = case.check("--read-data")
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert list(report["affected_snapshots"]) == [case.first]

    broken = case.restore(case.first, tmp_path / "r1")
    assert broken.returncode == 3 and "big.bin" in broken.stderr + broken.stdout
    assert (tmp_path / "r1" / "small.txt").read_bytes() == (case.src / "small.txt").read_bytes()

    # The next backup does not reuse the damaged blob: it stores it again.
    second = case.backup()
    case.assert_restores_identically(second, tmp_path / "r2")
    case.assert_restores_identically(case.first, tmp_path / "r3")  # the old snapshot heals with it
    healed = json.loads(case.check("--read-data").stdout)
    assert healed["affected_snapshots"] == {}  # the damaged pack is still there, but nothing needs it

    repaired = case.cli("repair", "packs", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["packs"] == [pack.name]
    assert not pack.exists()
    assert case.check("--read-data").returncode == 0
    assert case.cli("prune").returncode == 0
    assert case.check("--read-data").returncode == 0


def test_only_the_file_of_a_damaged_blob_is_read_again_its_neighbours_are_reused(case, tmp_path):
    """An incremental backup asks the index about a directory's unchanged files at once; when one
    of them has a blob found damaged, that file alone is read again, the others stay reused."""
    content, _ = case.ids_of(case.first, b"big.bin")
    _flip(case.pack_of(content[0]), 100)
    assert case.check("--read-data").returncode == 1  # the damage is recorded

    done = case.cli("backup", "--provider", "none", "--json", str(case.src))
    assert done.returncode == 0, done.stderr
    summary = [json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line][-1]
    assert (summary["files_changed"], summary["files_unmodified"]) == (1, 3), summary
    case.assert_restores_identically(summary["snapshot_id"], tmp_path / "r")


def test_damaged_pack_with_no_second_copy_repair_packs_then_repair_snapshots(case, tmp_path):
    content, _ = case.ids_of(case.first, b"big.bin")
    _flip(case.pack_of(content[-1]), 50)
    big = (case.src / "big.bin").stat().st_size
    (case.src / "big.bin").unlink()  # the source is gone too: the blob cannot come back
    assert case.check("--read-data").returncode == 1

    advice = json.loads(case.check().stdout)["warnings"]
    assert any("repair packs" in w and "repair snapshots" in w for w in advice), advice
    repaired = json.loads(case.cli("repair", "packs", "--json").stdout)
    assert repaired["blobs_lost"] >= 1

    fixed = case.cli("repair", "snapshots", "--json")
    assert fixed.returncode == 0, fixed.stderr
    result = json.loads(fixed.stdout)
    [item] = result["repaired"]
    assert item["original"] == case.first
    assert any("big.bin" in line and "content lost" in line for line in item["lost"])
    snaps = json.loads(case.cli("snapshots", "--json").stdout)
    by_id = {s["id"]: s for s in snaps}
    assert "repaired" in by_id[item["repaired"]]["tags"]
    size = {sid: by_id[sid]["summary"]["bytes"] for sid in (case.first, item["repaired"])}
    assert size[item["repaired"]] == size[case.first] - big  # its Size counts only what it holds
    assert case.first in by_id  # the original is kept without --forget
    assert snaps[-1]["id"] == item["repaired"]  # the copy keeps the original's time, and sorts after it
    latest = case.cli("cat", "snapshot", "latest")
    assert latest.returncode == 0 and json.loads(latest.stdout)["original"] == case.first

    # The repaired copy restores everything else, and says what it lost.
    done = case.restore(item["repaired"], tmp_path / "r")
    assert done.returncode in (0, 3)
    assert (tmp_path / "r" / "small.txt").read_bytes() == (case.src / "small.txt").read_bytes()
    assert (tmp_path / "r" / "sub" / "inner.bin").read_bytes() == (
        case.src / "sub" / "inner.bin"
    ).read_bytes()
    assert not (tmp_path / "r" / "big.bin").exists()
    assert "not read at backup" not in done.stderr and "lost to repository damage" in done.stderr
    listed = case.cli("ls", "-l", item["repaired"])
    assert "big.bin" in listed.stdout and "(content lost to repository damage" in listed.stdout, listed.stdout

    assert case.cli("forget", case.first).returncode == 0
    assert case.cli("prune").returncode == 0
    assert case.check("--read-data").returncode == 0


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_truncated_or_deleted_pack(case, tmp_path, how):
    content, _ = case.ids_of(case.first, b"big.bin")
    pack = case.pack_of(content[0])
    if how == "deleted":
        pack.unlink()
    else:
        pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])

    found = case.check()  # the size (or absence) shows without reading data
    assert found.returncode == 1
    assert list(json.loads(found.stdout)["affected_snapshots"]) == [case.first]
    second = case.backup()
    case.assert_restores_identically(second, tmp_path / "r2")
    assert case.cli("repair", "packs").returncode == 0
    assert case.check("--read-data").returncode == 0
    case.assert_restores_identically(case.first, tmp_path / "r1")


def test_damaged_tree_blob_heals_and_prune_works_again(case, tmp_path):
    _, subtree = case.ids_of(case.first, b"sub")
    _flip(case.pack_of(subtree), 60)

    found = case.check()  # trees are read by every check
    assert found.returncode == 1
    assert list(json.loads(found.stdout)["affected_snapshots"]) == [case.first]
    assert case.cli("prune").returncode == 1  # never guesses with an unreadable tree

    second = case.backup()  # the directory is stored again; the next snapshot does not share the damage
    case.assert_restores_identically(second, tmp_path / "r2")
    case.assert_restores_identically(case.first, tmp_path / "r1")  # same tree id: healed too
    assert case.cli("prune").returncode == 0
    assert case.cli("repair", "packs").returncode == 0
    assert case.check("--read-data").returncode == 0


def test_damaged_tree_of_a_changed_directory_needs_repair_snapshots(case, tmp_path):
    _, subtree = case.ids_of(case.first, b"sub")
    _flip(case.pack_of(subtree), 60)
    (case.src / "sub" / "note.txt").write_text("changed since\n")  # the old listing cannot come back
    assert case.check().returncode == 1
    second = case.backup()
    case.assert_restores_identically(second, tmp_path / "r2")
    prune = case.cli("prune")
    assert prune.returncode == 1 and "check" in prune.stderr

    fixed = json.loads(case.cli("repair", "snapshots", "--forget", "--json").stdout)
    [item] = fixed["repaired"]
    assert item["original"] == case.first
    assert any(line.endswith("/sub/: directory listing lost") for line in item["lost"])
    assert fixed["forgotten"] == [case.first]
    assert case.cli("prune").returncode == 0
    assert case.cli("repair", "packs").returncode == 0
    assert case.check("--read-data").returncode == 0


@pytest.mark.parametrize("how", ["deleted", "flipped"])
def test_lost_index_file_repair_index(case, tmp_path, how):
    second_file = case.src / "later.txt"
    second_file.write_text("later\n")
    case.backup()
    index_files = sorted((case.repo / "index").iterdir())
    assert len(index_files) == 2
    victim = index_files[0] if how == "deleted" else index_files[1]
    if how == "deleted":
        victim.unlink()
    else:
        _flip(victim, 30)

    found = case.check()
    assert found.returncode == 1
    advice = json.loads(found.stdout)["warnings"]  # the index first: repair snapshots would drop data
    assert any("repair index" in w for w in advice) and not any("repair snapshots" in w for w in advice)
    prune = case.cli("prune")
    assert prune.returncode == 1 and "repair index" in prune.stderr  # never deletes the unindexed packs

    repaired = case.cli("repair", "index", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["packs_added"] >= 1
    assert case.check("--read-data").returncode == 0
    latest = json.loads(case.cli("snapshots", "--json").stdout)[-1]["id"]
    case.assert_restores_identically(latest, tmp_path / "r")
    assert case.cli("prune").returncode == 0
    assert case.check("--read-data").returncode == 0


def test_damaged_snapshot_file_is_skipped_and_can_be_forgotten(case, tmp_path):
    second = case.backup()
    _flip(case.repo / "snapshots" / case.first, 20)

    found = case.check()
    assert found.returncode == 1 and case.first[:8] in found.stdout
    listed = case.cli("snapshots", "--json")
    assert listed.returncode == 0 and [s["id"] for s in json.loads(listed.stdout)] == [second]
    assert case.backup()  # backups go on
    prune = case.cli("prune")
    assert prune.returncode == 0, prune.stderr
    assert case.cli("forget", case.first[:8]).returncode == 0
    assert not (case.repo / "snapshots" / case.first).exists()
    assert case.check("--read-data").returncode == 0
    case.assert_restores_identically(second, tmp_path / "r")


def test_damaged_key_file_is_not_a_wrong_password(case, tmp_path):
    other = tmp_path / "other-password"
    other.write_text("second password\n")
    added = case.cli("key", "add", "--new-password-file", str(other))
    assert added.returncode == 0, added.stderr
    first_key = next(
        k for k in (case.repo / "keys").iterdir() if open_key_file(k.read_bytes(), PASSWORD.encode())
    )
    _flip(first_key, 40)

    refused = case.cli("snapshots")
    assert refused.returncode == 1
    assert "damaged" in refused.stderr and first_key.name in refused.stderr
    assert "Traceback" not in refused.stderr
    works = case.cli("snapshots", "--json", password="second password")
    assert works.returncode == 0 and len(json.loads(works.stdout)) == 1

    # seen before the day it is needed: check and key list name it, without its password
    found = case.cli("check", "--json", password="second password")
    assert found.returncode == 1 and any(first_key.name in e for e in json.loads(found.stdout)["errors"])
    listed_text = case.cli("key", "list", "--json", password="second password").stdout
    listed = [json.loads(line) for line in listed_text.splitlines()]  # a line per key
    assert [k["damaged"] for k in listed if k["id"] == first_key.name] == [True]
    removed = case.cli("key", "remove", first_key.name[:8], password="second password")
    assert removed.returncode == 0, removed.stderr
    assert case.check(password="second password").returncode == 0


def test_damaged_config_has_a_repair_path(case, tmp_path):
    _flip(case.repo / "config", 30)
    refused = case.cli("snapshots")
    assert refused.returncode == 1
    assert "config is damaged" in refused.stderr and "repair config" in refused.stderr
    fixed = case.cli("repair", "config")
    assert fixed.returncode == 0, fixed.stderr
    case.assert_restores_identically(case.first, tmp_path / "r1")
    second = case.backup()
    case.assert_restores_identically(second, tmp_path / "r2")
    assert case.check("--read-data").returncode == 0


def test_a_failed_read_during_backup_is_recorded_and_healed_without_check(case, tmp_path):
    """No check ran: the backup meets the damaged parent tree itself, stores the directory again,
    and records the damage so the next prune and backups know it."""
    _, subtree = case.ids_of(case.first, b"sub")
    _flip(case.pack_of(subtree), 60)
    done = case.cli("backup", "--provider", "none", "--json", str(case.src))
    assert done.returncode == 0, done.stderr
    assert list((case.repo / "damage").iterdir())  # the backup wrote what it found
    latest = json.loads(case.cli("snapshots", "--json").stdout)[-1]["id"]
    case.assert_restores_identically(latest, tmp_path / "r")
    assert case.cli("prune").returncode == 0
    assert case.cli("repair", "packs").returncode == 0
    assert case.check("--read-data").returncode == 0
    assert not list((case.repo / "damage").iterdir())  # the records went with the damaged pack


def test_the_only_key_damaged_says_so(case):
    [key] = list((case.repo / "keys").iterdir())
    _flip(key, 40)
    refused = case.cli("snapshots")
    assert refused.returncode == 1
    assert "damaged" in refused.stderr and key.name in refused.stderr and "Traceback" not in refused.stderr


def test_a_fifo_planted_in_the_repository_is_damage_never_a_hang(case, tmp_path):
    """A FIFO where a snapshot, key, index file or pack belongs: opening it for reading would wait
    for a writer for ever (every command hung). Each is a damaged object, reported and worked around."""
    fake = "f" * 64
    for where in ("snapshots", "keys", "index"):
        os.mkfifo(case.repo / where / fake)
    listed = case.cli("snapshots", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [case.first]
    assert f"snapshots/{fake} in repository {case.repo} is not a regular file (damaged)" in listed.stderr
    refused = case.cli("snapshots", password="not the password")  # every key file is tried
    assert refused.returncode == 1 and "wrong password" in refused.stderr
    assert f"keys/{fake} in repository {case.repo} is not a regular file (damaged)" in refused.stderr
    big_pack = case.pack_of(case.ids_of(case.first, b"big.bin")[0][0])
    big_pack.unlink()
    os.mkfifo(big_pack)
    restored = case.restore(case.first, tmp_path / "r")
    assert restored.returncode == 3, restored.stderr
    assert "is not a regular file (damaged)" in restored.stderr
    assert (tmp_path / "r" / "small.txt").read_bytes() == (case.src / "small.txt").read_bytes()
    assert not (tmp_path / "r" / "big.bin").exists()
    found = case.check()
    assert found.returncode == 1 and case.first[:8] in found.stdout
    for where in ("snapshots", "keys", "index"):
        (case.repo / where / fake).unlink()
    big_pack.unlink()
    case.backup()  # heals: the damaged blobs are stored again
    assert case.cli("repair", "index").returncode == 0
    assert case.check("--read-data").returncode == 0


def test_a_pack_mended_from_a_good_copy_reads_back_intact_and_its_record_is_cleared(case, tmp_path):
    """The administrator's repair: copy the pack back from a replica. A check that reads it whole
    and finds every byte as indexed forgets the damage recorded for it; one that does not read it
    says how to clear it."""
    pack = case.pack_of(case.ids_of(case.first, b"big.bin")[0][0])
    good = pack.read_bytes()
    _flip(pack, 100)
    assert case.check("--read-data").returncode == 1  # found, and recorded
    assert any((case.repo / "damage").iterdir())
    pack.write_bytes(good)

    still = case.check()
    assert still.returncode == 1
    assert "recorded earlier" in still.stdout and "`check --read-data` clears the record" in still.stdout
    mended = case.check("--read-data")
    assert mended.returncode == 0, mended.stdout
    report = json.loads(mended.stdout)
    assert f"their records cleared: {pack.name[:16]}" in " ".join(report["warnings"])
    assert not any((case.repo / "damage").iterdir())
    assert case.check().returncode == 0
    case.assert_restores_identically(case.first, tmp_path / "r")


def test_damage_met_while_reading_is_one_message_per_event(case, tmp_path):
    """A damaged tree met by `ls` and `restore` is said once, as the CLI's own line (no logger
    line beside it); a backup that passes over a damaged copy for an intact one says that once."""
    _, subtree = case.ids_of(case.first, b"sub")
    _flip(case.pack_of(subtree), 60)
    for done in (case.cli("ls", "latest"), case.cli("restore", "latest", "--target", str(tmp_path / "r"))):
        assert done.returncode != 0 or "unreadable" in done.stderr, done.stderr
        lines = done.stderr.splitlines()
        assert all(line.startswith("shadowvault: ") for line in lines), done.stderr
        assert sum(subtree.hex()[:16] in line for line in lines) == 1, done.stderr

    damaged = case.pack_of(subtree)
    second = case.backup()  # stores the directory again: an intact copy beside the damaged one
    with Repository.open(case.repo, PASSWORD) as repo:
        repo.clear_damage([damaged.name])
    with Repository.open(case.repo, PASSWORD) as repo:
        first = repo.lookup(subtree).pack  # the copy a read tries first, now that neither is recorded
    if first != damaged.name:  # make that one the damaged copy, the other intact
        _flip(damaged, 60)
        _flip(next((case.repo / "data").rglob(first)), 60)
    done = case.cli("ls", second)
    assert done.returncode == 0, done.stderr
    [warned] = done.stderr.splitlines()
    assert warned.startswith("shadowvault: warning: ") and "instead" in warned, done.stderr


def test_a_restore_that_restores_nothing_says_so(case, tmp_path):
    """Every index file gone: the root listing cannot be found, and the restore says nothing was
    restored (exit 1), not that 'the others were'."""
    for index_file in (case.repo / "index").iterdir():
        index_file.unlink()
    done = case.cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert done.returncode == 1, done.stderr
    assert "nothing was restored" in done.stderr and "the others were" not in done.stderr


@pytest.mark.parametrize(
    "lie", [{"offset": (1 << 32) - 1}, {"length": 7, "raw_length": 7}, {"type": 1}, {"compressed": True}]
)
def test_repair_packs_finds_blobs_by_the_packs_own_header_when_the_index_lies(tmp_path: Path, lie):
    """An index file that authenticates but places a pack's blobs wrongly (crafted, or written
    wrong) made `repair packs` drop every blob of the intact pack and delete it: data lost that was
    never damaged. It now tries the pack's own header too; the pack's blobs are salvaged."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        snapshot_id, _ = make_snapshot(repo, {"a": b"alpha" * 1000, "b": b"beta"})
        names = repo.written_index_files
    with Repository.open(tmp_path / "repo", PASSWORD, write=True) as repo:
        packs = [p for name in names for p in repo.load_index_file(name).packs]
        data = [p for p in packs if all(b.type == 0 for b in p.blobs)]
        lying = [
            msgspec.structs.replace(p, blobs=[msgspec.structs.replace(b, **lie) for b in p.blobs])
            for p in data
        ]
        repo.save_index_files([*lying, *(p for p in packs if p not in data)])
    for name in names:
        (tmp_path / "repo" / name).unlink()
    with Repository.open(tmp_path / "repo", PASSWORD, write=True, kind="repair") as repo:
        assert not check(repo, read_data_fraction=1.0).ok  # finds the data "damaged" and records it
    with Repository.open(tmp_path / "repo", PASSWORD, write=True, kind="repair") as repo:
        result = repair_packs(repo)
    assert result.blobs_lost == 0 and result.blobs_salvaged == sum(len(p.blobs) for p in data)
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert check(repo, read_data_fraction=1.0).ok
        assert restore_all(repo, snapshot_id)["a"] == b"alpha" * 1000


def _json_lines(done) -> dict:
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("kind", ["data", "tree"])
def test_a_damaged_pack_trailer_is_recorded_and_repair_packs_rewrites_it(case, tmp_path, kind):
    """A flipped byte in the header length: every blob still verifies, but check --read-data
    recorded nothing, so `repair packs` said 'no damaged packs to repair' while check kept failing
    (and a lost index file could not have been rebuilt from that header). Now it is recorded and
    check names the repair."""
    content, subtree = case.ids_of(case.first, b"big.bin" if kind == "data" else b"sub")
    pack = case.pack_of(content[0] if kind == "data" else subtree)
    _flip(pack, pack.stat().st_size - 2)

    found = case.check("--read-data")
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert report["affected_snapshots"] == {}  # every blob verifies: nothing is lost
    assert any("repair packs" in w for w in report["warnings"]), report["warnings"]
    assert any((case.repo / "damage").iterdir())
    still = case.check()  # a plain check knows it from the record
    assert still.returncode == 1 and "repair packs" in still.stdout

    repaired = case.cli("repair", "packs", "--json")
    assert repaired.returncode == 0, repaired.stderr
    result = json.loads(repaired.stdout)
    assert result["packs"] == [pack.name] and result["blobs_lost"] == 0
    assert not pack.exists()
    assert case.check("--read-data").returncode == 0
    case.assert_restores_identically(case.first, tmp_path / "r")


@pytest.mark.parametrize("index_lost_too", [False, True])
def test_repair_index_keeps_a_truncated_packs_entries_for_repair_packs(case, tmp_path, index_lost_too):
    """`repair index` dropped the entries of a pack whose header it could not read (a truncated
    tree pack), readable blobs included, and then `repair packs` had nothing to salvage. It keeps
    them and records the pack, and names `repair packs` next: check's advice to run `repair index`
    before any other repair (an index file lost beside the truncated pack) is safe to follow."""
    _, subtree = case.ids_of(case.first, b"sub")
    pack = case.pack_of(subtree)
    if index_lost_too:
        (case.src / "later.txt").write_text("later\n")
        case.backup()
        newest = max((case.repo / "index").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        newest.unlink()  # the second backup's packs are no longer indexed
    with Repository.open(case.repo, PASSWORD) as repo:
        tree_blobs = [b for b in repo.index.blobs_in({pack.name})[pack.name]]
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])

    found = case.check()
    assert found.returncode == 1
    advice = " ".join(json.loads(found.stdout)["warnings"])
    assert ("repair index" in advice) == index_lost_too, advice
    indexed = case.cli("repair", "index")
    assert indexed.returncode == 0, indexed.stderr
    assert "repair packs" in indexed.stderr + indexed.stdout
    assert "repair snapshots" not in indexed.stderr + indexed.stdout
    again = json.loads(case.check().stdout)["warnings"]
    assert not any("repair index" in w for w in again), again  # the index is whole again
    assert any("repair packs" in w for w in again), again

    repaired = case.cli("repair", "packs", "--json")
    assert repaired.returncode == 0, repaired.stderr
    result = json.loads(repaired.stdout)
    assert result["packs"] == [pack.name]
    assert result["blobs_salvaged"] >= 1 and result["blobs_salvaged"] + result["blobs_lost"] == len(
        tree_blobs
    )
    second = case.backup()  # stores the lost listings again, those of unchanged directories heal
    case.assert_restores_identically(second, tmp_path / "r2")
    # the listings above the source changed since (pytest's own directories): the first stays affected
    assert case.cli("repair", "snapshots", "--forget").returncode == 0
    healed = case.check("--read-data")
    assert healed.returncode == 0, healed.stdout
    assert case.cli("prune").returncode == 0
    assert case.check("--read-data").returncode == 0


def test_an_unindexable_pack_leads_to_forget_not_back_to_repair_index(case, tmp_path):
    """The index file gone and the tree pack truncated: nothing can index its blobs. `repair
    index`, check and prune sent the user back to `repair index` for ever (after `repair
    snapshots`, the originals kept still use what is lost); each now names the way out."""
    _, subtree = case.ids_of(case.first, b"sub")
    pack = case.pack_of(subtree)
    for index_file in (case.repo / "index").iterdir():
        index_file.unlink()
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])

    indexed = case.cli("repair", "index")
    assert indexed.returncode == 0, indexed.stderr
    assert "repair snapshots --forget" in indexed.stderr + indexed.stdout
    found = case.check()
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert any(pack.name[:16] in e and "header cannot be read" in e for e in report["errors"])
    assert not any("before any other repair" in w for w in report["warnings"]), report["warnings"]
    assert any("repair snapshots" in w for w in report["warnings"]), report["warnings"]

    fixed = case.cli("repair", "snapshots")
    assert fixed.returncode == 0, fixed.stderr
    prune = case.cli("prune")
    assert prune.returncode == 1
    assert "repair index" not in prune.stderr.replace("`repair index` cannot help", "")
    assert f"shadowvault forget {case.first[:8]}" in prune.stderr, prune.stderr
    advice = json.loads(case.check().stdout)["warnings"]
    assert any(f"shadowvault forget {case.first[:8]}" in w for w in advice), advice

    assert case.cli("forget", case.first[:8]).returncode == 0
    pruned = case.cli("prune")
    assert pruned.returncode == 0, pruned.stderr
    assert not pack.exists()
    second = case.backup()
    case.assert_restores_identically(second, tmp_path / "r")
    assert case.check("--read-data").returncode == 0
