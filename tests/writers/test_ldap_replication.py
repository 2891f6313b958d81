"""Directory recovery on a replicating OpenLDAP pair: non-authoritative and authoritative restore, end to end.

One provider and its syncrepl consumer (tests/fixtures/slapd_pair.py) on a loop btrfs, backed up
once through both ldap writers. Then, as an administrator meets it: an entry deleted by mistake
after the backup stays deleted when the consumer is restored non-authoritatively (it catches up and
equals its provider again), and comes back on both servers with an authoritative restore of its
subtree, which also makes the backup's version of a changed entry win while entries created since
stay; a deleted subtree comes back parents first. Bad DNs, DNs the backup lacks and an entry whose
parent is gone are one-line errors that change nothing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import zstandard

from shadowvault.directory.slapd_replication import database_settings
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.writers.ldap_authoritative import kept_ldif
from tests import inprocess_cli
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.loopfs import loop_filesystem
from tests.fixtures.slapd_pair import ROOTDN, SUFFIX, SlapdPair, slapd_pair

PEOPLE = f"ou=people,{SUFFIX}"
GROUPS_OU, ADMINS = f"ou=groups,{SUFFIX}", f"cn=admins,ou=groups,{SUFFIX}"
GROUPS = f"""
dn: {GROUPS_OU}
objectClass: organizationalUnit
ou: groups

dn: {ADMINS}
objectClass: groupOfNames
cn: admins
member: uid=alice,{PEOPLE}
"""


def person(uid: str, description: str) -> str:
    return (
        f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
        f"sn: {uid.title()}son\ndescription: {description}\nuserPassword: {uid}-secret\n"
    )


@dataclass
class World:
    pair: SlapdPair
    env: dict[str, str]
    snapshot: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The shadowvault command as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "shadowvault.cli.launch", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=300,
        )

    def writer(self, role: str) -> str:
        return f"ldap:{getattr(self.pair, role).config}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The pair with four people, backed up once (both ldap writers) into a fresh repository."""
    dirs = tmp_path_factory.mktemp("sv-ldaprepl")
    (dirs / "config" / "writers.d").mkdir(parents=True)
    (dirs / "state").mkdir()
    Repository.init(dirs / "repo", PASSWORD, kdf_params=FAST_KDF).close()
    env = {
        "SHADOWVAULT_REPOSITORY": str(dirs / "repo"),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
        "SHADOWVAULT_CONFIG_DIR": str(dirs / "config"),
        "SHADOWVAULT_STATE_DIR": str(dirs / "state"),
    }
    with loop_filesystem("btrfs") as fs, slapd_pair(fs.mount / "ldap") as pair:
        pair.provider.ldap(
            "ldapadd",
            "\n".join(person(uid, "as backed up") for uid in ("alice", "bob", "carol", "dave", "erin"))
            + GROUPS,
        )
        pair.wait_in_sync()
        world = World(pair, env, "")
        done = world.run(
            "backup", "--json", "--writer", world.writer("provider"), "--writer", world.writer("consumer"),
            str(fs.mount),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = [m for m in map(json.loads, done.stdout.splitlines()) if m["message_type"] == "summary"]
        world.snapshot = summary[0]["snapshot_id"]
        yield world


def test_non_authoritative_restore_of_the_consumer_catches_up_and_the_deletion_stays(world: World):
    pair = world.pair
    pair.provider.ldap("ldapdelete", f"uid=bob,{PEOPLE}\n")  # deleted after the backup
    pair.provider.ldap("ldapadd", person("frank", "added after the backup"))
    pair.wait_in_sync()
    before_pid = pair.consumer.pid()

    start = json.dumps(pair.consumer.start_argv)
    done = world.run(
        "restore", world.snapshot, "--writer", world.writer("consumer"),
        "--writer-option", f"ldap.start_command={start}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"restored {world.writer('consumer')} in place through its writer" in done.stderr
    assert (
        f"non-authoritative restore: a syncrepl consumer of ldap://127.0.0.1:{pair.provider.port}/"
        in done.stderr
    ), done.stderr
    set_aside = [name for name in os.listdir(pair.consumer.db) if name.startswith("data.mdb.pre-restore-")]
    assert set_aside, "the damaged replica's database was not set aside"

    pair.consumer.wait_running()  # started again by the restore's start_command
    assert pair.consumer.pid() != before_pid
    pair.wait_in_sync()  # equal to its partner: entries, values, UUIDs and change stamps
    assert not pair.consumer.has(f"uid=bob,{PEOPLE}")
    assert not pair.provider.has(f"uid=bob,{PEOPLE}")
    assert pair.consumer.has(f"uid=frank,{PEOPLE}")


def test_authoritative_restore_brings_a_deleted_entry_back_on_both_servers(world: World):
    pair = world.pair
    carol, alice = f"uid=carol,{PEOPLE}", f"uid=alice,{PEOPLE}"
    pair.provider.ldap("ldapdelete", f"{carol}\n")  # deleted by mistake after the backup
    pair.provider.ldap(
        "ldapmodify", f"dn: {alice}\nchangetype: modify\nreplace: description\ndescription: changed later\n"
    )
    pair.provider.ldap("ldapadd", person("gina", "added after the backup"))
    pair.wait_in_sync()
    assert not pair.consumer.has(carol)
    writer = world.writer("provider")

    dry = world.run(
        "restore", world.snapshot, "--writer", writer, "--authoritative", PEOPLE, "--dry-run", "--json"
    )
    assert dry.returncode == 0, dry.stderr
    plan, summary = [json.loads(line) for line in dry.stdout.splitlines()]
    actions = {e["dn"].lower(): e["action"] for e in plan["entries"]}
    assert (plan["mode"], plan["role"], summary["dry_run"]) == ("authoritative", "provider", True)
    assert plan["url"].startswith("ldapi://")
    assert (actions[carol], actions[alice], actions[PEOPLE]) == ("add", "rewrite", "keep")
    assert not pair.provider.has(carol), "a dry run changed the directory"

    typed = "OU=People, DC=Example,dc=com"  # as an administrator may type it: the same DN
    done = world.run("restore", world.snapshot, "--writer", writer, "--authoritative", typed)
    assert done.returncode == 0, done.stderr
    assert f"authoritative restore of {typed} on ldapi://" in done.stdout
    assert f"  add {carol}" in done.stdout and f"  rewrite {alice}: description" in done.stdout
    added = list(actions.values()).count("add")  # bob too, when the test above deleted him
    assert f"restored {writer} (authoritative): {added} added, 1 rewritten" in done.stderr, done.stderr

    pair.wait_in_sync()
    for server in (pair.provider, pair.consumer):
        entries = server.entries(PEOPLE)
        assert carol in entries, f"{server.role} lacks the restored entry"
        assert entries[carol]["description"] == [b"as backed up"]
        assert entries[carol]["userpassword"] == [b"carol-secret"]
        assert entries[alice]["description"] == [b"as backed up"], "the backup's version did not win"
        assert f"uid=gina,{PEOPLE}" in entries, "an entry created since the backup was removed"
    # fresh change stamps: newer than any the backup held (entryCSNs sort by time)
    stamps = [e["entrycsn"][0] for e in pair.provider.entries(PEOPLE).values()]
    assert pair.provider.entries(carol)[carol]["entrycsn"][0] == max(stamps)


def test_bad_and_unknown_dns_are_one_line_errors_that_change_nothing(world: World):
    pair = world.pair
    before = pair.provider.entries()
    provider, consumer = world.writer("provider"), world.writer("consumer")
    cases = {
        "not a DN: people": ("--writer", provider, "--authoritative", "people"),
        f"uid=nobody,{PEOPLE} is not in the backup": (
            "--writer", provider, "--authoritative", f"uid=nobody,{PEOPLE}",
        ),
        "dc=other,dc=org is not in the backup": ("--writer", provider, "--authoritative", "dc=other,dc=org"),
        "is a read-only syncrepl consumer": ("--writer", consumer, "--authoritative", PEOPLE),
        "--authoritative goes with --writer": ("--authoritative", PEOPLE, "--target", "/nonexistent"),
    }  # fmt: skip
    for expected, args in cases.items():
        done = inprocess_cli.run(world.env, "restore", world.snapshot, *args)
        assert done.exit_code == 2, (args, done.stdout, done.stderr)
        line = inprocess_cli.one_error_line(done)
        assert expected in line, (expected, line)
    assert pair.provider.entries() == before
    pair.wait_in_sync()


def test_the_role_is_read_from_slapd_conf_and_from_a_slapd_d(world: World, tmp_path: Path):
    """cn=config (slapd.d), as Debian installs slapd, says the same as the slapd.conf it came from."""
    pair = world.pair
    for server, role in ((pair.provider, "provider"), (pair.consumer, "consumer")):
        slapd_d = tmp_path / role
        slapd_d.mkdir()
        subprocess.run(
            ["slaptest", "-f", str(server.config), "-F", str(slapd_d)], check=True, capture_output=True
        )
        for config in (server.config, slapd_d):
            settings = database_settings(str(config), SUFFIX.upper())
            assert (settings.role, settings.rootdn) == (role, ROOTDN), config
            expected = [f"ldap://127.0.0.1:{pair.provider.port}/"] if role == "consumer" else []
            assert settings.providers == expected, config


def test_a_deleted_subtree_comes_back_parents_first(world: World):
    """A group and the ou holding it, both deleted: the group alone cannot come back (its parent is
    missing, nothing is written); both named (--authoritative twice), they come back on both servers."""
    pair = world.pair
    pair.provider.ldap("ldapdelete", f"{ADMINS}\n{GROUPS_OU}\n")
    pair.wait_in_sync()
    writer = world.writer("provider")

    refused = inprocess_cli.run(
        world.env, "restore", world.snapshot, "--writer", writer, "--authoritative", ADMINS
    )
    assert refused.exit_code == 2, refused.stderr
    assert f"its parent {GROUPS_OU} is not on the server" in inprocess_cli.one_error_line(refused)
    assert not pair.provider.has(GROUPS_OU)

    done = inprocess_cli.run(
        world.env, "restore", world.snapshot, "--writer", writer,
        "--authoritative", ADMINS, "--authoritative", GROUPS_OU,
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert done.stdout.index(f"  add {GROUPS_OU}") < done.stdout.index(f"  add {ADMINS}")
    pair.wait_in_sync()
    for server in (pair.provider, pair.consumer):
        assert server.entries(ADMINS)[ADMINS]["member"] == [f"uid=alice,{PEOPLE}".encode()], server.role


def _forged(world: World, damage: Callable[[bytes], bytes]) -> str:
    """A copy of the world's snapshot whose manifest carries the kept LDIF exports damaged by `damage`,
    as a damaged or forged backup would: the id of the new snapshot."""
    with Repository.open(world.env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        _, snap = repo.find_snapshot(world.snapshot)
        assert snap.manifest is not None
        manifest = manifest_doc.decode(repo.load_blob(snap.manifest))
        for report in manifest.writers:
            for component in report.components:
                if component.metadata.get("ldif"):
                    ldif = damage(kept_ldif(component.metadata) or b"")
                    component.metadata["ldif"] = base64.b64encode(zstandard.compress(ldif)).decode()
                    component.metadata["ldif_bytes"] = len(ldif)
        blob = repo.save_blob(BlobType.DATA, manifest_doc.encode(manifest))
        return repo.save_snapshot(msgspec.structs.replace(snap, manifest=blob))


def _bad_base64(ldif: bytes) -> bytes:
    dn = f"dn: uid=carol,{PEOPLE}\n".encode()
    assert dn in ldif
    return ldif.replace(dn, dn + b"description:: not*base64\n")


def _dn_not_utf8(ldif: bytes) -> bytes:
    dn = f"uid=dave,{PEOPLE}".encode()
    assert b"dn: " + dn + b"\n" in ldif
    return ldif.replace(
        b"dn: " + dn + b"\n", b"dn:: " + base64.b64encode(dn.replace(b"dave", b"d\xe4ve")) + b"\n"
    )


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_bad_base64, f"(entry uid=carol,{PEOPLE}): the value of description is not valid base64"),
        (_dn_not_utf8, "the DN uid=d\\xe4ve"),
    ],
)
def test_a_damaged_ldif_export_is_a_one_line_error_that_changes_nothing(
    world: World, damage: Callable[[bytes], bytes], expected: str
) -> None:
    """A backup whose kept LDIF has a value that is not base64, or a DN that is not UTF-8: the
    authoritative restore and the non-authoritative one that rebuilds from the LDIF both refuse in
    one line naming the line and the entry, and neither server is changed or stopped."""
    pair = world.pair
    erin = f"uid=erin,{PEOPLE}"
    if pair.provider.has(erin):
        pair.provider.ldap("ldapdelete", f"{erin}\n")  # what an authoritative restore would bring back
    pair.wait_in_sync()
    before = pair.provider.entries()
    consumer_pid = pair.consumer.pid()
    aside = sorted(os.listdir(pair.consumer.db))
    forged = _forged(world, damage)
    start = json.dumps(pair.consumer.start_argv)
    for args in (
        ("--writer", world.writer("provider"), "--authoritative", PEOPLE),
        ("--writer", world.writer("consumer"), "--writer-option", "ldap.ldap_method=ldif",
         "--writer-option", f"ldap.start_command={start}"),
    ):  # fmt: skip
        done = world.run("restore", forged, *args)
        assert done.returncode != 0, done.stdout
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.splitlines()
        assert "the backup's LDIF export of dc=example,dc=com is damaged: line " in line, line
        assert expected in line, line
    assert pair.consumer.pid() == consumer_pid  # not stopped
    assert pair.consumer.answers()
    assert sorted(os.listdir(pair.consumer.db)) == aside  # nothing set aside or replaced
    assert pair.provider.entries() == before
    assert not pair.provider.has(erin)
    pair.wait_in_sync()
