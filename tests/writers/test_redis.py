"""Redis writer on a real server: every acknowledged write is in the RDB (and AOF), restore, failures."""

from __future__ import annotations

import shutil

import pytest

from shadowvault.errors import ShadowError
from shadowvault.shadow.coordinator import SetOptions, shadow_set
from shadowvault.shadow.manifest import Consistency, WriterState
from shadowvault.shadow.writers.base import RestoreContext
from shadowvault.shadow.writers.redis import RedisWriter
from tests.fixtures import servers as S
from tests.fixtures.loads import RedisLoad
from tests.fixtures.loopfs import loop_filesystem
from tests.writers.helpers import (
    copy_out,
    freeze_instant,
    lay_down,
    remove,
    report_of,
    restore_area,
    restore_root,
)

ROUNDS = 20


def check_restored(datadir, must_have: int, appendonly: bool = False) -> int:
    base = S.private_dir("sv-redisr-")
    restored = S.start_redis(datadir, base, S.free_port(), appendonly=appendonly)
    try:
        client = S.redis_client(restored)
        counter = int(client.get("counter") or 0)
        assert client.dbsize() == counter + 1, (client.dbsize(), counter)
        present = {key.decode() if isinstance(key, bytes) else key for key in client.keys("load:*")}
        missing = sorted(set(range(1, counter + 1)) - {int(key.split(":", 1)[1]) for key in present})
        assert not missing, missing[:10]  # one KEYS, not a round trip a key: 20 rounds of ~10k keys
        assert counter >= must_have, f"write {must_have} was acknowledged before the freeze but is missing"
        return counter
    finally:
        restored.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("appendonly", [False, True], ids=["rdb", "aof"])
def test_every_acknowledged_write_survives_shadow_sets_under_load(appendonly):
    rounds = ROUNDS if not appendonly else 3
    with (
        loop_filesystem("btrfs", 1 << 30) as fs,
        S.redis_server(fs.mount / "redis", appendonly=appendonly) as server,
    ):
        area = restore_area(fs.mount)
        load = RedisLoad(server)
        load.start()
        try:
            load.wait_for(20)
            for _ in range(rounds):
                root = restore_root(area)
                try:
                    with shadow_set(
                        [str(fs.mount)], SetOptions(auto_writers=True)
                    ) as manifest:  # found by discovery
                        report = report_of(manifest, "redis")
                        assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE, report.failure
                        component = report.components[0]
                        assert component.consistency == Consistency.APPLICATION
                        must_have = load.acked_before(freeze_instant(manifest, report))
                        lay_down(manifest, report, root)  # elsewhere: the live server is left alone
                    writer = RedisWriter(report.instance)
                    ctx = RestoreContext(components=report.components, target_root=str(root))
                    writer.post_restore(ctx)  # redis-check-rdb / redis-check-aof
                    restored_dir = root / component.metadata["dir"].lstrip("/")
                    check_restored(restored_dir, must_have, appendonly)
                finally:
                    remove(root)
            assert S.redis_client(server).ping()
        finally:
            load.stop()
        assert not load.errors


def test_a_damaged_rdb_is_rejected_at_restore(btrfs):
    with S.redis_server(btrfs.mount / "redis") as server:
        S.redis_client(server).set("k", "v")
        root = restore_root()
        try:
            with shadow_set(
                [str(btrfs.mount)], SetOptions(writers=[f"redis:127.0.0.1:{server.port}"], auto_writers=False)
            ) as m:
                report = report_of(m, "redis")
                rdb = copy_out(m, report.components[0].paths[0], root)
            data = bytearray(rdb.read_bytes())
            data[len(data) // 2] ^= 0xFF
            rdb.write_bytes(bytes(data))
            ctx = RestoreContext(components=report.components, target_root=str(root))
            with pytest.raises(Exception, match="redis-check-rdb rejects"):
                RedisWriter(report.instance).post_restore(ctx)
        finally:
            remove(root)


def test_server_down_and_wrong_password(btrfs):
    with S.redis_server(btrfs.mount / "redis", password="right") as server:
        wrong = RedisWriter(f"127.0.0.1:{server.port}", password="wrong", dir=str(server.datadir))
        with (
            pytest.raises(
                ShadowError,
                match=rf"writer redis:127.0.0.1:{server.port} failed at prepare_snapshot: "
                "cannot reach Redis",
            ),
            shadow_set([str(btrfs.mount)], SetOptions(writers=[wrong], auto_writers=False)),
        ):
            pass
        degrade = RedisWriter(
            f"127.0.0.1:{server.port}", password="wrong", dir=str(server.datadir), on_failure="degrade"
        )
        with shadow_set([str(btrfs.mount)], SetOptions(writers=[degrade], auto_writers=False)) as manifest:
            report = report_of(manifest, "redis")
            assert report.state == WriterState.FAILED_AT_PREPARE_SNAPSHOT
            assert report.components[0].consistency == Consistency.CRASH
        port = server.port
    down = RedisWriter(f"127.0.0.1:{port}", dir=str(btrfs.mount / "redis"))
    with (
        pytest.raises(
            ShadowError, match=rf"writer redis:127.0.0.1:{port} failed at prepare_snapshot: .*refused"
        ),
        shadow_set([str(btrfs.mount)], SetOptions(writers=[down], auto_writers=False)),
    ):
        pass
