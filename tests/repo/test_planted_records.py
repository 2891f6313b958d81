"""Session files and damage records are repository input: what anyone who may write the storage
plants under sessions/ or damage/ (no password needed for a file of noise dated years ahead; the key
for a sealed one) must not hold prune back for ever, end a command in an internal error, or name a
pack that is no pack's name."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

from shadowvault.repo.damage import DAMAGE_AAD, REASON_KEPT, DamagedPack
from shadowvault.repo.format import SessionDoc, encode_document, file_id
from shadowvault.repo.prune import PruneResult, prune
from shadowvault.repo.repository import Repository
from shadowvault.repo.session import SESSION_AAD, boot_id
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.repo.helpers import make_snapshot, restore_all

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


def test_a_damage_record_naming_no_pack_is_ignored_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD, kdf_params=FAST_KDF) as repo:
        sid, _ = make_snapshot(repo, {"a": b"hello"})
        for record in (
            {"id": "../../etc", "reason": "r", "whole": True},
            {"id": "ab" * 32, "reason": "r", "blobs": [b"short"]},
        ):
            doc = {"time": time.time(), "packs": [record]}
            sealed = repo.sealer.seal(encode_document(doc), DAMAGE_AAD)
            (path / "damage").mkdir(exist_ok=True)
            (path / "damage" / file_id(sealed)).write_bytes(sealed)
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, sid)["a"] == b"hello"
        assert not repo.damage and "cannot be decoded" in caplog.text
    long_reason = DamagedPack(id="cd" * 32, reason="x" * 5000, whole=True)
    assert len(long_reason.reason) == REASON_KEPT  # what we write ourselves always reads back
