"""Restore workers (archive/restore_workers.py; the worker's side: restore_worker.py): pack ranges
decoded, verified and written into the restore's files by other processes. What a user checks: the
restored tree is identical, --verify holds, a damaged blob fails only its file (and is recorded),
and a worker that dies loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shadowvault.archive.restore import Restorer
from shadowvault.archive.restore_content import ContentBatch
from shadowvault.archive.restore_direct import DirectFile, DirectFiles
from shadowvault.archive.restore_entries import EntryWriter
from shadowvault.archive.restore_plan import FileWrite
from shadowvault.archive.restore_worker import (
    FDS_PER_TASK,
    READ_GAP,
    READ_WINDOW,
    BlobDone,
    Task,
    TaskBlob,
    _windows,
)
from shadowvault.archive.restore_workers import (
    MIN_FDS_PER_TASK,
    PROCESSES_ENV,
    TASKS_QUEUED,
    WORTH_FILES,
    RestoreWorkers,
    WorkerGone,
)
from shadowvault.repo.chunker import MAX_SIZE
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.sealing import MasterKey
from shadowvault.repo.tree import Node, Tree
from tests.archive.helpers import (
    all_end,
    archive,
    assert_same_tree,
    cli_with_workers,
    in_threads,
    new_repo,
    whole_files,
)
from tests.fixtures.loopfs import LoopFs, loop_filesystem

SAME = FDS_PER_TASK + 72  # files of one content: one blob written by more than one task
TEXTS = WORTH_FILES * 2


def many_files(root: Path, *, large: bool = True) -> list[Path]:
    """Text files, SAME identical ones, a file of several chunks and a sparse one (when `large`), a
    hard link, odd modes, owners and an xattr; the paths of the text files."""
    texts = []
    for i in range(TEXTS):
        path = root / f"d{i % 5}" / f"text{i:04}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((f"line {i} " * (i * 37 % 3000 + 1)).encode())
        os.chmod(path, 0o600 if i % 2 else 0o640)
        if i % 9 == 0:
            os.chown(path, 1000 + i % 3, 100)
        texts.append(path)
    for i in range(SAME):
        (root / "same").mkdir(exist_ok=True)
        (root / "same" / f"copy{i:04}").write_bytes(b"one content in many files\n" * 100)
    if large:
        (root / "large").write_bytes(os.urandom(MAX_SIZE + (3 << 20)))  # two chunks or more
        with open(root / "sparse", "wb") as f:
            f.truncate(64 << 20)
            f.seek(32 << 20)
            f.write(os.urandom(1 << 20))
    os.link(root / "d1" / "text0001", root / "hardlink")
    os.setxattr(root / "d2" / "text0002", "user.note", b"kept")
    return texts


def _gone(pids: list[int]) -> bool:
    for _ in range(100):
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _temporaries(root: Path) -> list[str]:
    return [name for _, dirs, files in os.walk(root) for name in dirs + files if name.startswith(".svtmp-")]


def _count_made(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The names of the files workers made whole, as the restore's process learns of them (from a
    content batch's task, or sent straight from the walk: restore_direct.py)."""
    made: list[bytes] = []
    real = ContentBatch.made
    real_direct = DirectFiles._made

    def counted(self: ContentBatch, file: FileWrite) -> None:
        made.append(file.node.name)
        real(self, file)

    def counted_direct(self: DirectFiles, files: list[DirectFile], nbytes: int) -> None:
        made.extend(file.node.name for file in files)
        real_direct(self, files, nbytes)

    monkeypatch.setattr(ContentBatch, "made", counted)
    monkeypatch.setattr(DirectFiles, "_made", counted_direct)
    return made


def test_a_restore_through_workers_is_identical_and_verified(ext4: LoopFs, monkeypatch: pytest.MonkeyPatch):
    made = _count_made(monkeypatch)
    source = ext4.mount / "src"
    many_files(source)
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)
    before = repo.read_stats.blobs

    restorer = Restorer(repo, ext4.mount / "out", verify=True, processes=2)
    stats = restorer.restore(root)
    started = restorer.processes.started
    assert started is not None and len(started.pids) == 2
    assert not stats.errors, stats.errors
    assert stats.files == TEXTS + SAME + 3
    assert stats.verified == stats.files  # the hard link's second name too: the inode read back, linked
    restored = ext4.mount / "out" / source.relative_to("/")
    assert_same_tree(source, restored)
    assert os.stat(restored / "sparse").st_blocks * 512 < 8 << 20, "the holes are holes again"
    assert os.stat(restored / "hardlink").st_ino == os.stat(restored / "d1" / "text0001").st_ino
    assert repo.read_stats.blobs > before, "the blobs the workers decoded are counted"
    assert _gone(started.pids), "the workers end with the restore"
    assert not _temporaries(ext4.mount / "out"), "no temporary file left"
    assert made, "workers made the files of one blob whole (created, written, timed, verified, named)"


def test_a_damaged_blob_fails_only_its_file_and_is_recorded(ext4: LoopFs):
    source = ext4.mount / "src"
    texts = many_files(source)
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)
    victim = texts[7]
    content = _content_of(repo, root, victim)
    assert len(content) == 1
    location = repo.lookup(content[0])
    assert location is not None
    pack = repo.local_pack_path(location.pack)
    assert pack is not None
    with open(pack, "r+b") as f:
        f.seek(location.offset + location.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))

    restorer = Restorer(repo, ext4.mount / "out", verify=True, processes=1)
    stats = restorer.restore(root)
    assert restorer.processes.started is not None
    failed = [path for path, _ in stats.errors]
    assert failed == [os.fsencode(victim)], stats.errors
    restored = ext4.mount / "out" / source.relative_to("/")
    assert not (restored / victim.relative_to(source)).exists(), "nothing half-written under its name"
    for path in texts:
        if path != victim:
            assert (restored / path.relative_to(source)).read_bytes() == path.read_bytes()
    assert repo.damage.is_damaged(location.pack, content[0]), "the damage found is recorded"


def test_a_target_that_fills_up_keeps_only_whole_files_under_their_names(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    """Files a worker makes whole, into a filesystem that runs out of space: each file is either
    whole under its name or reported, and nothing temporary is left."""
    made = _count_made(monkeypatch)
    source = ext4.mount / "src"
    source.mkdir()
    for i in range(200):
        (source / f"f{i:03}").write_bytes(os.urandom(64 << 10))
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)
    with loop_filesystem("ext4") as small:
        free = os.statvfs(small.mount).f_bavail * os.statvfs(small.mount).f_frsize
        with open(small.mount / "ballast", "wb") as ballast:
            os.posix_fallocate(ballast.fileno(), 0, free - (4 << 20))  # room for about 60 of the 200
        stats = Restorer(repo, small.mount / "out", verify=True, processes=2).restore(root)
        restored = small.mount / "out" / source.relative_to("/")
        whole = sorted(path.name for path in restored.iterdir())
        failed = sorted(Path(os.fsdecode(path)).name for path, _ in stats.errors)
        assert stats.errors and all(why == "No space left on device" for _, why in stats.errors), stats.errors
        assert whole and sorted(whole + failed) == sorted(p.name for p in source.iterdir())
        for name in whole:
            assert (restored / name).read_bytes() == (source / name).read_bytes()
        assert not _temporaries(small.mount / "out")
    assert made, "the files were the workers' to make"


def test_files_with_long_names_are_all_made_by_the_workers(ext4: LoopFs, monkeypatch: pytest.MonkeyPatch):
    """A task is one datagram: a thousand new files of 250-byte names still fit in its message."""
    made = _count_made(monkeypatch)
    source = ext4.mount / "src"
    source.mkdir()
    names = [f"{n:04}-".ljust(250, "x") for n in range(1200)]
    for n, name in enumerate(names):
        (source / name).write_bytes(b"%d\n" % n)
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source, seal_processes=0, read_workers=1)  # one pack: one range of them all
    stats = Restorer(repo, ext4.mount / "out", verify=True, processes=2).restore(root)
    assert not stats.errors, stats.errors[:3]
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))
    assert sorted(made) == sorted(os.fsencode(name) for name in names), "no task was left to the restore"


def test_a_crafted_name_too_long_for_any_filesystem_fails_only_its_file(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    """A snapshot is untrusted: a 300 KB name (no filesystem takes more than 255 bytes) is that
    file's error; it never reaches a worker's task, and the workers make every other file."""
    made = _count_made(monkeypatch)
    gone: list[str] = []
    real_run = RestoreWorkers.run

    def run(self: RestoreWorkers, task: Task, fds: list[int]) -> list[BlobDone]:
        try:
            return real_run(self, task, fds)
        except WorkerGone as err:
            gone.append(str(err))
            raise

    monkeypatch.setattr(RestoreWorkers, "run", run)
    repo = new_repo(ext4.mount / "repo")
    nodes = []
    for name in [b"f%03d" % n for n in range(100)] + [b"x" * 300_000]:
        blob = repo.save_blob(BlobType.DATA, b"content of " + name[:8])
        nodes.append(Node(name=name, type="file", mode=0o644, size=11 + len(name[:8]), content=[blob]))
    below = repo.save_tree(Tree(nodes=sorted(nodes, key=lambda node: node.name)))
    root = repo.save_tree(Tree(nodes=[Node(name=b"d", type="dir", mode=0o755, subtree=below)]))
    repo.flush()
    stats = Restorer(repo, ext4.mount / "out", processes=2).restore(root)
    assert [why for _, why in stats.errors] == ["File name too long"], stats.errors
    assert len(made) == 100 and not _temporaries(ext4.mount / "out")
    assert not gone, "no worker was lost to it"
    assert (ext4.mount / "out" / "d" / "f042").read_bytes() == b"content of f042"


def test_without_unnamed_files_each_is_made_under_a_temporary_name(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    """Where files cannot be linked in from /proc (EntryWriter.tmpfile false), each is written
    under a temporary name and renamed by the restore's process: the same tree, nothing left."""
    real_init = EntryWriter.__init__

    def without_tmpfile(self: EntryWriter, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.tmpfile = False

    monkeypatch.setattr(EntryWriter, "__init__", without_tmpfile)
    made = _count_made(monkeypatch)
    source = ext4.mount / "src"
    many_files(source, large=False)
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)
    stats = Restorer(repo, ext4.mount / "out", verify=True, processes=2).restore(root)
    assert not stats.errors, stats.errors
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))
    assert not made and not _temporaries(ext4.mount / "out")


def _content_of(repo: Repository, root: bytes, path: Path) -> list[bytes]:
    tree = root
    parts = path.relative_to("/").parts
    for name in parts[:-1]:
        node = next(n for n in repo.load_tree(tree).nodes if n.name == os.fsencode(name))
        assert node.subtree is not None
        tree = node.subtree
    return next(n for n in repo.load_tree(tree).nodes if n.name == os.fsencode(parts[-1])).content


def test_workers_that_die_leave_their_tasks_to_the_restore(ext4: LoopFs, monkeypatch: pytest.MonkeyPatch):
    source = ext4.mount / "src"
    many_files(source)
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)
    real_start = RestoreWorkers.__init__
    killed: list[int] = []

    def start_then_die(self: RestoreWorkers, *args: object) -> None:
        real_start(self, *args)  # type: ignore[arg-type]
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    monkeypatch.setattr(RestoreWorkers, "__init__", start_then_die)
    stats = Restorer(repo, ext4.mount / "out", verify=True, processes=2).restore(root)
    assert len(killed) == 2
    assert not stats.errors, stats.errors
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))


def test_files_a_worker_made_before_it_ended_are_restored_not_failed(monkeypatch: pytest.MonkeyPatch):
    """A worker that made its files whole and ended before it answered: its task is done again in
    the restore's process, and the files already under their names count as restored (they were
    reported as "File exists")."""
    real_run = RestoreWorkers.run
    unanswered: list[int] = []

    def run_then_end(self: RestoreWorkers, task: Task, fds: list[int]) -> list[BlobDone]:
        answer = real_run(self, task, fds)
        if task.new_files and not unanswered:
            unanswered.append(len(task.new_files))
            raise WorkerGone("ended before it answered")
        return answer

    with loop_filesystem("ext4", size=256 << 20) as fs:  # two restores
        source = fs.mount / "src"
        many_files(source)
        repo = new_repo(fs.mount / "repo")
        root, _ = archive(repo, source)
        clean = Restorer(repo, fs.mount / "clean", verify=True, processes=2).restore(root)
        monkeypatch.setattr(RestoreWorkers, "run", run_then_end)
        stats = Restorer(repo, fs.mount / "out", verify=True, processes=2).restore(root)
        assert unanswered and unanswered[0] > 1, "a task with files the worker made"
        assert not stats.errors, stats.errors
        assert (stats.files, stats.verified) == (clean.files, clean.verified), "each file counted once"
        assert_same_tree(source, fs.mount / "out" / source.relative_to("/"))


def test_an_interrupted_restore_leaves_no_worker_and_nothing_half_written(ext4: LoopFs, env, cli):
    """Ctrl-C while workers write: exit 130, every worker gone with the restore, and every file
    under its name in the target is whole."""
    source = ext4.mount / "src"
    for n in range(12):
        many_files(source / f"part{n}", large=False)
    backed_up = cli("backup", "--provider", "none", str(source), env=env, timeout=600)
    assert backed_up.returncode == 0, backed_up.stderr
    target = ext4.mount / "out"
    restore, workers = cli_with_workers(
        ["restore", "latest", "--target", str(target)],
        {**env, "SHADOWVAULT_RESTORE_PROCESSES": "2"},  # whatever the machine's default
        b"archive.restore_worker",
    )
    assert workers, "a restore of ~4,000 files started restore workers"
    time.sleep(0.1)
    restore.send_signal(signal.SIGINT)
    _, err = restore.communicate(timeout=120)
    assert restore.returncode == 130, err
    assert "Traceback" not in err, err
    assert _gone(list(workers)), "the workers end with the restore"
    whole = whole_files(target / source.relative_to("/"), source)
    assert whole < 12 * (TEXTS + SAME + 1), "interrupted before the end"


def test_the_number_of_workers_is_the_users_to_set(ext4: LoopFs, env, cli, monkeypatch: pytest.MonkeyPatch):
    source = ext4.mount / "src"
    many_files(source, large=False)
    assert cli("backup", "--provider", "none", str(source), env=env).returncode == 0
    bad = cli("restore", "latest", "--target", str(ext4.mount / "out"), env={**env, PROCESSES_ENV: "many"})
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip() == (
        "shadowvault: error: SHADOWVAULT_RESTORE_PROCESSES must be a number of processes, not 'many'"
    )
    assert not (ext4.mount / "out").exists() or not any((ext4.mount / "out").iterdir())
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], env["SHADOWVAULT_PASSWORD"]) as repo:
        root = repo.list_snapshots()[0][1].tree
        for wanted, started in (("0", False), ("1", True)):
            monkeypatch.setenv(PROCESSES_ENV, wanted)
            restorer = Restorer(repo, ext4.mount / f"out{wanted}")
            assert not restorer.restore(root).errors
            assert (restorer.processes.started is not None) == started


def _unreadable_task(path: str, blobs: int) -> Task:
    """A task whose pack cannot be opened: the worker answers each blob with an error naming it."""
    blob = TaskBlob(b"\0" * 32, int(BlobType.DATA), 0, 1, 1, False, [], [])
    return Task(path, 0, 1, False, [blob] * blobs, [])


def test_tasks_queued_in_one_worker_each_get_their_own_answer(tmp_path: Path):
    """One worker holds TASKS_QUEUED tasks at once; many threads send through it and each takes the
    answer to its own task (answers come back in the order the tasks were sent)."""
    workers = RestoreWorkers(MasterKey.generate(), 1, lambda _pack: None, lambda _b, _n: None)
    wrong: list[str] = []

    def send_many(thread: int) -> None:
        for n in range(40):
            path, blobs = str(tmp_path / f"t{thread}-{n}"), 1 + (thread * 7 + n) % 5
            answer = workers.run(_unreadable_task(path, blobs), [])
            if len(answer) != blobs or any(path not in done.error for done in answer):
                wrong.append(f"{path}: {answer[:1]}")

    try:
        assert in_threads(send_many, 3 * TASKS_QUEUED), "a thread waits for its answer forever"
        assert not wrong, wrong[:3]
    finally:
        workers.shutdown()


def test_a_worker_killed_with_tasks_queued_fails_each_over_without_a_hang(tmp_path: Path):
    """The worker is stopped (SIGSTOP) with its first task, the second waits in its socket; the
    worker is killed: both threads learn it ended (their tasks are then done in the restore's
    process), and the pool knows it has no worker left."""
    workers = RestoreWorkers(MasterKey.generate(), 1, lambda _pack: None, lambda _b, _n: None)
    outcomes: list[str] = []

    def send(path: str) -> None:
        try:
            workers.run(_unreadable_task(path, 2), [])
            outcomes.append("answered")
        except WorkerGone:
            outcomes.append("gone")

    try:
        os.kill(workers.pids[0], signal.SIGSTOP)
        first = threading.Thread(target=send, args=(str(tmp_path / "one"),))
        first.start()
        time.sleep(0.5)
        second = threading.Thread(target=send, args=(str(tmp_path / "other"),))
        second.start()
        time.sleep(0.5)
        assert outcomes == [], "both tasks are still with the worker"
        os.kill(workers.pids[0], signal.SIGKILL)
        assert all_end([first, second], 60), "a thread waits on a dead worker"
        assert outcomes == ["gone", "gone"]
        with pytest.raises(WorkerGone):
            workers.run(_unreadable_task(str(tmp_path / "later"), 1), [])
    finally:
        workers.shutdown()


def test_a_pack_that_is_a_fifo_is_an_error_of_its_blobs_not_a_hang(tmp_path: Path):
    """A FIFO planted where a pack belongs: the worker's open would wait for a writer for ever."""
    fifo = tmp_path / "pack"
    os.mkfifo(fifo)
    workers = RestoreWorkers(MasterKey.generate(), 1, lambda _pack: None, lambda _b, _n: None)
    try:
        answer: list = []
        assert in_threads(lambda _n: answer.extend(workers.run(_unreadable_task(str(fifo), 2), [])), 1, 60)
        assert [done.error for done in answer] == [f"cannot read {fifo}: {fifo} is not a regular file"] * 2
    finally:
        workers.shutdown()


def test_a_worker_reads_the_blobs_of_a_pack_and_skips_the_gaps_between():
    """A task may be a batch's whole need of a pack: the worker reads runs of nearby blobs, at most
    READ_WINDOW each, and never the READ_GAP or more between two runs."""

    def blob(offset: int, length: int) -> TaskBlob:
        return TaskBlob(b"\0" * 32, int(BlobType.DATA), offset, length, length, False, [], [])

    near = [blob(0, 1000), blob(1000, 500), blob(1500 + READ_GAP - 1, 100)]
    far = [blob(8 << 20, 1000), blob((8 << 20) + 1000 + READ_GAP + 1, 1000)]
    wide = [blob(12 << 20, READ_WINDOW // 2), blob((12 << 20) + READ_WINDOW // 2, READ_WINDOW // 2 + 1)]
    windows = [(start, end, len(run)) for start, end, run in _windows(near + far + wide)]
    assert windows == [
        (0, 1500 + READ_GAP + 99, 3),
        (8 << 20, (8 << 20) + 1000, 1),
        ((8 << 20) + 1000 + READ_GAP + 1, (8 << 20) + 2000 + READ_GAP + 1, 1),
        (12 << 20, (12 << 20) + READ_WINDOW // 2, 1),
        ((12 << 20) + READ_WINDOW // 2, (12 << 20) + READ_WINDOW + 1, 1),
    ]


def _tasks_sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Task, int]]:
    """Every task the restore workers are given, with the number of descriptors sent with it."""
    sent: list[tuple[Task, int]] = []
    real_run = RestoreWorkers.run

    def recorded(self: RestoreWorkers, task: Task, fds: list[int]) -> list[BlobDone]:
        sent.append((task, len(fds)))
        return real_run(self, task, fds)

    monkeypatch.setattr(RestoreWorkers, "run", recorded)
    return sent


def _directories_of_files(source: Path, directories: int, files: int) -> None:
    """`directories` directories of `files` small files each, every directory with times of its own."""
    for d in range(directories):
        for f in range(files):
            path = source / f"dir{d:02}" / f"file{f:03}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"directory {d}, file {f}\n".encode() * (d + 1))
        os.utime(source / f"dir{d:02}", ns=(10**18, 10**18 + d))


def test_files_of_many_directories_in_a_pack_are_made_by_one_task(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    """A pack holds the files of several directories: they go to the workers gathered across
    directories (restore_direct.py), so each pack is read by one task, not one per directory,
    each file lands in its own directory, and every directory gets its times after its files."""
    sent = _tasks_sent(monkeypatch)
    source = ext4.mount / "src"
    _directories_of_files(source, 6, WORTH_FILES + 6)  # each directory alone is worth the workers
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)

    stats = Restorer(repo, ext4.mount / "out", verify=True, processes=2).restore(root)
    assert not stats.errors, stats.errors
    assert stats.files == 6 * (WORTH_FILES + 6) and stats.verified == stats.files
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))
    tasks = [task for task, _ in sent]
    packs = {task.path for task in tasks}
    assert len(tasks) == len(packs), f"{len(tasks)} tasks read {len(packs)} packs"
    assert max(len({new.directory for new in task.new_files}) for task in tasks) > 1


def test_a_task_holds_no_more_directories_than_its_descriptor_share(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    """Under a descriptor limit that leaves a task 16 descriptors, files of 20 directories in one
    pack go in tasks of at most 16 directories, and each lands where it belongs."""
    import shadowvault.archive.restore_workers as restore_workers

    monkeypatch.setattr(restore_workers, "descriptors_per_task", lambda _tasks: MIN_FDS_PER_TASK)
    tasks = _tasks_sent(monkeypatch)
    source = ext4.mount / "src"
    _directories_of_files(source, MIN_FDS_PER_TASK + 4, 4)  # 80 files: worth the workers, and one pack
    repo = new_repo(ext4.mount / "repo")
    root, _ = archive(repo, source)

    stats = Restorer(repo, ext4.mount / "out", processes=2).restore(root)
    assert not stats.errors, stats.errors
    assert_same_tree(source, ext4.mount / "out" / source.relative_to("/"))
    assert len(tasks) >= 2 and all(fds <= MIN_FDS_PER_TASK for _, fds in tasks)
    assert all(max(new.directory for new in task.new_files) < fds for task, fds in tasks)


def test_a_crafted_file_naming_a_blob_never_stored_fails_only_itself(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    """A snapshot is untrusted: among files the workers make straight from the walk
    (restore_direct.py), one names a blob the repository never stored. It is that file's error,
    nothing of it is left, and the workers make every other file."""
    made = _count_made(monkeypatch)
    repo = new_repo(ext4.mount / "repo")
    nodes = []
    for name in [b"f%03d" % n for n in range(100)]:
        blob = repo.save_blob(BlobType.DATA, b"content of " + name)
        nodes.append(Node(name=name, type="file", mode=0o644, size=15, content=[blob]))
    nodes.append(Node(name=b"ghost", type="file", mode=0o644, size=5, content=[b"\x07" * 32]))
    below = repo.save_tree(Tree(nodes=sorted(nodes, key=lambda node: node.name)))
    root = repo.save_tree(Tree(nodes=[Node(name=b"d", type="dir", mode=0o755, subtree=below)]))
    repo.flush()
    stats = Restorer(repo, ext4.mount / "out", processes=2).restore(root)
    assert [os.path.basename(path) for path, _ in stats.errors] == [b"ghost"], stats.errors
    assert stats.files == 100 and len(made) == 100
    assert not (ext4.mount / "out" / "d" / "ghost").exists() and not _temporaries(ext4.mount / "out")
    assert (ext4.mount / "out" / "d" / "f042").read_bytes() == b"content of f042"


def test_a_file_not_the_size_its_snapshot_records_is_restored_as_stored_and_said_to_be(tmp_path: Path):
    """A file of one blob whose recorded size is not the blob's (crafted) was made by a worker and
    verified in silence: it is restored as stored, here, with a warning (check reports it)."""
    repo = new_repo(tmp_path / "repo")
    nodes = [
        Node(name=b"f%03d" % i, type="file", size=5 if i == 7 else 100, content=[blob])
        for i, blob in enumerate(repo.save_blob(BlobType.DATA, bytes([i]) * 100) for i in range(200))
    ]
    root = repo.save_tree(Tree(nodes=nodes))
    repo.flush()
    restorer = Restorer(repo, tmp_path / "out", verify=True, processes=1)
    stats = restorer.restore(root)
    assert restorer.processes.started is not None
    assert not stats.errors and stats.files == stats.verified == 200
    assert [(path, why.split(",")[0]) for path, why in stats.warnings] == [(b"/f007", "restored as stored")]
    assert (tmp_path / "out" / "f007").read_bytes() == bytes([7]) * 100
