"""prune: unreferenced data goes, referenced data stays, and a running backup is never broken."""

from __future__ import annotations

import os
import time

import pytest

from shadowvault.errors import RepositoryError
from shadowvault.repo.check import check
from shadowvault.repo.format import BlobType
from shadowvault.repo.prune import PruneResult, prune
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree
from tests.repo.helpers import PASSWORD, make_snapshot, pack_files, random_files, restore_all


def _size(path) -> int:
    return sum(p.stat().st_size for p in pack_files(path))


def _prune(path, **kw):
    with Repository.open(path, PASSWORD, write=True, kind="prune") as repo:
        return prune(repo, **kw)


def test_forgotten_data_is_deleted_and_the_rest_restores(tmp_path):
    path = tmp_path / "repo"
    keep_files = random_files(3, 400_000, seed=1)
    with Repository.init(path, PASSWORD, pack_size=512 << 10) as repo:
        gone, _ = make_snapshot(repo, random_files(4, 600_000, seed=2))
        kept, _ = make_snapshot(repo, keep_files)
        repo.remove_snapshot(gone)
    before = _size(path)
    dry = _prune(path, dry_run=True)
    assert dry.packs_deleted > 0 and _size(path) == before
    result = _prune(path)
    assert result.packs_deleted == dry.packs_deleted and result.packs_pending == 0
    assert _size(path) < before - 2_000_000
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, kept) == {**keep_files, "sub/inner": b"inner"}
        assert check(repo, read_data_fraction=1.0).ok
        assert len(repo.index_files()) == 1  # index files were consolidated
    assert _prune(path).packs_deleted == 0


def test_partly_used_packs_are_repacked(tmp_path):
    path = tmp_path / "repo"
    keep = random_files(2, 50_000, seed=3)
    with Repository.init(path, PASSWORD) as repo:  # 16 MiB packs: everything in one data pack
        gone, _ = make_snapshot(repo, random_files(5, 200_000, seed=4))
        kept, _ = make_snapshot(repo, keep)
        repo.remove_snapshot(gone)
    before = _size(path)
    result = _prune(path)
    assert result.packs_repacked >= 1 and result.blobs_repacked >= 2
    assert _size(path) < before - 900_000
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, kept) == {**keep, "sub/inner": b"inner"}
        assert check(repo, read_data_fraction=1.0).ok


def test_a_running_backup_keeps_what_it_deduplicated_against(tmp_path):
    """The race prune must survive: a backup that loaded the index before prune reuses a blob that
    no snapshot referenced when prune looked, and commits a snapshot after prune ran."""
    path = tmp_path / "repo"
    old_content = random_files(1, 700_000, seed=5)["file0"]
    with Repository.init(path, PASSWORD, pack_size=256 << 10) as repo:
        other = random_files(1, 700_000, seed=6)["file0"]
        gone, ids = make_snapshot(repo, {"old": old_content, "other": other})
        repo.remove_snapshot(gone)
    time.sleep(1.1)  # the local backend's clock margin: packs this old predate the backup
    backup = Repository.open(path, PASSWORD, write=True)  # a backup starts: session, then index
    try:
        first = _prune(path)
        assert first.packs_pending > 0 and first.packs_deleted == 0  # it must wait for the backup
        # The backup deduplicates "old" against the index it loaded, and commits.
        reused = [backup.save_blob(BlobType.DATA, c) for c in backup.chunker.chunk_bytes(old_content)]
        assert reused == ids["old"] and backup.stats.blobs_added == 0
        root = backup.save_tree(
            Tree(nodes=[Node(name=b"old", type="file", size=len(old_content), content=reused)])
        )
        new = backup.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/x"], tree=root))
    finally:
        backup.close()
    with Repository.open(path, PASSWORD, write=True) as later:  # a backup started after prune
        assert not later.has_blob(ids["other"][0])  # pending data is never deduplicated against
    second = _prune(path)
    assert second.packs_kept_referenced >= 1 and second.packs_deleted >= 1 and second.packs_pending == 0
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, new) == {"old": old_content}
        report = check(repo, read_data_fraction=1.0)
        assert report.ok, report.errors
        assert report.pending_packs == 0


def test_a_stale_session_does_not_block_prune_and_cannot_commit(tmp_path):
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        gone, _ = make_snapshot(repo, random_files(1, 300_000, seed=7))
        repo.remove_snapshot(gone)
    time.sleep(1.1)
    backup = Repository.open(path, PASSWORD, write=True)
    try:
        session_file = path / backup.session.name
        old = time.time() - 3600
        os.utime(session_file, (old, old))  # as if the backup had hung for an hour
        result = _prune(path)
        assert result.packs_pending == 0 and result.packs_deleted >= 1
        with pytest.raises(RepositoryError, match="run the backup again"):
            backup.save_snapshot(Snapshot(time=time.time(), host="h", tree=b""))
    finally:
        backup.close(flush=False)
    with Repository.open(path, PASSWORD) as repo:
        assert repo.list_snapshots() == []
        assert check(repo).ok


def test_a_session_that_lapsed_stays_expired_even_if_refreshed_later(tmp_path):
    from shadowvault.repo import session as session_module

    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        repo.session.last_refresh -= session_module.SAFE_FOR + 1  # as if the process had been stopped
        assert repo.session._lapsed()
        repo.session.last_refresh = session_module._clock()
        with pytest.raises(RepositoryError, match="run the backup again"):
            repo.save_snapshot(Snapshot(time=time.time(), host="h", tree=b""))
        repo.close(flush=False)


def _after_listing(repo: Repository, prefix: str, action) -> None:
    """Run `action` right after `repo` lists `prefix` the first time (a deterministic interleaving
    of a concurrent writer with one step of prune; the listing itself is the real one)."""
    real_list = repo.backend.list
    fired = []

    def listing(wanted: str):
        found = list(real_list(wanted))
        if wanted == prefix and not fired:
            fired.append(True)
            action()
        return iter(found)

    repo.backend.list = listing


@pytest.mark.parametrize("tree_in_window", [True, False], ids=["tree-and-data", "data-only"])
def test_a_pack_indexed_after_prune_listed_packs_keeps_its_index_entry(tmp_path, tree_in_window):
    """A backup finishing a pack and its index file between prune's pack listing (step 1) and its
    index reading (step 3), then committing its snapshot after prune read the snapshots, must not
    lose the index entry (prune used to take the pack for a long-gone one and drop it). With only
    data packs in that window the next prune then deleted them as unindexed: silent data loss."""
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD).close()
    files = random_files(2, 300_000, seed=7)
    with Repository.open(path, PASSWORD, write=True) as backup:
        root = []

        def save_tree() -> None:
            root.append(
                backup.save_tree(
                    Tree(
                        nodes=[
                            Node(
                                name=name.encode(),
                                type="file",
                                size=len(data),
                                content=[backup.blob_id(data)],
                            )
                            for name, data in sorted(files.items())
                        ]
                    )
                )
            )

        def backup_flushes() -> None:  # packs, then their index file: all after prune listed data/
            for data in files.values():
                backup.save_blob(BlobType.DATA, data)
            if tree_in_window:
                save_tree()
            backup.flush()

        with Repository.open(path, PASSWORD, write=True, kind="prune") as pruner:
            _after_listing(pruner, "data/", backup_flushes)
            prune(pruner)
        if not tree_in_window:
            save_tree()
        snapshot_id = backup.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/d"], tree=root[0]))
    _prune(path)  # no backup runs now; nothing referenced may go
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, snapshot_id) == files
        report = check(repo, read_data_fraction=1.0)
        assert report.ok, report.errors


def test_a_reader_sees_index_files_merged_while_it_reads_the_index(tmp_path):
    """A writer merges its index files at close (the merged one first, then the old ones go). A
    reader (prune's tree walk, check, restore) that listed the old ones must find the merged one."""
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD).close()
    backup = Repository.open(path, PASSWORD, write=True)
    for seed in (1, 2):  # two index files
        backup.save_blob(BlobType.DATA, random_files(1, 1000, seed=seed)["file0"])
        backup.flush()
    snapshot_id, _ = make_snapshot(backup, {"a": b"first file", "b": random_files(1, 200_000)["file0"]})
    assert len([n for n in backup.written_index_files if n.startswith("index/")]) >= 2
    with Repository.open(path, PASSWORD) as reader:
        _after_listing(reader, "index/", backup.close)  # the merge happens between listing and reading
        reader.reload_index()
        assert len(reader.index_files()) == 1  # the merge did happen meanwhile
        assert restore_all(reader, snapshot_id)["a"] == b"first file"


def test_a_reader_restores_a_snapshot_saved_after_it_opened(tmp_path):
    """A reader's index is read at open; a backup's snapshot saved later references blobs only a
    newer index file lists. Restoring (and checking) it must not call them missing."""
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD).close()
    files = random_files(2, 100_000, seed=3)
    with Repository.open(path, PASSWORD) as reader:
        with Repository.open(path, PASSWORD, write=True) as backup:
            snapshot_id, _ = make_snapshot(backup, files)
        assert [sid for sid, _ in reader.list_snapshots()] == [snapshot_id]
        restored = restore_all(reader, snapshot_id)
        assert restored == {**files, "sub/inner": b"inner"}


def test_a_session_file_whose_temp_file_prune_removed_is_written_again(tmp_path):
    """A backup's session file is itself written to tmp/ first, before any session protects it: a
    prune listing tmp/ then may remove it as a leftover before the rename. The backup must start."""
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD).close()
    backup = Repository.open(path, PASSWORD)
    real_ensure_dir = backup.backend._ensure_dir
    pruned = []

    def prune_before_the_rename(directory):
        if directory.name == "sessions" and not pruned:
            pruned.append(_prune(path))
        real_ensure_dir(directory)

    backup.backend._ensure_dir = prune_before_the_rename
    with backup:
        backup.save_blob(BlobType.DATA, b"first blob")  # starts the session
        assert pruned[0].temp_deleted == 1  # the session's temp file was taken for a leftover
        snapshot_id, _ = make_snapshot(backup, {"a": b"content"})
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, snapshot_id)["a"] == b"content"


def test_the_summary_counts_in_words_and_names_repacking_only_when_blobs_moved():
    one = PruneResult(dry_run=False, packs_deleted=1, bytes_deleted=10)
    assert one.summary() == "deleted 1 pack (10 B)"
    both = PruneResult(dry_run=True, packs_deleted=3, packs_repacked=1, blobs_repacked=12)
    assert both.summary() == "would delete 3 packs (0 B), would repack 1 pack (12 blobs kept)"
    many = PruneResult(dry_run=False, packs_deleted=40, bytes_deleted=3 * 2**30 // 2)
    assert many.summary() == "deleted 40 packs (1.5 GiB)"  # a size as backup and stats print it
