"""An S3 repository is opened where its credentials are. The daemon here has none (as a daemon
started by systemd has none of its caller's): a restore through it runs in the caller's process
with the caller's credentials; a job signs with those its environment_file names, whoever runs it;
a job that names none fails saying it is the daemon that has none."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shadowvault.client import Client
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.jobs.test_scheduled import setup  # noqa: F401 - a fixture
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


def test_an_s3_job_run_by_the_daemon_signs_with_its_environment_file(
    s3_env: S3Server,
    cli,
    setup: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    url = s3_env.url()
    Repository.init(url, PASSWORD, kdf_params=FAST_KDF).close()
    credentials = tmp_path / "s3.env"
    credentials.write_text(
        f"# the job's bucket\nAWS_ACCESS_KEY_ID={ACCESS_KEY}\nexport AWS_SECRET_ACCESS_KEY='{SECRET_KEY}'\n"
    )
    credentials.chmod(0o600)
    common = (
        f'repository = "{url}"\npassword_file = "{setup["password"]}"\nschedule = "daily"\n'
        f'paths = ["{setup["src"]}"]\nprovider = "none"\n'
    )
    (setup["jobs"] / "named.toml").write_text(common + f'environment_file = "{credentials}"\n')
    (setup["jobs"] / "bare.toml").write_text(common)
    with running_daemon(environment=NO_CREDENTIALS) as daemon, Client(daemon.socket) as client:
        env = {"SHADOWVAULT_SOCKET": str(daemon.socket)}
        named = cli("jobs", "run", "named", "--json", env=env)
        assert named.returncode == 0, named.stderr
        record = json.loads(named.stdout)
        assert record["status"] == "success" and record["snapshot_id"]
        bare = cli("jobs", "run", "bare", env=env)
        assert bare.returncode == 1
        assert bare.stderr.splitlines() == [
            f"shadowvault: error: job bare: the daemon has no S3 credentials for {url}: a job names its "
            "own in its environment_file (docs/jobs.md); else give the daemon AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in its service's environment, or root's ~/.aws/credentials"
        ]
        assert [r["description"] for r in client.runs()] == ["job named", "job bare"]  # both in the daemon
    with Repository.open(url, PASSWORD) as repo:
        assert [snap.tags for _, snap in repo.list_snapshots()] == [["job:named"]]
