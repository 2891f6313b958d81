"""A separate writer process for crash and concurrency tests (run as a script, killed at will).

writer_process.py REPO save-loop       save deterministic blobs forever, a snapshot every 20 blobs
writer_process.py REPO backups N       N small backups that reuse earlier content, then exit
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from tests.repo.helpers import PASSWORD, make_snapshot


def blob(n: int) -> bytes:
    return random.Random(n).randbytes(20_000 + n % 7 * 10_000)


def content(seed: int) -> bytes:
    return random.Random(seed * 7919).randbytes(150_000)


def backup_files(i: int) -> dict[str, bytes]:
    """Backup i reuses backup i-2's new content: the test forgets i-2 as soon as i-1 exists, so that
    content is garbage, not yet pruned, exactly while backup i runs (the race prune must survive)."""
    return {"recycled": content(i - 2), "fresh": content(i)}


def save_loop(path: str) -> None:
    with Repository.open(path, PASSWORD, write=True) as repo:
        n = 0
        while True:
            repo.save_blob(BlobType.DATA, blob(n))
            n += 1
            if n % 20 == 0:
                make_snapshot(repo, {"last": blob(n - 1)}, tags=[f"n={n}"])
                print(f"snapshot {n}", flush=True)
            elif n % 5 == 0:
                print(f"saved {n}", flush=True)


def backups(path: str, count: int) -> None:
    for i in range(count):
        with Repository.open(path, PASSWORD, write=True) as repo:
            files = backup_files(i)
            for data in files.values():  # upload (or dedup) first, like a backup walk...
                for chunk in repo.chunker.chunk_bytes(data):
                    repo.save_blob(BlobType.DATA, chunk)
            time.sleep(0.3)  # ...a while passes (prune may run now)...
            make_snapshot(repo, files, tags=[f"i={i}"])  # ...then the snapshot commits
        print(f"backup {i}", flush=True)


if __name__ == "__main__":
    if sys.argv[2] == "save-loop":
        save_loop(sys.argv[1])
    else:
        backups(sys.argv[1], int(sys.argv[3]))
