"""`shadowvault copy`: snapshots from one repository into another, re-encrypted, deduplicated,
skipped when copied before, and resumable after an interruption."""

from __future__ import annotations

import filecmp
import json
import os
import time
from pathlib import Path

import pytest

from shadowvault import proc
from shadowvault.repo.chunker import MAX_SIZE
from shadowvault.repo.copy import copy_snapshots
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.archive.helpers import FAST_KDF, PASSWORD, archive
from tests.inprocess_cli import json_out, one_error_line, run
from tests.repo.helpers import make_snapshot

DEST_PASSWORD = "another horse"


def _snapshot(repo: Repository, src: Path, host: str, tags: list[str], when: float) -> str:
    root, _ = archive(repo, src)
    return repo.save_snapshot(Snapshot(time=when, host=host, paths=[str(src)], tags=tags, tree=root))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A source repository with three snapshots: `data` twice on host alpha (the first tagged weekly),
    `other` once on host beta; `data` holds several chunks, a subdirectory and a symlink."""
    base = tmp_path_factory.mktemp("copy-source")
    data, other = base / "data", base / "other"
    (data / "sub" / "deeper").mkdir(parents=True)
    # larger than the largest chunk, so always two chunks or more: an interruption at the third blob
    # falls inside the first snapshot's copy, whatever the repository's chunker seed cuts
    (data / "big").write_bytes(os.urandom(MAX_SIZE + (1 << 20)))
    (data / "sub" / "small").write_text("small file\n")
    (data / "sub" / "deeper" / "empty").write_bytes(b"")
    (data / "link").symlink_to("sub/small")
    other.mkdir()
    (other / "note").write_text("beta's note\n")
    (base / "password").write_text(PASSWORD + "\n")
    repo_path = base / "repo"
    now = time.time()
    with Repository.init(repo_path, PASSWORD, kdf_params=FAST_KDF) as repo:
        first = _snapshot(repo, data, "alpha", ["weekly"], now - 300)
        (data / "sub" / "small").write_text("changed small file\n")
        second = _snapshot(repo, data, "alpha", [], now - 200)
        third = _snapshot(repo, other, "beta", [], now - 100)
    return {
        "repo": str(repo_path),
        "password_file": str(base / "password"),
        "data": data,
        "ids": [first, second, third],
    }


@pytest.fixture
def dest(tmp_path: Path) -> dict[str, str]:
    """A fresh destination repository, with its own password, named through the environment."""
    path = tmp_path / "dest"
    Repository.init(path, DEST_PASSWORD, kdf_params=FAST_KDF, pack_size=16 << 10).close()
    return {
        "SHADOWVAULT_REPOSITORY": str(path),
        "SHADOWVAULT_PASSWORD": DEST_PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
    }


def _from(source: dict) -> list[str]:
    return ["--from-repo", source["repo"], "--from-password-file", source["password_file"]]


def _dest_snapshots(dest: dict[str, str]) -> list[tuple[str, Snapshot]]:
    with Repository.open(dest["SHADOWVAULT_REPOSITORY"], DEST_PASSWORD) as repo:
        return repo.list_snapshots()


def test_copy_all_checks_restores_byte_identical_and_a_second_copy_copies_nothing(source, dest, tmp_path):
    done = run(dest, "copy", *_from(source))
    assert done.exit_code == 0, done.stderr
    assert "3 snapshots copied, 0 already there" in done.stdout

    copies = _dest_snapshots(dest)
    assert sorted(s.original for _, s in copies) == sorted(source["ids"])
    assert [(s.host, s.tags) for _, s in copies] == [("alpha", ["weekly"]), ("alpha", []), ("beta", [])]

    checked = run(dest, "check", "--read-data")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    assert "no errors: 3 snapshots" in checked.stdout

    latest_of_data = copies[1][0]
    target = tmp_path / "restored"
    restored = run(dest, "restore", latest_of_data, "--target", target)
    assert restored.exit_code == 0, restored.stderr
    data = source["data"]
    back = target / str(data).lstrip("/")
    assert (back / "big").read_bytes() == (data / "big").read_bytes()
    assert (back / "sub" / "small").read_text() == "changed small file\n"
    assert os.readlink(back / "link") == "sub/small"
    comparison = filecmp.dircmp(data, back)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files

    again = json_out(run(dest, "copy", *_from(source), "--json"))
    assert again["copied"] == [] and len(again["skipped"]) == 3
    assert again["blobs_added"] == 0
    assert len(_dest_snapshots(dest)) == 3


def test_copy_named_and_filtered_snapshots(source, dest):
    first, second, third = source["ids"]
    by_host = json_out(run(dest, "copy", *_from(source), "--host", "beta", "--json"))
    assert [c["source"] for c in by_host["copied"]] == [third]
    by_tag = json_out(run(dest, "copy", *_from(source), "--tag", "weekly", "--json"))
    assert [c["source"] for c in by_tag["copied"]] == [first]
    named = json_out(run(dest, "copy", *_from(source), second[:10], third[:8], "--json"))
    assert [c["source"] for c in named["copied"]] == [second]
    assert [c["source"] for c in named["skipped"]] == [third]
    # the second snapshot shares its big file with the first, copied before: that is neither stored
    # again nor even read again (learnt from the first copy's trees)
    assert named["raw_bytes_added"] < 1 << 20
    assert by_tag["bytes_read"] >= 3 << 20 and named["bytes_read"] < 1 << 10
    assert json_out(run(dest, "copy", *_from(source), "--json"))["copied"] == []
    mismatch = run(dest, "copy", *_from(source), third[:8], "--host", "alpha")
    assert "does not match --host alpha" in one_error_line(mismatch)
    by_path = json_out(run(dest, "copy", *_from(source), "latest", "--path", source["data"], "--json"))
    assert [c["source"] for c in by_path["skipped"]] == [second]


def test_copy_password_command_and_bad_sources(source, dest, tmp_path):
    by_command = run(dest, "copy", "--from-repo", source["repo"], "--from-password-command", "echo nope")
    assert one_error_line(by_command).endswith(
        f"source repository {source['repo']}: wrong password or no key for this repository"
    )  # which of the two passwords is wrong (they were told alike)
    wrong_dest = run({**dest, "SHADOWVAULT_PASSWORD": "nope"}, "copy", *_from(source))
    assert one_error_line(wrong_dest).endswith(": wrong password or no key for this repository")
    assert "source" not in one_error_line(wrong_dest)
    failing = run(dest, "copy", "--from-repo", source["repo"], "--from-password-command", "false")
    assert "password command failed" in one_error_line(failing)
    no_source = run(dest, "copy")
    assert no_source.exit_code == 2 and "--from-repo" in one_error_line(no_source)
    itself = run(
        {**dest, "SHADOWVAULT_FROM_PASSWORD": DEST_PASSWORD},
        "copy",
        "--from-repo",
        dest["SHADOWVAULT_REPOSITORY"],
    )
    assert "same repository" in one_error_line(itself)
    unknown = run(dest, "copy", *_from(source), "beef0000")
    assert "no snapshot with id beef0000" in one_error_line(unknown)
    env_password = run({**dest, "SHADOWVAULT_FROM_PASSWORD": PASSWORD}, "copy", "--from-repo", source["repo"])
    assert env_password.exit_code == 0, env_password.stderr


def test_an_interrupted_copy_leaves_a_valid_destination_and_the_next_one_finishes(source, dest):
    class Interrupted(Exception):
        pass

    blobs_seen = 0

    def stop_after_three_blobs(size: int) -> None:
        nonlocal blobs_seen
        blobs_seen += 1
        if blobs_seen == 3:
            raise Interrupted

    with (
        Repository.open(source["repo"], PASSWORD) as src,
        pytest.raises(Interrupted),
        Repository.open(dest["SHADOWVAULT_REPOSITORY"], DEST_PASSWORD, write=True) as dst,
    ):
        copy_snapshots(src, dst, src.list_snapshots(), on_blob=stop_after_three_blobs)
    assert _dest_snapshots(dest) == []
    checked = run(dest, "check", "--read-data")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    with Repository.open(dest["SHADOWVAULT_REPOSITORY"], DEST_PASSWORD) as dst:
        kept = len(dst.index)
    assert kept >= 2  # the finished packs were indexed when the interrupted copy closed

    finished = json_out(run(dest, "copy", *_from(source), "--json"))
    assert len(finished["copied"]) == 3
    with Repository.open(dest["SHADOWVAULT_REPOSITORY"], DEST_PASSWORD) as dst:
        assert finished["blobs_added"] == len(dst.index) - kept  # what was kept was not stored again
    checked = run(dest, "check", "--read-data")
    assert checked.exit_code == 0 and "no errors: 3 snapshots" in checked.stdout


def _backup_adds(env: dict[str, str], password: str, data: Path) -> int:
    """The bytes a backup of `data` adds to the repository `env` names, after the copy."""
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], password, write=True) as repo:
        archive(repo, data)
        return repo.stats.raw_bytes_added


def test_copy_chunker_params_lets_copies_deduplicate_with_backups(source, dest, tmp_path):
    shared = {**dest, "SHADOWVAULT_REPOSITORY": str(tmp_path / "shared")}
    made = run(shared, "init", *_from(source), "--copy-chunker-params")
    assert made.exit_code == 0, made.stderr
    for env in (shared, dest):
        assert len(json_out(run(env, "copy", *_from(source), "--json"))["copied"]) == 3
    # the files copied are backed up once more into each: only the shared chunker finds them there
    assert _backup_adds(shared, DEST_PASSWORD, source["data"]) < 64 << 10
    assert _backup_adds(dest, DEST_PASSWORD, source["data"]) >= 3 << 20

    alone = run({**dest, "SHADOWVAULT_REPOSITORY": str(tmp_path / "alone")}, "init", *_from(source))
    assert "--copy-chunker-params" in one_error_line(alone)
    no_source = run(
        {**dest, "SHADOWVAULT_REPOSITORY": str(tmp_path / "alone")}, "init", "--copy-chunker-params"
    )
    assert "--from-repo" in one_error_line(no_source)


def test_the_source_password_is_kept_from_the_commands_shadowvault_runs(monkeypatch):
    monkeypatch.setenv("SHADOWVAULT_FROM_PASSWORD", "source secret")
    monkeypatch.setenv("SHADOWVAULT_FROM_PASSWORD_FILE", "/root/source.pw")
    seen = proc.output(["env"])
    assert "source secret" not in seen and "/root/source.pw" not in seen


def test_copy_goes_past_snapshots_it_cannot_read_names_them_and_exits_3(dest, tmp_path, caplog):
    """copy stopped at the first snapshot whose data it could not read: every other snapshot is
    copied, those it could not copy (lost data, a damaged snapshot file) are named, and it exits 3."""
    repo_path = tmp_path / "damaged-source"
    with Repository.init(repo_path, PASSWORD, kdf_params=FAST_KDF) as repo:
        first, _ = make_snapshot(repo, {"a": b"first's own"})
        lost, ids = make_snapshot(repo, {"b": os.urandom(5000)})
        third, _ = make_snapshot(repo, {"c": b"third's own"})
        lost_pack = repo.lookup(ids["b"][0]).pack
    (repo_path / "data" / lost_pack[:2] / lost_pack).unlink()  # only `lost` uses it
    garbage = repo_path / "snapshots" / ("ab" * 32)
    garbage.write_bytes(b"not a snapshot")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    source = ["--from-repo", repo_path, "--from-password-file", tmp_path / "password"]
    copied = run(dest, "copy", *source, "--json")
    assert copied.exit_code == 3, copied.stderr
    summary = json.loads(copied.stdout.splitlines()[-1])
    assert [c["source"] for c in summary["copied"]] == [first, third]
    assert sorted(f["source"] for f in summary["failed"]) == sorted([lost, garbage.name])
    assert "could not be copied" in copied.stderr
    # the damaged file is named once as the source is listed (once per listing, it was twice)
    said = f"snapshot {garbage.name[:8]} is damaged"
    assert [r.getMessage().startswith(said) for r in caplog.records].count(True) == 1
    assert sorted(s.original for _, s in _dest_snapshots(dest)) == sorted([first, third])
    named = run(dest, "copy", *source, lost[:8], garbage.name[:8], first[:8])
    assert named.exit_code == 3
    assert f"snapshot {lost[:8]} was not copied" in named.stderr
    assert f"snapshot {garbage.name[:8]} was not copied" in named.stderr
    only_lost = run(dest, "copy", *source, lost)
    assert "nothing was copied" in only_lost.stderr and only_lost.exit_code == 1
