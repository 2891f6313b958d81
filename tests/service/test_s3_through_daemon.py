"""An S3 repository is opened where its credentials are. The daemon here has none (as a daemon
started by systemd has none of its caller's): a restore through it runs in the caller's process
with the caller's credentials."""

from __future__ import annotations

import os
from pathlib import Path

from shadowvault.client import Client
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.s3_server import S3Server
from tests.service.daemon import running_daemon
from tests.service.test_cli_through_daemon import _masked

NO_CREDENTIALS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_PROFILE": None,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("alpha\n")
    (root / "b.bin").write_bytes(os.urandom(200_000))


def test_a_restore_of_an_s3_repository_with_a_daemon_running_uses_the_callers_credentials(
    s3_env: S3Server, cli, tmp_path: Path
) -> None:
    url = s3_env.url()
    Repository.init(url, PASSWORD, kdf_params=FAST_KDF).close()
    src = tmp_path / "src"
    _tree(src)
    env = {"SHADOWVAULT_REPOSITORY": url, "SHADOWVAULT_PASSWORD": PASSWORD}
    with running_daemon(environment=NO_CREDENTIALS) as daemon:
        env["SHADOWVAULT_SOCKET"] = str(daemon.socket)
        backed_up = cli("backup", "--provider", "none", src, env=env)
        assert backed_up.returncode == 0, backed_up.stderr
        outputs = {}
        for mode, flags in (("daemon", []), ("in-process", ["--no-daemon"])):
            target = tmp_path / f"r-{mode}"
            restored = cli(*flags, "restore", "latest", "--target", target, env=env)
            assert restored.returncode == 0, restored.stderr
            copy = target / str(src).lstrip("/")
            assert (copy / "sub" / "a.txt").read_text() == "alpha\n"
            assert (copy / "b.bin").read_bytes() == (src / "b.bin").read_bytes()
            outputs[mode] = (_masked(restored.stdout), _masked(restored.stderr))
        assert outputs["daemon"] == outputs["in-process"]
        with Client(daemon.socket) as client:
            assert client.runs() == []  # the daemon never saw the repository
