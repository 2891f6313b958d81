"""PostgreSQL under write load on loop ext4, shadowed by the fanotify provider, restored from the shadow.

The server keeps its relation files open for writing, so most of the cluster is copied aside at the
commit; the WAL segments written after the instant are guarded by events. Each restored copy must
start, pass pg_amcheck and hold every transaction acknowledged before the freeze. Rounds alternate
between a restore by plain crash recovery, which needs the shadow to be one instant (a base backup
with its backup_label would repair pages changed during the copy from the WAL), and one with the
writer's backup_label. (PostgreSQL switches WAL segments at pg_backup_stop and writes data pages
only at checkpoints, so little here goes through the commit-time copies: the SQLite tests with a
connection held open across the instant are the ones that prove those.)
"""

from __future__ import annotations

import time

import pytest

from shadowvault.shadow.coordinator import SetOptions, shadow_set
from shadowvault.shadow.manifest import WriterState
from tests.fixtures import servers as S
from tests.fixtures.loads import PostgresLoad
from tests.fixtures.loopfs import loop_filesystem
from tests.writers.helpers import freeze_instant, remove, report_of, restore_root
from tests.writers.test_postgresql import check_restored, close_restored, lay_down, open_restored

ROUNDS = 3


@pytest.fixture
def pg_on_ext4():
    with loop_filesystem("ext4", 1 << 30) as fs:
        S.open_for_service(fs.mount)
        with S.postgres_server(fs.mount / "pgdata", wal_segsize_mb=1) as pg:
            yield fs, pg


def test_every_acknowledged_transaction_survives_fanotify_shadows_under_load(pg_on_ext4):
    fs, pg = pg_on_ext4
    load = PostgresLoad(pg)
    load.setup()
    load.start()
    options = SetOptions(provider="fanotify", writers=[f"postgresql:{pg.datadir}"], auto_writers=False)
    try:
        load.wait_for(20)
        for round_ in range(ROUNDS):
            mode = "crash" if round_ % 2 == 0 else "backup_label"
            root = restore_root()
            try:
                with shadow_set([str(fs.mount)], options) as manifest:
                    made = time.time()
                    assert manifest.shadows[0].provider == "fanotify"
                    report = report_of(manifest, "postgresql")
                    assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE, report.failure
                    must_have = load.acked_before(freeze_instant(manifest, report))
                    load.wait_for(len(load.acks) + 20)  # the server writes on while we copy out
                    lay_down(manifest, report.components, root)
                restored = open_restored(root, report.components, mode=mode)
                try:
                    highest = check_restored(restored, must_have)
                    # and nothing sent after the shadow was made: the copy is that instant, not later
                    assert highest < min(a.n for a in load.acks if a.sent > made)
                finally:
                    close_restored(restored)
            finally:
                remove(root)
    finally:
        load.stop()
    assert not load.errors
