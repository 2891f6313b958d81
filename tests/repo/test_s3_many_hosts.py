"""Many hosts, one repository on S3: four processes back up at once (three rounds each) while
`forget --keep-last 1` and `prune` run again and again beside them, lock-free. Afterwards every
snapshot restores byte for byte and `check --read-data` passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.s3_server import S3Server
from tests.repo.helpers import PASSWORD
from tests.repo.s3_host_process import host_files

HOSTS = ("alpha", "bravo", "charlie", "delta")
ROUNDS = 3
HOST_SCRIPT = Path(__file__).with_name("s3_host_process.py")


def _env(**extra: str) -> dict[str, str]:
    # Server and clients share this machine's clock: prune may treat packs older than 2 s as settled.
    return {**os.environ, "SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_S3_CLOCK_MARGIN": "2", **extra}


def _cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_four_hosts_back_up_at_once_while_prune_runs(s3_url: str, s3_env: S3Server, tmp_path: Path) -> None:
    assert _cli("init", "--repo", s3_url).returncode == 0
    sources = {host: tmp_path / f"src-{host}" for host in HOSTS}
    hosts = [
        subprocess.Popen(
            [sys.executable, str(HOST_SCRIPT), s3_url, host, str(sources[host]), str(ROUNDS)],
            env=_env(SHADOWVAULT_CACHE_DIR=str(tmp_path / f"cache-{host}")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in HOSTS
    ]
    prunes: list[dict] = []
    try:
        while any(p.poll() is None for p in hosts) or not prunes:
            forgot = _cli("forget", "--repo", s3_url, "--keep-last", "1", "--json")
            assert forgot.returncode == 0, forgot.stderr
            pruned = _cli("prune", "--repo", s3_url, "--json")
            assert pruned.returncode == 0, pruned.stderr
            prunes.append(json.loads(pruned.stdout))
    finally:
        for p in hosts:
            if p.poll() is None:
                p.kill()
        outputs = [p.communicate() for p in hosts]
    for p, (out, err) in zip(hosts, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.count("done") == ROUNDS
    assert len(prunes) >= 2

    time.sleep(2.5)  # past the clock margin: what the last backups left unreferenced may go now
    final = _cli("prune", "--repo", s3_url, "--json")
    assert final.returncode == 0, final.stderr
    assert sum(p["packs_deleted"] for p in [*prunes, json.loads(final.stdout)]) > 0  # prune did work

    checked = _cli("check", "--read-data", "--repo", s3_url, "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["unindexed_packs"] == 0 and report["blobs_verified"] > 0

    listed = _cli("snapshots", "--repo", s3_url, "--json")
    assert listed.returncode == 0, listed.stderr
    snapshots = json.loads(listed.stdout)
    assert {s["host"] for s in snapshots} == set(HOSTS)
    for snap in snapshots:
        round_no = int(next(t for t in snap["tags"] if t.startswith("round=")).split("=")[1])
        target = tmp_path / "restore" / snap["id"][:12]
        done = _cli("restore", snap["id"], "--repo", s3_url, "--target", str(target))
        assert done.returncode == 0, done.stderr
        restored = target / str(sources[snap["host"]]).lstrip("/")
        for name, data in host_files(snap["host"], round_no).items():
            assert (restored / name).read_bytes() == data, (snap["host"], round_no, name)
