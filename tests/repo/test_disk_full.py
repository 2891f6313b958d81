"""A repository on a full filesystem: one clear error, and every earlier snapshot stays intact."""

from __future__ import annotations

import os

import pytest

from shadowvault.errors import RepositoryError
from shadowvault.repo.check import check
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from tests.fixtures.loopfs import loop_filesystem
from tests.repo.helpers import PASSWORD, env_for, make_snapshot, random_files, restore_all


def test_full_storage_is_a_clear_error_and_old_snapshots_survive(cli):
    with loop_filesystem("ext4", size=64 << 20) as fs:
        path = fs.mount / "repo"
        files = random_files(3, 300_000, seed=9)
        with Repository.init(path, PASSWORD, pack_size=1 << 20) as repo:
            first, _ = make_snapshot(repo, files)
        repo = Repository.open(path, PASSWORD, write=True)
        with pytest.raises(RepositoryError, match="repository storage is full") as caught:
            for _ in range(200):  # 200 MiB of incompressible data into 64 MiB
                repo.save_blob(BlobType.DATA, os.urandom(1 << 20))
            repo.flush()
        assert "\n" not in str(caught.value)
        repo.close(flush=False)
        with Repository.open(path, PASSWORD) as repo:
            report = check(repo, read_data_fraction=1.0)
            assert report.ok, report.errors
            assert restore_all(repo, first) == {**files, "sub/inner": b"inner"}
        pruned = cli("prune", "--json", env=env_for(path))  # frees the space the failed backup used
        assert pruned.returncode == 0, pruned.stderr
        assert cli("check", "--read-data", env=env_for(path)).returncode == 0
        with Repository.open(path, PASSWORD, write=True) as repo:  # and writing works again
            second, _ = make_snapshot(repo, {"after": b"more data"})
            assert restore_all(repo, second)["after"] == b"more data"
