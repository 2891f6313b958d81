"""OpenLDAP writer on a real slapd: every acknowledged add survives, restore by files and by LDIF."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shadowvault.shadow.coordinator import SetOptions, shadow_set
from shadowvault.shadow.manifest import Component, Consistency, WriterState
from shadowvault.shadow.writers.base import RestoreContext
from shadowvault.shadow.writers.ldap import LdapWriter
from tests.fixtures import servers as S
from tests.fixtures.loads import LdapLoad
from tests.fixtures.loopfs import loop_filesystem
from tests.writers.helpers import freeze_instant, lay_down, remove, report_of, restore_area, restore_root

ROUNDS = 20


def restore_and_check(root: Path, components: list[Component], must_have: int, method: str) -> int:
    """Restore through the writer (files or slapadd from the kept LDIF), start slapd on it, count entries."""
    meta = components[0].metadata
    dbdir = root / meta["directory"].lstrip("/")
    if method == "ldif":
        shutil.rmtree(dbdir, ignore_errors=True)
        dbdir.mkdir(parents=True)
    base = S.private_dir("sv-ldapr-")
    conf = S.slapd_conf(base, dbdir)
    writer = LdapWriter(components[0].instance)
    ctx = RestoreContext(
        components=components,
        target_root=str(root),
        options={"slapd_config": str(conf), "ldap_method": method},
    )
    writer.post_restore(ctx)  # slapadd when asked, then slapcat must read the database
    try:
        highest = count_entries(conf, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert highest >= must_have, f"entry {must_have} was acknowledged before the freeze but is missing"
    return highest


def count_entries(conf: Path, base: Path) -> int:
    """Start slapd on `conf`, read the load's entries: 1..k with no gap; returns k."""
    server = S.start_slapd(conf, base, S.free_port())
    try:
        out = subprocess.run(
            [
                "ldapsearch",
                "-x",
                "-H",
                server.socket,
                "-b",
                f"ou=load,{S.LDAP_SUFFIX}",
                "-s",
                "one",
                "-LLL",
                "(objectClass=person)",
                "cn",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        server.stop()
    numbers = sorted(int(line.split()[1]) for line in out.splitlines() if line.startswith("cn: "))
    highest = numbers[-1] if numbers else 0
    assert numbers == list(range(1, highest + 1)), "a gap in the acknowledged adds"
    return highest


def test_every_acknowledged_add_survives_20_shadow_sets_under_load(btrfs):
    area = restore_area(btrfs.mount)
    with S.slapd_server(btrfs.mount / "ldap") as server:
        load = LdapLoad(server)
        load.start()
        try:
            load.wait_for(10)
            for i in range(ROUNDS):
                root = restore_root(area)
                try:
                    with shadow_set([str(btrfs.mount)]) as manifest:  # slapd found by discovery
                        report = report_of(manifest, "ldap")
                        assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE, report.failure
                        component = report.components[0]
                        assert component.consistency == Consistency.APPLICATION
                        assert component.metadata["files_consistent"] is True
                        assert component.metadata["ldif_entries"] >= 2
                        must_have = load.acked_before(freeze_instant(manifest, report))
                        lay_down(manifest, report, root)
                    method = "ldif" if i % 5 == 4 else "files"
                    restore_and_check(root, report.components, must_have, method)
                finally:
                    remove(root)
        finally:
            load.stop()
        assert not load.errors


def test_reflink_copy_restores_from_the_ldif():
    """A file-by-file copy of a live data.mdb is not trusted: the manifest's LDIF is the restore path."""
    with loop_filesystem("xfs", 1 << 30) as fs, S.slapd_server(fs.mount / "ldap") as server:
        load = LdapLoad(server)
        load.start()
        root = restore_root()
        try:
            load.wait_for(10)
            with shadow_set(
                [str(fs.mount)],
                SetOptions(writers=["ldap:" + str(server.config)], provider="reflink", auto_writers=False),
            ) as m:
                report = report_of(m, "ldap")
                assert report.components[0].metadata["files_consistent"] is False
                must_have = load.acked_before(freeze_instant(m, report))
            (root / report.components[0].metadata["directory"].lstrip("/")).mkdir(parents=True)
            ctx_method = None  # the writer picks "ldif" itself because the files are not trusted
            assert restore_and_check(root, report.components, must_have, ctx_method or "ldif") >= must_have
        finally:
            load.stop()
            remove(root)


def test_unreadable_configuration_names_the_writer(btrfs):
    from shadowvault.errors import ShadowError

    missing = btrfs.mount / "nowhere" / "slapd.conf"
    with (
        pytest.raises(
            ShadowError, match=rf"writer ldap:{missing} failed at (identify|prepare_backup): cannot read"
        ),
        shadow_set([str(btrfs.mount)], SetOptions(writers=[LdapWriter(str(missing))], auto_writers=False)),
    ):
        pass


def test_cn_config_directory_is_understood(btrfs):
    """slapd.d (cn=config) as Debian installs it: the writer finds the mdb database and its suffix."""
    from shadowvault.directory.slapd import parse_slapd_d

    with S.slapd_server(btrfs.mount / "ldap") as server:
        slapd_d = server.base / "slapd.d"
        slapd_d.mkdir()
        subprocess.run(
            ["slaptest", "-f", str(server.config), "-F", str(slapd_d)], check=True, capture_output=True
        )
        databases, pidfile = parse_slapd_d(str(slapd_d))
        assert [(db.suffix, db.directory) for db in databases] == [(S.LDAP_SUFFIX, str(btrfs.mount / "ldap"))]
        assert pidfile == str(server.base / "slapd.pid")
        components = LdapWriter(str(slapd_d)).identify()
        assert components[0].paths == [str(btrfs.mount / "ldap" / "data.mdb")]
