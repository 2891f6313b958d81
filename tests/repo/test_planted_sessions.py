"""Session files are repository input: what anyone who may write the storage plants under sessions/
(no password needed for a file of noise dated years ahead; the key for a sealed one) must not hold
prune back for ever nor end it in an internal error."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

from shadowvault.repo.format import SessionDoc, encode_document
from shadowvault.repo.prune import PruneResult, prune
from shadowvault.repo.repository import Repository
from shadowvault.repo.session import SESSION_AAD, boot_id
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.repo.helpers import make_snapshot

YEAR_2036 = 2082758400.0


def forgotten_snapshot(path: Path) -> None:
    """A repository with a snapshot forgotten: prune has one pack of data to delete."""
    with Repository.init(path, PASSWORD, kdf_params=FAST_KDF) as repo:
        gone, _ = make_snapshot(repo, {"a": secrets.token_bytes(4096)})
        make_snapshot(repo, {"b": secrets.token_bytes(4096)})
        repo.remove_snapshot(gone)


def plant(path: Path, content: bytes, mtime: float) -> None:
    session = path / "sessions" / secrets.token_hex(16)
    session.parent.mkdir(exist_ok=True)
    session.write_bytes(content)
    os.utime(session, (mtime, mtime))


def pruned(path: Path) -> PruneResult:
    with Repository.open(path, PASSWORD, write=True, kind="prune") as repo:
        return prune(repo)


def test_a_session_file_dated_years_ahead_does_not_hold_prune_back(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    forgotten_snapshot(path)
    plant(path, secrets.token_bytes(100), YEAR_2036)  # was: pending "until 1 running backup finishes"
    result = pruned(path)
    assert result.packs_deleted >= 1 and result.packs_pending == 0


def test_a_sealed_session_with_an_impossible_pid_is_no_internal_error(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    forgotten_snapshot(path)
    with Repository.open(path, PASSWORD) as repo:
        for pid in (-(2**40), 2**40):  # was: OverflowError in prune and every repair
            doc = SessionDoc(
                kind="prune", host=socket.gethostname(), pid=pid, start=time.time(), boot_id=boot_id()
            )
            plant(path, repo.sealer.seal(encode_document(doc), SESSION_AAD), time.time())
    result = pruned(path)  # such a file is unreadable: live while fresh (what it protects waits)
    assert result.snapshots == 1
