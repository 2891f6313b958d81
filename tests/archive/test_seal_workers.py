"""Small files sealed in worker processes (archive/seal_workers.py): the same snapshot as sealed here.

A tree of many small files (empty ones, zeros, duplicates, owners, modes, xattrs) backed up with
worker processes restores identical and deduplicates as a backup without them; a worker that dies
is replaced by reading in the backup's own process; what a worker returns decrypts to the file.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from pathlib import Path

import msgspec
import pytest

from shadowvault.archive.file_reader import BATCH_FILES, WORKERS_AFTER
from shadowvault.archive.seal_workers import BATCHES_QUEUED, SealWorkers, WorkerGone
from shadowvault.archive.small_files import FileError, open_ahead
from shadowvault.archive.walker import Archiver, Source, WalkStats
from shadowvault.repo.compression import decompress
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.sealing import MasterKey, Sealer, blob_aad
from shadowvault.repo.tree import Node
from tests.archive.helpers import (
    all_end,
    archive,
    assert_same_tree,
    cli_with_workers,
    in_threads,
    new_repo,
    restore,
)
from tests.fixtures.loopfs import LoopFs

FILES = (WORKERS_AFTER + 2) * BATCH_FILES  # enough batches for the workers to start and do most


def small_tree(root: Path) -> None:
    """Files of 0 B to 60 KiB in a few directories: text, zeros, duplicates, owners, modes, xattrs."""
    for i in range(FILES):
        directory = root / f"d{i % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"f{i:05}"
        kind = i % 5
        if kind == 0:
            data = b""
        elif kind == 1:
            data = bytes(4096 * (i % 3 + 1))  # zeros
        elif kind == 2:
            data = b"the same file again\n" * 50  # duplicates
        else:
            data = (f"file {i} " * (i % 700 + 1)).encode()
        path.write_bytes(data)
        os.chmod(path, 0o600 if i % 2 else 0o644)
        if i % 11 == 0:
            os.chown(path, 1000 + i % 3, 100)
        if i % 13 == 0:
            os.setxattr(path, "user.note", f"n{i}".encode())


def nodes_of(repo: Repository, tree_id: bytes, path: bytes = b"") -> dict[bytes, Node]:
    """Every node below a tree by path, without access times (listing a directory may set its
    atime between two backups) and subtree ids (which hold those atimes)."""
    found: dict[bytes, Node] = {}
    for node in repo.load_tree(tree_id).nodes:
        here = path + b"/" + node.name
        if node.subtree is not None:
            found.update(nodes_of(repo, node.subtree, here))
        found[here] = msgspec.structs.replace(node, atime_ns=0, subtree=None)
    return found


def test_a_tree_sealed_by_workers_restores_identical_and_deduplicates(ext4: LoopFs):
    source = ext4.mount / "src"
    small_tree(source)
    with_workers = new_repo(ext4.mount / "repo")

    stats = WalkStats()
    raw = os.fsencode(source)
    archiver = Archiver(with_workers, stats=stats, seal_processes=2)
    root = archiver.archive([Source(raw, raw)])
    with_workers.flush()
    assert archiver.reader.sealing_processes == 2
    assert stats.files_done == FILES and not stats.errors

    # the same tree sealed here, into the same repository, without a parent: the same snapshot
    # (what is above the source, /tmp among it, changes as other tests make files: not compared)
    here_root, _ = archive(with_workers, source, seal_processes=0)
    below = raw + b"/"
    here = {path: node for path, node in nodes_of(with_workers, here_root).items() if path.startswith(below)}
    there = {path: node for path, node in nodes_of(with_workers, root).items() if path.startswith(below)}
    assert len(here) > FILES and here == there, "same content ids, same metadata"

    restore(with_workers, root, ext4.mount / "out")
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))


def test_a_worker_that_dies_leaves_its_batches_to_the_backup(ext4: LoopFs):
    source = ext4.mount / "src"
    small_tree(source)
    repo = new_repo(ext4.mount / "repo")
    key = repo.sealing_keys()
    assert key is not None
    workers = SealWorkers(key, 1 << 19, 1)
    try:
        first = workers.seal([os.fsencode(source / "d3" / "f00003")])[0]
        assert first.error is None and first.size > 0
        os.kill(workers.pids[0], signal.SIGKILL)
        with pytest.raises(WorkerGone):
            workers.seal([os.fsencode(source / "d3" / "f00003")])
    finally:
        workers.shutdown()

    # in a backup: workers killed as soon as they start; every file is still stored, once
    stats = WalkStats()
    raw = os.fsencode(source)
    archiver = Archiver(repo, stats=stats, seal_processes=2)
    real_start = SealWorkers.__init__

    def start_then_die(self: SealWorkers, *args: object) -> None:
        real_start(self, *args)
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)

    SealWorkers.__init__ = start_then_die  # type: ignore[method-assign]
    try:
        root = archiver.archive([Source(raw, raw)])
    finally:
        SealWorkers.__init__ = real_start  # type: ignore[method-assign]
    repo.flush()
    assert stats.files_done == FILES and not stats.errors
    restore(repo, root, ext4.mount / "out")
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))


def test_what_a_worker_returns(ext4: LoopFs):
    repo = new_repo(ext4.mount / "repo")
    key = repo.sealing_keys()
    assert key is not None
    text = ext4.mount / "text"
    text.write_bytes(b"hello " * 1000)
    zeros = ext4.mount / "zeros"
    zeros.write_bytes(bytes(5000))
    large = ext4.mount / "large"
    large.write_bytes(b"x" * 70_000)
    directory = ext4.mount / "dir"
    directory.mkdir()
    workers = SealWorkers(key, 65_536, 1)
    try:
        got = workers.seal([os.fsencode(p) for p in (text, zeros, large, ext4.mount / "gone", directory)])
    finally:
        workers.shutdown()
    sealed_text, sealed_zeros, too_large, missing, not_a_file = got
    assert sealed_text.size == 6000 and sealed_text.compressed
    assert sealed_text.inode == text.stat().st_ino
    plain = Sealer(key).open(sealed_text.sealed, blob_aad(BlobType.DATA, sealed_text.blob_id), "blob")
    assert decompress(plain, 6000, "blob") == text.read_bytes()
    assert repo.blob_id(text.read_bytes()) == sealed_text.blob_id
    assert sealed_zeros.zeros and sealed_zeros.size == 5000 and not sealed_zeros.sealed
    assert too_large.large
    assert missing.error == "No such file or directory"
    assert not_a_file.error == "changed into something that is not a regular file"


def test_a_batch_is_opened_ahead_within_the_descriptors_there_are(ext4: LoopFs):
    """Every file of a batch is opened (and its reading started) before the first is read; a file
    that cannot be opened is its own error, and once no descriptor is left the rest stay paths,
    opened in their turn, never reported as unreadable."""
    paths = []
    for i in range(10):
        path = ext4.mount / f"f{i}"
        path.write_bytes(b"%d" % i * 100)
        paths.append(os.fsencode(path))
    paths.insert(0, os.fsencode(ext4.mount / "gone"))  # first: the lowest free descriptor is there for it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 3, hard))  # room for one to three more
    try:
        opened = open_ahead(paths, 65_536)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert isinstance(opened[0], FileError) and str(opened[0]) == "No such file or directory"
        descriptors = [each for each in opened if isinstance(each, int)]
        assert 1 <= len(descriptors) <= 3  # the rest were left to be opened in their turn
        left = len(descriptors) + 1
        assert opened[1:left] == descriptors and opened[left:] == paths[left:]
        assert os.pread(descriptors[0], 100, 0) == b"0" * 100
    finally:
        for each in opened:
            if isinstance(each, int):
                os.close(each)


def test_an_interrupted_backup_leaves_no_worker_and_a_valid_repository(ext4: LoopFs, env, cli):
    """Ctrl-C while workers seal: exit 130, every worker gone with the backup, `check` passes."""
    source = ext4.mount / "src"
    for n in range(8):
        small_tree(source / f"part{n}")
    args = ["backup", "--provider", "none", str(source)]
    backup, workers = cli_with_workers(args, env, b"archive.seal_worker")
    assert workers, "the backup of ~5,000 small files started seal workers"
    backup.send_signal(signal.SIGINT)
    _, err = backup.communicate(timeout=120)
    assert backup.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] in (
        "shadowvault: error: aborted",
        "shadowvault: error: interrupted",
    ), err
    for pid in workers:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), f"seal worker {pid} outlived the backup"
    checked = cli("check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_batches_queued_in_one_worker_each_get_their_own_answer(tmp_path: Path):
    """One worker holds BATCHES_QUEUED batches at once; many threads seal through it and each takes
    the answer to its own batch (answers come back in the order the batches were sent)."""
    sizes = {}
    for n in range(60):
        path = tmp_path / f"f{n:02}"
        path.write_bytes(b"%d " % n * (n * 13 + 1))
        sizes[os.fsencode(path)] = path.stat().st_size
    names = sorted(sizes)
    workers = SealWorkers(MasterKey.generate(), 1 << 19, 1)
    wrong: list[str] = []

    def seal_many(thread: int) -> None:
        for n in range(30):
            batch = [names[(thread * 7 + n + k) % len(names)] for k in range(1 + (thread + n) % 9)]
            got = workers.seal(batch)
            if [sealed.size for sealed in got] != [sizes[path] for path in batch]:
                wrong.append(f"thread {thread}, batch {n}")

    try:
        assert in_threads(seal_many, 3 * BATCHES_QUEUED), "a thread waits for its answer forever"
        assert not wrong, wrong[:3]
    finally:
        workers.shutdown()


def test_a_worker_killed_with_batches_queued_fails_each_over_without_a_hang(tmp_path: Path):
    """The worker is stopped (SIGSTOP) while two threads send it a batch each, then killed: both
    learn it ended (their batches are then read in the backup's process), and the pool knows it
    has no worker left."""
    path = tmp_path / "file"
    path.write_bytes(b"content")
    workers = SealWorkers(MasterKey.generate(), 1 << 19, 1)
    outcomes: list[str] = []

    def send() -> None:
        try:
            workers.seal([os.fsencode(path)])
            outcomes.append("answered")
        except WorkerGone:
            outcomes.append("gone")

    try:
        os.kill(workers.pids[0], signal.SIGSTOP)
        threads = [threading.Thread(target=send) for _ in range(BATCHES_QUEUED)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert outcomes == [], "both batches wait with the stopped worker"
        os.kill(workers.pids[0], signal.SIGKILL)
        assert all_end(threads, 60), "a thread waits on a dead worker"
        assert outcomes == ["gone"] * BATCHES_QUEUED
        with pytest.raises(WorkerGone):
            workers.seal([os.fsencode(path)])
    finally:
        workers.shutdown()
