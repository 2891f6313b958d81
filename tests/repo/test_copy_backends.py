"""`shadowvault copy` between backends: a local repository into S3 and back out of it (moto's server
on 127.0.0.1): what comes back out of S3 checks with --read-data and restores byte for byte (the
skipping of a second copy and the checks are tested on local repositories, tests/test_cli_copy.py)."""

from __future__ import annotations

import os
from pathlib import Path

from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.archive.helpers import FAST_KDF, archive
from tests.fixtures.s3_server import S3Server
from tests.inprocess_cli import json_out, run
from tests.repo.helpers import PASSWORD


def test_copy_local_to_s3_and_back(s3_env: S3Server, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "big").write_bytes(os.urandom(1 << 20))
    (data / "sub" / "small").write_text("small\n")
    local, s3_url, back = tmp_path / "local", s3_env.url(), tmp_path / "back"
    with Repository.init(local, PASSWORD, kdf_params=FAST_KDF) as repo:
        root, _ = archive(repo, data)
        repo.save_snapshot(Snapshot(time=1.0e9, host="h", paths=[str(data)], tree=root))
    Repository.init(s3_url, "s3 password", kdf_params=FAST_KDF).close()
    Repository.init(back, "back password", kdf_params=FAST_KDF).close()
    into_s3 = {"SHADOWVAULT_REPOSITORY": s3_url, "SHADOWVAULT_PASSWORD": "s3 password"}
    into_back = {"SHADOWVAULT_REPOSITORY": str(back), "SHADOWVAULT_PASSWORD": "back password"}

    up = json_out(
        run({**into_s3, "SHADOWVAULT_FROM_PASSWORD": PASSWORD}, "copy", "--from-repo", local, "--json")
    )
    assert len(up["copied"]) == 1
    down = json_out(
        run(
            {**into_back, "SHADOWVAULT_FROM_PASSWORD": "s3 password"}, "copy", "--from-repo", s3_url, "--json"
        )
    )
    assert len(down["copied"]) == 1
    checked = run(into_back, "check", "--read-data")  # (a second copy out of S3 is tested locally)
    assert checked.exit_code == 0 and "no errors: 1 snapshots" in checked.stdout, checked.stderr

    target = tmp_path / "restored"
    restored = run(into_back, "restore", down["copied"][0]["copy"], "--target", target)
    assert restored.exit_code == 0, restored.stderr
    out = target / str(data).lstrip("/")
    assert (out / "big").read_bytes() == (data / "big").read_bytes()
    assert (out / "sub" / "small").read_text() == "small\n"
