"""Creating and opening repositories: the errors a user meets first."""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc

import msgspec
import pytest
import zstandard

from shadowvault.errors import IntegrityError, NotFoundError, RepositoryError, UsageError, WrongPasswordError
from shadowvault.repo.backend import MAX_DOCUMENT_FILE
from shadowvault.repo.check import check
from shadowvault.repo.compression import decompress, decompress_bounded
from shadowvault.repo.format import encode_document, file_id
from shadowvault.repo.repo_config import CONFIG_AAD
from shadowvault.repo.repository import Repository
from shadowvault.repo.session import list_sessions
from shadowvault.repo.snapshots import SNAPSHOT_AAD
from tests.archive.helpers import FAST_KDF
from tests.inprocess_cli import one_error_line, run
from tests.repo.helpers import PASSWORD, env_for, make_snapshot, restore_all

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def test_init_then_open_with_the_password(tmp_path):
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        repo_id = repo.id
    with Repository.open(path, PASSWORD) as repo:
        assert repo.id == repo_id
        assert repo.list_snapshots() == []
    assert sorted(os.listdir(path)) == ["config", "data", "index", "keys", "sessions", "snapshots", "tmp"]
    assert os.listdir(path / "sessions") == []  # the session ended with close()


def test_wrong_password_is_one_clear_error(tmp_path):
    Repository.init(tmp_path / "repo", PASSWORD).close()
    with pytest.raises(WrongPasswordError, match="wrong password or no key for this repository"):
        Repository.open(tmp_path / "repo", "not it")


def test_second_key_opens_the_same_repository(tmp_path):
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        repo.add_key("second")
        sid, _ = make_snapshot(repo, {"a": b"hello"})
    with Repository.open(tmp_path / "repo", "second") as repo:
        assert restore_all(repo, sid)["a"] == b"hello"
        assert len(repo.list_keys()) == 2


def test_paths_that_are_not_repositories(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    with pytest.raises(RepositoryError, match="is a file, not a repository"):
        Repository.open(a_file, PASSWORD)
    with pytest.raises(RepositoryError, match="not a Shadowvault repository"):
        Repository.open(tmp_path, PASSWORD)
    with pytest.raises(RepositoryError, match="does not exist"):
        Repository.open(tmp_path / "missing", PASSWORD)
    with pytest.raises(RepositoryError, match="not a directory"):
        Repository.init(a_file, PASSWORD)
    with pytest.raises(RepositoryError, match="not empty"):
        Repository.init(tmp_path, PASSWORD)
    Repository.init(tmp_path / "repo", PASSWORD).close()
    with pytest.raises(RepositoryError, match="already a repository"):
        Repository.init(tmp_path / "repo", PASSWORD)
    too_long = tmp_path / ("a" * 300)  # a name no file system takes: it was an internal error
    for attempt in (lambda: Repository.open(too_long, PASSWORD), lambda: Repository.init(too_long, PASSWORD)):
        with pytest.raises(
            RepositoryError, match=f"cannot use {too_long} as a repository: File name too long"
        ):
            attempt()


def test_find_snapshot_by_id_prefix_and_latest(tmp_path):
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        first, _ = make_snapshot(repo, {"a": b"1"}, when=1000.0, tags=["x"])
        second, _ = make_snapshot(repo, {"a": b"2"}, when=2000.0, host="other")
        assert [sid for sid, _ in repo.list_snapshots()] == [first, second]
        assert repo.find_snapshot(first)[0] == first
        assert repo.find_snapshot(second[:6])[0] == second
        assert repo.find_snapshot("latest")[0] == second
        assert repo.find_snapshot("latest", host="testhost")[0] == first
        assert repo.find_snapshot("latest", tags=["x"])[0] == first
        with pytest.raises(NotFoundError):
            repo.find_snapshot("latest", tags=["nope"])
        with pytest.raises(NotFoundError):
            repo.find_snapshot("0" * 64 if not first.startswith("0") else "f" * 64)
        ids = [first, second]
        while len({i[0] for i in ids}) == len(ids):  # at most 17 snapshots: two then share a digit
            ids.append(make_snapshot(repo, {"a": str(len(ids)).encode()}, when=500.0)[0])
        shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
        with pytest.raises(UsageError, match="ambiguous"):
            repo.find_snapshot(shared)
        for extra in ids[2:]:
            repo.remove_snapshot(extra)
        with pytest.raises(UsageError):
            repo.find_snapshot("not-hex!")
        repo.remove_snapshot(first)
        assert [sid for sid, _ in repo.list_snapshots()] == [second]


def test_cli_init_snapshots_and_errors(tmp_path, cli):
    repo = tmp_path / "repo"
    result = cli("init", "--repo", repo, "--json", env=env_for(repo))
    assert result.returncode == 0, result.stderr
    initialized = json.loads(result.stdout)
    assert initialized["message_type"] == "initialized" and initialized["id"]
    again = cli("init", env=env_for(repo))
    assert again.returncode == 1 and "already a repository" in again.stderr
    with Repository.open(repo, PASSWORD) as r:
        sid, _ = make_snapshot(r, {"a": b"data"}, tags=["nightly"])
    listed = cli("snapshots", "--json", env=env_for(repo))
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["id"] == sid and entry["tags"] == ["nightly"] and entry["host"] == "testhost"
    table = cli("snapshots", env=env_for(repo))
    assert sid[:8] in table.stdout
    assert json.loads(cli("snapshots", "--json", "--tag", "other", env=env_for(repo)).stdout) == []

    wrong = cli("snapshots", env={**env_for(repo), "SHADOWVAULT_PASSWORD": "nope"})
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "shadowvault: error: wrong password or no key for this repository"
    a_file = tmp_path / "f"
    a_file.write_text("x")
    as_file = cli("snapshots", "--repo", a_file, env=env_for(repo))
    assert as_file.returncode == 1 and "is a file, not a repository" in as_file.stderr
    assert "Traceback" not in as_file.stderr
    no_password = cli("snapshots", "--repo", repo, env={"SHADOWVAULT_PASSWORD": ""}, input="")
    assert no_password.returncode == 2 and "no password given" in no_password.stderr
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    by_file = cli(
        "snapshots", "--json", "--repo", repo, "--password-file", pw_file, env={"SHADOWVAULT_PASSWORD": ""}
    )
    assert by_file.returncode == 0, by_file.stderr

    second_pw = tmp_path / "pw2"
    second_pw.write_text("another one\n")
    added = cli("key", "add", "--new-password-file", second_pw, env=env_for(repo))
    assert added.returncode == 0, added.stderr
    keys = cli("key", "list", "--json", env={**env_for(repo), "SHADOWVAULT_PASSWORD": "another one"})
    assert keys.returncode == 0 and len(keys.stdout.splitlines()) == 2  # a JSON line per key


def test_a_file_url_names_a_repository_on_the_command_line(tmp_path, cli):
    """`--repo file:///path` is the same repository as `--repo /path` (repo/storage.py)."""
    env = {"SHADOWVAULT_PASSWORD": "pw"}
    url = f"file://{tmp_path / 'repo'}"
    assert cli("init", "--repo", url, env=env).returncode == 0
    assert (tmp_path / "repo" / "config").is_file()
    listed = cli("snapshots", "--repo", url, "--json", env=env)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
    other = cli("snapshots", "--repo", "ftp://host/x", env=env)
    assert other.returncode == 2 and "unsupported repository location" in other.stderr
    s3ish = cli("snapshots", "--repo", "s3://bucket/x", env=env)  # aws-cli's form: says what to write
    assert s3ish.returncode == 2 and "not an S3 repository URL: write s3:http" in s3ish.stderr


def test_a_read_only_open_reads_the_index_when_first_used(tmp_path, caplog):
    """Listing snapshots reads no index file (a damaged one goes unnoticed there: ~0.3 s per 100k
    blobs saved); the first read of data reads them all, and says what it could not read."""
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        sid, _ = make_snapshot(repo, {"a": b"hello"})
        make_snapshot(repo, {"b": b"other"})
    with Repository.open(path, PASSWORD) as repo:
        assert len(repo.list_snapshots()) == 2
        assert repo._master._index is None, "no index read to list snapshots"
        assert restore_all(repo, sid)["a"] == b"hello"
        assert repo._master._index is not None and len(repo.index) > 0
    damaged = sorted((path / "index").iterdir())[0]
    damaged.write_bytes(b"not an index file")
    shutil.rmtree(os.environ["SHADOWVAULT_CACHE_DIR"])  # the index kept built would stand in for it
    with Repository.open(path, PASSWORD) as repo:
        caplog.clear()
        assert len(repo.list_snapshots()) == 2
        assert "rebuilds the index" not in caplog.text
        assert not repo.has_blob(bytes(32))  # reads the index
        assert "rebuilds the index" in caplog.text


FORGED_PARAMETERS = [
    {"n": 1 << 30},  # 128 GiB of scrypt memory
    {"p": 3000},  # 32 MiB at a time, 3,000 times over: minutes of every command
    {"n": 1 << 19, "r": 15},  # 1 GiB of memory for every command
    {"n": 1000},  # not a power of two
    {"n": True},
    {"r": 0},
    {"salt": 123},
]
FORGED_TEXTS = [
    b'{"version":1,"kdf":"scrypt","n":1e999,"r":8,"p":1,"salt":"AAAA","data":"AAAA"}',  # int(inf)
    b"[" * 200_000 + b"]" * 200_000,  # RecursionError in the JSON decoder
]


def _forgeries(real: bytes) -> list[bytes]:
    """Key files as someone who may write the storage (no password needed) could plant them."""
    forged = []
    for change in FORGED_PARAMETERS:
        doc = json.loads(real)
        doc.update(change)
        forged.append(json.dumps(doc).encode())
    return forged + FORGED_TEXTS


@pytest.mark.parametrize("number", range(len(FORGED_PARAMETERS) + len(FORGED_TEXTS)))
def test_a_key_file_asking_scrypt_for_too_much_is_refused_not_obeyed(tmp_path, caplog, number):
    """Key files are repository input: one forged (named by its hash, so not "damaged" by its name)
    to demand more scrypt work than SCRYPT_MAX_MEMORY, or holding what no key file holds, is
    reported and skipped; the real key still opens, whichever is tried first."""
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD).close()
    (real,) = (path / "keys").iterdir()
    forged = _forgeries(real.read_bytes())[number]
    (path / "keys" / file_id(forged)).write_bytes(forged)
    with Repository.open(path, PASSWORD) as repo:
        assert repo.list_snapshots() == []
    real.unlink()
    with pytest.raises(WrongPasswordError, match="damaged"):
        Repository.open(path, PASSWORD)
    assert "invalid key file" in caplog.text


def _zstd_frame_claiming(size: int) -> bytes:
    """An empty zstd frame whose header says it holds `size` bytes (what a forger would write)."""
    descriptor = 0b1110_0000  # an 8-byte content size, single segment
    return ZSTD_MAGIC + bytes([descriptor]) + size.to_bytes(8, "little") + b"\x01\x00\x00"


def test_a_snapshot_whose_zstd_frame_claims_a_terabyte_is_damaged_not_allocated(tmp_path, cli):
    """zstd sizes its output from the frame's header and ignores the caller's bound when the header
    has one: a sealed document claiming 1 TiB is refused before anything is allocated, reported
    as damaged, and the other snapshots are listed."""
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        good, _ = make_snapshot(repo, {"a": b"hello"})
        raw = repo.sealer.seal(b"\x01" + _zstd_frame_claiming(1 << 40), SNAPSHOT_AAD)
        (path / "snapshots" / file_id(raw)).write_bytes(raw)
    listed = cli("snapshots", "--json", env=env_for(path))
    assert listed.returncode == 0, listed.stderr
    assert [entry["id"] for entry in json.loads(listed.stdout)] == [good]
    assert "would decompress to 1099511627776 bytes" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_a_blob_frame_must_hold_what_the_index_says():
    """A blob's frame claiming more (or less) than its indexed length is an IntegrityError; a frame
    with no size in its header is bounded by the caller's limit as it streams."""
    with pytest.raises(IntegrityError, match="has 1099511627776 bytes, expected 100"):
        decompress(_zstd_frame_claiming(1 << 40), 100, "blob x")
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 5000)
    assert decompress_bounded(unsized, 5000, "doc") == b"a" * 5000
    with pytest.raises(IntegrityError, match="decompresses to more than 4999 bytes"):
        decompress_bounded(unsized, 4999, "doc")
    assert decompress(unsized, 5000, "blob y") == b"a" * 5000
    tracemalloc.start()
    try:  # an index entry's claim of 3 GiB for an unsized frame is not reserved up front
        with pytest.raises(IntegrityError, match="has 5000 bytes, expected 3221225472"):
            decompress(unsized, 3 << 30, "blob z")
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "chunker",
    [
        {"min": 0, "avg": 0, "max": 0, "seed": 1},
        {"min": 1 << 40, "avg": 1 << 41, "max": 1 << 42, "seed": 1},
        {"min": 1 << 20, "avg": 512 << 10, "max": 2 << 20, "seed": 1},  # out of order
        {"min": 256 << 10, "avg": 512 << 10, "max": 2 << 20, "seed": -1},
    ],
)
def test_a_config_with_chunker_parameters_no_chunker_takes_is_damaged(tmp_path, chunker):
    """Building the chunker raised ValueError in every command, `ls` and `restore` too (an internal
    error): the config is damaged, says so with its repair, and `repair config` mends it."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        snapshot_id, _ = make_snapshot(repo, {"a": b"alpha"})
        crafted = {**msgspec.to_builtins(repo.config), "chunker": chunker}
        raw = repo.sealer.seal(encode_document(crafted), CONFIG_AAD)
    config = tmp_path / "repo" / "config"
    config.chmod(0o600)
    config.write_bytes(raw)
    env = env_for(tmp_path / "repo")
    line = one_error_line(run(env, "ls", snapshot_id))
    assert "config is damaged" in line and "repair config" in line
    assert run(env, "repair", "config").exit_code == 0
    assert run(env, "ls", snapshot_id).exit_code == 0
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert restore_all(repo, snapshot_id)["a"] == b"alpha"


def test_a_planted_file_larger_than_any_document_is_refused_unread(tmp_path):
    """A huge file in snapshots/, index/, keys/, sessions/ or damage/ (no password needed to put
    one there) was read whole by every command that lists them: a 4 GiB one ended `snapshots` in
    a MemoryError. Its listed size now makes it damaged before a byte is read."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        snapshot_id, _ = make_snapshot(repo, {"a": b"alpha"})
    planted = {d: tmp_path / "repo" / d / ("0" * 64) for d in ("snapshots", "index", "keys", "damage")}
    planted["sessions"] = tmp_path / "repo" / "sessions" / ("0" * 32)
    for path in planted.values():
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(MAX_DOCUMENT_FILE + 1)  # sparse: nothing on disk, and nothing read
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert [sid for sid, _ in repo.list_snapshots()] == [snapshot_id]
        assert "larger than any document" in repo.damaged_snapshots["0" * 64]
        assert restore_all(repo, snapshot_id)["a"] == b"alpha"
        sessions = list_sessions(repo.backend, repo.sealer)
        assert [s.doc for s in sessions if s.name.endswith("0" * 32)] == [None]
        errors = check(repo).errors
    for kind in ("snapshots", "index"):
        assert any(f"{kind}/{'0' * 64} is" in e and "larger than any document" in e for e in errors), errors
