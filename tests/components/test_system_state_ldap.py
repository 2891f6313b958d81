"""system-state carries the directory server's data: a slapd under the source root, rebuilt in the target."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from shadowvault.components.directory_server import target_config
from shadowvault.directory.slapd import load_ldif
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.components.roots import make_root
from tests.fixtures import servers as S
from tests.fixtures.tools import require_root, require_tools

PEOPLE = ("alice", "bob", "carol")


def _messages(stdout: str, kind: str) -> list[dict]:
    return [m for m in map(json.loads, stdout.splitlines()) if m.get("message_type") == kind]


def _plan(done: subprocess.CompletedProcess) -> set[tuple[str, str, str]]:
    (doc,) = _messages(done.stdout, "plan")
    return {(a["verb"], a["kind"], a["target"]) for a in doc["actions"]}


def _slapcat(dbdir: Path) -> str:
    """The database at `dbdir` read with a configuration of our own (not the one restored)."""
    base = S.private_dir("sv-ldapcheck-")
    try:
        conf = S.slapd_conf(base, dbdir)
        done = subprocess.run(["slapcat", "-f", str(conf)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_directory_server_data_is_restored_into_the_target_root(tmp_path: Path, cli) -> None:
    require_root()
    require_tools("slapd", "slapcat", "slapadd", "ldapadd")
    source, target = make_root(tmp_path / "source"), make_root(tmp_path / "target")
    (source / "etc/hostname").write_text("ldaphost\n")
    dbdir = source / "var/lib/ldap"
    dbdir.mkdir(parents=True)
    runtime = S.private_dir("sv-ldaprun-")  # pid file, socket and log: not part of the machine
    conf = source / "etc/ldap/slapd.conf"
    conf.parent.mkdir(parents=True)
    shutil.move(S.slapd_conf(runtime, dbdir), conf)
    env = {"SHADOWVAULT_REPOSITORY": str(tmp_path / "repo"), "SHADOWVAULT_PASSWORD": PASSWORD}
    Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF).close()
    server = S.start_slapd(conf, runtime, S.free_port())
    try:
        S.ldap_add(
            server,
            f"dn: {S.LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: E\ndc: example\n\n"
            + "".join(f"dn: uid={p},{S.LDAP_SUFFIX}\nobjectClass: account\nuid: {p}\n\n" for p in PEOPLE),
        )
        # slapd keeps running during the backup: slapcat reads one consistent transaction
        done = cli("backup", "--component", "system-state", "--source-root", str(source), "--json", env=env)
        assert done.returncode == 0, done.stderr
    finally:
        server.stop()
        shutil.rmtree(runtime, ignore_errors=True)
    snap_id = _messages(done.stdout, "summary")[0]["snapshot_id"]
    source_before = _slapcat(dbdir)

    restore = ("restore", snap_id, "--component", "system-state", "--target-root", str(target))
    dry = cli(*restore, "--no-packages", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert ("load", "directory", S.LDAP_SUFFIX) in _plan(dry)
    assert not (target / "var/lib/ldap").exists()  # a dry run changes nothing

    done = cli(*restore, "--no-packages", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert (target / "etc/ldap/slapd.conf").read_text() == conf.read_text()  # the config came with /etc
    restored = _slapcat(target / "var/lib/ldap")
    for person in PEOPLE:
        assert f"dn: uid={person},{S.LDAP_SUFFIX}" in restored
    assert _slapcat(dbdir) == source_before  # the source's (here: the host's) database was not touched

    # a second restore leaves the target's database alone (unless --overwrite)
    again = cli(*restore, "--no-packages", "--dry-run", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert ("leave", "directory", S.LDAP_SUFFIX) in _plan(again)
    forced = cli(*restore, "--no-packages", "--overwrite", "always", "--dry-run", "--json", env=env)
    assert forced.returncode == 0, forced.stderr
    assert ("load", "directory", S.LDAP_SUFFIX) in _plan(forced)


def test_a_slapd_d_configuration_is_pointed_at_the_target(tmp_path: Path) -> None:
    """cn=config (slapd.d): the private copy names the target's database directory, slapadd fills it."""
    require_root()
    require_tools("slaptest", "slapadd", "slapcat")
    top = f"dn: {S.LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: E\ndc: example\n\n"
    hostdir = tmp_path / "host-db"  # the directory the configuration names: must stay as it is
    hostdir.mkdir()
    base = S.private_dir("sv-ldapd-")
    try:
        conf = S.slapd_conf(base, hostdir)
        (base / "top.ldif").write_text(top)
        subprocess.run(["slapadd", "-f", str(conf), "-l", str(base / "top.ldif")], check=True, timeout=60)
        slapd_d = tmp_path / "target/etc/ldap/slapd.d"
        slapd_d.mkdir(parents=True)
        subprocess.run(["slaptest", "-f", str(conf), "-F", str(slapd_d)], check=True, capture_output=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    host_before = _slapcat(hostdir)
    dest = tmp_path / "target/var/lib/ldap"
    dest.mkdir(parents=True)
    (tmp_path / "copy").mkdir()
    private = target_config(slapd_d, tmp_path / "target", 1, dest, tmp_path / "copy")
    ldif = top + f"dn: uid=dave,{S.LDAP_SUFFIX}\nobjectClass: account\nuid: dave\n"
    load_ldif(str(private), str(dest), ldif.encode(), S.LDAP_SUFFIX, 1)
    assert f"dn: uid=dave,{S.LDAP_SUFFIX}" in _slapcat(dest)
    assert _slapcat(hostdir) == host_before
