"""`writers list` logs in to each application writer's server, as the first event of a backup would:
wrong credentials or a server that is down show as `unreachable` with the reason. It used to list
such a writer as `stable`, and the admin found out at the next backup's prepare_snapshot."""

from __future__ import annotations

import json
import shutil

from tests.fixtures import servers as S


def test_wrong_credentials_and_a_server_that_is_down_are_unreachable(private_dirs, cli):
    base = S.private_dir("sv-pg-probe-")
    try:
        check_listing(base / "data", private_dirs, cli)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def check_listing(datadir, private_dirs, cli) -> None:
    """A cluster with a writers.d entry whose password is wrong, and a Redis entry where none runs."""
    d = private_dirs / "config" / "writers.d"
    with S.postgres_server(datadir) as pg:
        (d / "pg.toml").write_text(
            f'type = "postgresql"\ninstance = "{pg.datadir}"\n'
            f'user = "{S.PG_BACKUP_ROLE}"\npassword = "wrong"\n'
        )
        (d / "redis.toml").write_text(f'type = "redis"\ninstance = "127.0.0.1:{S.free_port()}"\n')
        for f in d.iterdir():
            f.chmod(0o644)
        done = cli("writers", "list", "--json", env={"SHADOWVAULT_CONFIG_DIR": str(private_dirs / "config")})
        assert done.returncode == 0, done.stderr
        entries = {(e["writer"], e["kind"]): e for e in json.loads(done.stdout)}
        configured = entries[(f"postgresql:{pg.datadir}", "configured")]
        assert configured["state"] == "unreachable", configured
        assert "password authentication failed" in configured["detail"]
        assert entries[(f"postgresql:{pg.datadir}", "discovered")]["state"] == "stable"  # as postgres
        (redis,) = [e for (name, kind), e in entries.items() if name.startswith("redis:127.0.0.1")]
        assert redis["state"] == "unreachable" and "cannot reach Redis" in redis["detail"], redis
