"""check: a healthy repository passes; damage is found and the affected snapshots are named."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from shadowvault.repo.check import check
from shadowvault.repo.format import BlobType
from shadowvault.repo.prune import REPACK_UNUSED_FRACTION
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree, invalid_name, names_are_safe
from shadowvault.repo.walk import mark_used
from tests.archive.helpers import FAST_KDF
from tests.inprocess_cli import one_error_line, run
from tests.repo.helpers import PASSWORD, env_for, make_snapshot, pack_files, random_files


def _two_snapshots(path):
    with Repository.init(path, PASSWORD, pack_size=256 << 10) as repo:
        shared = random_files(1, 100_000, seed=1)
        first, _ = make_snapshot(repo, {**shared, "only-first": b"A" * 300_000 + bytes(range(256)) * 50})
        big = random_files(1, 2_000_000, seed=2)["file0"]
        second, ids = make_snapshot(repo, {**shared, "only-second": big})
    return first, second, ids["only-second"]


def _pack_holding(repo_path, blob_id):
    with Repository.open(repo_path, PASSWORD) as repo:
        return repo.lookup(blob_id)


def test_healthy_repository_passes(tmp_path, cli):
    _two_snapshots(tmp_path / "repo")
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo, read_data_fraction=1.0)
    assert report.ok, report.errors
    assert report.snapshots == 2 and report.blobs_verified == report.blobs
    result = cli("check", "--read-data", env=env_for(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert "no errors" in result.stdout
    subset = cli("check", "--read-data-subset", "50%", "--json", env=env_for(tmp_path / "repo"))
    assert subset.returncode == 0 and json.loads(subset.stdout)["packs_read"] >= 1
    groups = [
        json.loads(
            cli("check", "--read-data-subset", f"{n}/3", "--json", env=env_for(tmp_path / "repo")).stdout
        )["packs_read"]
        for n in (1, 2, 3)
    ]
    assert sum(groups) == report.packs
    bad = cli("check", "--read-data-subset", "x", env=env_for(tmp_path / "repo"))
    assert bad.returncode == 2 and "percentage" in bad.stderr


def test_check_decodes_each_index_file_once(tmp_path, monkeypatch):
    """The index check walks the trees with and the list of packs it compares with data/ come from
    one reading of the index files (a million blobs: decoding them twice cost time and ~35 MiB)."""
    from shadowvault.repo.master_index import MasterIndex

    _two_snapshots(tmp_path / "repo")
    read: list[str] = []
    load_file = MasterIndex.load_file

    def counted(self: MasterIndex, name: str):
        read.append(name)
        return load_file(self, name)

    monkeypatch.setattr(MasterIndex, "load_file", counted)
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        names = repo.index_files()
        read.clear()
        report = check(repo)
    assert report.ok, report.errors
    assert sorted(read) == sorted(names) and report.packs >= 2


def test_flipped_byte_is_found_and_names_the_snapshot(tmp_path, cli):
    first, second, second_ids = _two_snapshots(tmp_path / "repo")
    location = _pack_holding(tmp_path / "repo", second_ids[0])
    pack = next(p for p in pack_files(tmp_path / "repo") if p.name == location.pack)
    raw = bytearray(pack.read_bytes())
    raw[location.offset + 40] ^= 0x80
    pack.write_bytes(bytes(raw))

    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert check(repo).ok  # structure alone cannot see a flipped bit
        report = check(repo, read_data_fraction=1.0)
    assert not report.ok
    assert set(report.affected_snapshots) == {second}
    assert any(second_ids[0].hex()[:16] in e for e in report.errors)

    result = cli("check", "--read-data", env=env_for(tmp_path / "repo"))
    assert result.returncode == 1
    assert f"snapshot {second[:8]} is affected" in result.stdout
    assert first[:8] not in result.stdout
    assert result.stderr.strip().endswith(f"affected snapshots: {second[:8]}")
    data = json.loads(cli("check", "--read-data", "--json", env=env_for(tmp_path / "repo")).stdout)
    assert list(data["affected_snapshots"]) == [second] and data["ok"] is False


def test_missing_pack_is_found_without_reading_data(tmp_path):
    first, second, second_ids = _two_snapshots(tmp_path / "repo")
    location = _pack_holding(tmp_path / "repo", second_ids[-1])
    next(p for p in pack_files(tmp_path / "repo") if p.name == location.pack).unlink()
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo)
    assert not report.ok
    assert any("is missing" in e for e in report.errors)
    assert second in report.affected_snapshots and first not in report.affected_snapshots


def test_damaged_index_and_snapshot_files_are_reported(tmp_path, cli):
    first, second, _ = _two_snapshots(tmp_path / "repo")
    snapshot_file = tmp_path / "repo" / "snapshots" / first
    raw = bytearray(snapshot_file.read_bytes())
    raw[20] ^= 0x01
    snapshot_file.write_bytes(bytes(raw))
    index_files = list((tmp_path / "repo" / "index").iterdir())
    for index_file in index_files:
        raw = bytearray(index_file.read_bytes())
        raw[-5] ^= 0x01
        index_file.write_bytes(bytes(raw))
    result = cli("check", "--json", env=env_for(tmp_path / "repo"))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert all(any(f.name in e for e in data["errors"]) for f in index_files)
    assert any(f"snapshot {first[:8]}" in e for e in data["errors"])
    assert set(data["affected_snapshots"]) == {first, second}
    prune = cli("prune", env=env_for(tmp_path / "repo"))
    assert prune.returncode == 1 and "prune refuses" in prune.stderr


def test_an_index_entry_with_a_crafted_id_or_size_is_a_damaged_index_file(tmp_path, cli):
    """Sealed with the key but crafted (a 31-byte blob id, an offset past 32 bits, a blob type
    that does not exist): the file is reported as undecodable, never joined misaligned into the
    index; open and check keep going."""
    from shadowvault.repo.format import IndexPack, PackBlob

    _, second, _ = _two_snapshots(tmp_path / "repo")
    crafted = [
        IndexPack(id="a" * 64, size=10, blobs=[PackBlob(0, b"x" * 31, 0, 10, 10, False)]),
        IndexPack(id="b" * 64, size=10, blobs=[PackBlob(0, b"y" * 32, 1 << 33, 10, 10, False)]),
        IndexPack(id="c" * 64, size=10, blobs=[PackBlob(2, b"z" * 32, 0, 10, 10, False)]),
        IndexPack(id="d" * 64, size=10, blobs=[PackBlob(200, b"w" * 32, 0, 10, 10, False)]),
    ]
    with Repository.open(tmp_path / "repo", PASSWORD, write=True) as repo:
        names = [repo.save_index_files([pack])[0] for pack in crafted]
    result = cli("check", "--json", env=env_for(tmp_path / "repo"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = json.loads(result.stdout)["errors"]
    for name in names:
        assert any(name in e and "cannot be decoded" in e for e in errors), errors
    restored = cli("ls", second, env=env_for(tmp_path / "repo"))
    assert restored.returncode == 0, restored.stderr


def test_blobs_a_forget_left_unreferenced_are_counted_per_pack(tmp_path):
    """What check counts as unreferenced, and as freed by prune, is what a plain set of every
    referenced id says, pack by pack."""
    _first, second, _ = _two_snapshots(tmp_path / "repo")
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        repo.remove_snapshot(second)
        referenced: set[bytes] = set()
        mark_used(repo, repo.list_snapshots(), referenced)
        by_pack: dict[str, list[bytes]] = {}
        for blob_id in repo.index.blob_ids():
            for location in repo.index.locations(blob_id):
                by_pack.setdefault(location.pack, []).append(blob_id)
        freed = 0
        for blob_ids in by_pack.values():
            unused = sum(blob_id not in referenced for blob_id in blob_ids)
            if unused / len(blob_ids) >= REPACK_UNUSED_FRACTION:
                freed += unused
        report = check(repo)
    assert report.ok, report.errors
    assert report.unreferenced_blobs == sum(b not in referenced for b in repo.index.blob_ids()) > 0
    assert freed > 0
    assert f"{freed} blobs are not referenced by any snapshot" in " ".join(report.warnings)


@pytest.mark.parametrize(
    ("names", "safe"),
    [
        ([b"a", b"b", b".hidden", b"..."], True),
        ([b"a", b"a"], False),
        ([b"a", b".."], False),
        ([b"."], False),
        ([b""], False),
        ([b"a/b"], False),
        ([b"a\0b"], False),
        ([], False),  # nothing to judge: looked at one by one (there is nothing)
    ],
)
def test_names_are_judged_safe_only_when_each_is(names, safe):
    assert names_are_safe(names) is safe
    assert safe is (bool(names) and len(set(names)) == len(names) and not any(map(invalid_name, names)))


def test_check_reports_each_entry_a_restore_would_refuse(tmp_path):
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        blob = repo.save_blob(BlobType.DATA, b"x")
        names = [b"good", b"..", b"a/b", b"dup", b"dup", b"nul\0"]
        root = repo.save_tree(Tree(nodes=[Node(name=n, type="file", size=1, content=[blob]) for n in names]))
        crafted = repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/"], tree=root))
        clean = repo.save_tree(Tree(nodes=[Node(name=b"good", type="file", size=1, content=[blob])]))
        repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/"], tree=clean))
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo)
    unsafe = [e for e in report.errors if "unsafe name" in e]
    assert len(unsafe) == 4, report.errors
    assert {"'\\x2e\\x2e'", "'a\\x2fb'", "'dup'", "'nul\\x00'"} == {  # as ls shows them, never a path
        e.split("unsafe name ")[1].split(":")[0] for e in unsafe
    }
    assert list(report.affected_snapshots) == [crafted]  # which snapshot to forget
    assert any("forget" in w and "unsafe names" in w for w in report.warnings)
    assert not any("repair snapshots" in w for w in report.warnings)


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": -1},
        {"mode": 1 << 40},
        {"uid": -1},
        {"gid": 1 << 32},
        {"type": "chardev", "rdev": -1, "content": []},
    ],
)
def test_an_entry_out_of_what_stat_gives_is_a_damaged_tree(tmp_path, fields):
    """Such values reached chmod, chown, mknod and tar headers as an OverflowError (`ls --long` and
    `dump` ended in an internal error): the tree does not decode, so every reader names it."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        blob = repo.save_blob(BlobType.DATA, b"x")
        node = Node(**{"name": b"f", "type": "file", "size": 1, "content": [blob], **fields})
        root = repo.save_tree(Tree(nodes=[node]))
        crafted = repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/"], tree=root))
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo)
    assert any("cannot be decoded" in e for e in report.errors), report.errors
    assert list(report.affected_snapshots) == [crafted]
    for command in (("ls", "--long", crafted), ("dump", crafted, "/")):
        line = one_error_line(run(env_for(tmp_path / "repo"), *command))
        assert "cannot be decoded" in line and "internal error" not in line


def test_a_snapshot_with_an_impossible_time_is_damaged_and_a_strange_summary_is_shown(tmp_path):
    """A time of NaN, infinity or 1e300 and a summary whose size is no count ended `snapshots` and
    `forget` in an internal error: the first are damaged snapshots (skipped, named), the second
    is listed without a size."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        root = repo.save_tree(Tree(nodes=[]))
        bad = [
            repo.save_snapshot(Snapshot(time=when, host="h", paths=["/"], tree=root))
            for when in (float("nan"), float("inf"), 1e300, -1e300)
        ]
        strange = repo.save_snapshot(
            Snapshot(time=time.time(), host="h", paths=["/"], tree=root, summary={"bytes": "lots"})
        )
    env = env_for(tmp_path / "repo")
    for command in (("snapshots",), ("forget", "--keep-last", "1", "--dry-run"), ("snapshots", "--json")):
        result = run(env, *command)
        assert result.exit_code == 0, result.stderr
    listed = json.loads(run(env, "snapshots", "--json").stdout)
    assert [(s["id"], s["size"]) for s in listed] == [(strange, None)]
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert [sid for sid, _ in repo.list_snapshots()] == [strange]
        assert set(repo.damaged_snapshots) == set(bad)
        assert set(check(repo).affected_snapshots) == set(bad)


def test_a_file_whose_size_is_not_its_blobs_sizes_is_an_error_naming_its_path(tmp_path):
    """check compared no file's recorded size with its blobs' (restic's "metadata size (N) and
    sum of blob sizes (M) do not match"): it does, from the index, naming the snapshot and path;
    a restore writes the content stored and says so, with --verify too."""
    one, two = b"x" * 1000, bytes(range(256)) * 10
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        blobs = [repo.save_blob(BlobType.DATA, one), repo.save_blob(BlobType.DATA, two)]
        nodes = [
            Node(name=b"hollow", type="file", size=7),
            Node(name=b"longer", type="file", size=5000, content=blobs),
            Node(name=b"right", type="file", size=len(one), content=blobs[:1]),
            Node(name=b"shorter", type="file", size=10, content=blobs[1:]),
        ]
        inner = repo.save_tree(Tree(nodes=nodes))
        root = repo.save_tree(Tree(nodes=[Node(name=b"srv", type="dir", subtree=inner)]))
        first = repo.save_snapshot(Snapshot(time=time.time() - 60, host="h", paths=["/srv"], tree=root))
        second = repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/srv"], tree=root))
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo)
    assert sorted(e for e in report.errors if "do not match" in e) == [
        f"snapshot {first[:8]}: /srv/hollow: metadata size (7) and sum of blob sizes (0) do not"
        " match (a restore writes the 0 bytes stored)",
        f"snapshot {first[:8]}: /srv/longer: metadata size (5000) and sum of blob sizes (3560) do not"
        " match (a restore writes the 3560 bytes stored)",
        f"snapshot {first[:8]}: /srv/shorter: metadata size (10) and sum of blob sizes (2560) do not"
        " match (a restore writes the 2560 bytes stored)",
    ]
    assert set(report.affected_snapshots) == {first, second}
    env = env_for(tmp_path / "repo")
    assert run(env, "check").exit_code == 1
    for verify in ((), ("--verify",)):
        target = tmp_path / f"out{len(verify)}"
        restored = run(env, "restore", second, "--target", target, *verify)
        assert restored.exit_code == 0, restored.stderr
        assert (target / "srv" / "longer").read_bytes() == one + two
        assert (target / "srv" / "shorter").read_bytes() == two
        warned = [line for line in restored.stderr.splitlines() if "restored as stored" in line]
        assert len(warned) == 3 and all("while its snapshot records" in line for line in warned)
        assert f"{target}/srv/longer: restored as stored, 3560 bytes" in restored.stderr


@pytest.mark.parametrize("tree", [b"", b"\x01" * 31, b"\x01" * 33], ids=["none", "short", "long"])
def test_a_snapshot_without_a_root_tree_is_damaged_not_empty(tmp_path, tree, caplog):
    """A snapshot with no tree (or a tree id of the wrong length) listed and checked as empty while
    restore failed on "blob  is not in the repository index": it is a damaged snapshot, named alike
    by every command, and `forget ID` removes it."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        kept, _ = make_snapshot(repo, {"a": b"alpha"})
        bad = repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/"], tree=tree))
    env = env_for(tmp_path / "repo")
    why = f"snapshot {bad[:8]} is damaged (it names no valid root tree)"
    listed = run(env, "snapshots", "--json")
    assert listed.exit_code == 0 and why in caplog.text  # the warning (a log line in process)
    assert [s["id"] for s in json.loads(listed.stdout)] == [kept]
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo)
    assert list(report.affected_snapshots) == [bad] and any(why in e for e in report.errors)
    assert run(env, "check").exit_code == 1
    restored = run(env, "restore", bad, "--target", tmp_path / "out")
    assert why in one_error_line(restored)
    assert run(env, "forget", bad[:8]).exit_code == 0
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert repo.snapshot_ids() == [kept] and check(repo).ok


@pytest.mark.parametrize(
    "crafted", [{"id": "../../../x"}, {"id": ""}, {"id": "zz" + "0" * 62}, {"id": "ab12"}, {"size": -1}]
)
def test_an_index_file_with_a_crafted_pack_id_or_size_is_rebuilt_by_repair_index(tmp_path, crafted):
    """A pack id that is not 64 hex digits stopped every command with one error, `repair index`
    (the documented remedy) included, and a negative pack size ended check in an internal error:
    the file is a damaged index file, skipped with a warning, and `repair index` rebuilds it."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        snapshot_id, _ = make_snapshot(repo, {"a": b"alpha"})
        names = repo.written_index_files
    with Repository.open(tmp_path / "repo", PASSWORD, write=True) as repo:
        packs = [p for name in names for p in repo.load_index_file(name).packs]
        repo.save_index_files([msgspec.structs.replace(p, **crafted) for p in packs])
    for name in names:
        (tmp_path / "repo" / name).unlink()
    env = env_for(tmp_path / "repo")
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        report = check(repo)
    assert any("cannot be decoded" in e for e in report.errors), report.errors
    assert run(env, "repair", "index").exit_code == 0
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert check(repo, read_data_fraction=1.0).ok
    assert run(env, "ls", snapshot_id).exit_code == 0


def test_a_snapshot_file_in_a_subdirectory_is_named_by_check_and_listed_by_nothing(env, tmp_path):
    """A snapshot is a file right under snapshots/: one further down was looked up by its last
    name, not found, and skipped without a word. Check names it to be deleted; the listing and the
    other snapshots are unchanged."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    assert run(env, "backup", "--provider", "none", "-q", tmp_path / "src").exit_code == 0
    snapshots = tmp_path / "repo" / "snapshots"
    [stored] = list(snapshots.iterdir())
    (snapshots / "sub").mkdir()
    (snapshots / "sub" / stored.name).write_bytes(stored.read_bytes())  # a copy, out of place
    listed = json.loads(run(env, "snapshots", "--json").stdout)
    assert [s["id"] for s in listed] == [stored.name]
    checked = run(env, "check", "--json")
    assert checked.exit_code == 0, checked.stderr
    assert json.loads(checked.stdout)["warnings"] == [
        f"snapshots/sub/{stored.name} is not a snapshot file (snapshot files are right under"
        f" snapshots/): no command reads it or can remove it; delete it from {tmp_path / 'repo'} yourself"
    ]


def test_the_summary_counts_errors_in_the_right_number():
    from shadowvault.repo.check_report import CheckReport

    assert CheckReport(errors=["x"]).summary() == "1 error found; affected snapshots: none"
    assert CheckReport(errors=["x", "y"]).summary().startswith("2 errors found;")
