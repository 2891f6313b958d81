"""Samba AD DC: backed up with system-state, recovered as itself or as a new DC, its users and groups back.

One DC is provisioned for the module (tests/fixtures/samba_dc.py) in a fake machine root on 127.0.0.1.
A user deleted after the backup must come back with the recovered DC, which must start and answer LDAP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.components.roots import make_root
from tests.fixtures.loopfs import loop_filesystem
from tests.fixtures.samba_dc import HOME, REALM, SambaDcLab, rootdse_host, samba_dc_lab, samba_tool

pytestmark = pytest.mark.lab  # provisions and recovers a domain controller (make test-lab)
LABEL = f"{REALM} (SVDC1)"


@pytest.fixture(scope="module")
def lab() -> Iterator[SambaDcLab]:
    with samba_dc_lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def env(lab: SambaDcLab) -> dict[str, str]:
    repo = lab.scratch("repo") / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    return {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}


def _messages(stdout: str, kind: str) -> list[dict]:
    return [m for m in map(json.loads, stdout.splitlines()) if m.get("message_type") == kind]


def _plan(done: subprocess.CompletedProcess) -> dict[tuple[str, str], dict]:
    (doc,) = _messages(done.stdout, "plan")
    return {(a["verb"], a["kind"]): a for a in doc["actions"] if a["kind"] == "samba-dc"}


def _users() -> set[str]:
    return set(samba_tool("user", "list").stdout.split())


def _members(group: str) -> set[str]:
    return set(samba_tool("group", "listmembers", group).stdout.split())


def _one_line_error(done: subprocess.CompletedProcess, words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_writers_list_shows_the_running_dc(lab: SambaDcLab, cli) -> None:
    if lab.proc is None:
        lab.start()
    done = cli("writers", "list", "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert any(e["writer"] == "samba" and e["kind"] == "builtin" for e in entries)
    (found,) = [e for e in entries if e["writer"] == f"samba:{lab.config}"]
    assert found["state"] == "stable", found
    assert found["components"][0]["name"] == f"samba DC {LABEL}"


def test_dc_recovered_as_itself_and_as_a_new_dc(lab: SambaDcLab, cli, env) -> None:
    """system-state brings the DC back as itself (same-dc); the writer's archive seeds a new DC (new-dc)."""
    if lab.proc is None:
        lab.start()
    samba_tool("user", "add", "alice", "Alice-Pass1!")
    samba_tool("group", "add", "engineers")
    samba_tool("group", "addmembers", "engineers", "alice")

    done = cli("backup", "--component", "system-state", "--source-root", lab.root, "--json", env=env)
    assert done.returncode == 0, done.stderr
    snap = _messages(done.stdout, "summary")[0]["snapshot_id"]
    with loop_filesystem("btrfs") as fs:  # the writer takes part in a shadow set, here of another volume
        (fs.mount / "marker").write_text("x")
        done = cli("backup", "--writer", f"samba:{lab.config}", fs.mount / "marker", "--json", env=env)
    assert done.returncode == 0, done.stderr
    writer_snap = _messages(done.stdout, "summary")[0]["snapshot_id"]
    samba_tool("user", "delete", "alice")  # a mistake after the backups
    assert "alice" not in _users()
    listing = cli("ls", snap, f"/{HOME}/state/sysvol", env=env)  # as the source root saw it
    assert listing.returncode == 0, listing.stderr
    assert "GPT.INI" in listing.stdout  # sysvol is in the snapshot as files too

    same = lab.scratch("same")
    restore = ("restore", snap, "--component", "system-state", "--no-packages", "--json")
    plain = cli(*restore, "--target-root", make_root(same), "--dry-run", env=env)
    assert plain.returncode == 0, plain.stderr
    assert ("leave", "samba-dc") in _plan(plain)  # a DC is recovered only when asked
    dry = cli(*restore, "--target-root", same, "--directory-restore", "same-dc", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    action = _plan(dry)[("load", "samba-dc")]
    assert action["target"] == LABEL and "same-dc SVDC1" in action["reason"]
    assert not (same / HOME).exists()  # a dry run changes nothing
    _one_line_error(
        cli(*restore, "--target-root", same, "--directory-restore", "new-dc", "--dry-run", env=env),
        "samba.newservername=NAME",
    )
    _one_line_error(
        cli(*restore, "--target-root", same, "--directory-restore", "new-dc", "--dry-run",
            "--writer-option", "samba.newservername=svdc1", env=env),
        "the backed-up DC's own name",
    )  # fmt: skip

    lab.stop()  # two DCs cannot share 127.0.0.1: the original goes, the recovered one comes
    done = cli(*restore, "--target-root", same, "--directory-restore", "same-dc", env=env)
    assert done.returncode == 0, done.stderr
    lab.start(same / HOME / "etc" / "smb.conf")
    assert rootdse_host() == "svdc1.sv.test"
    assert "alice" in _users()
    assert "alice" in _members("engineers")
    lab.stop()

    new = lab.scratch("new") / "dc"
    done = cli(
        "restore", writer_snap, "--writer", "samba", "--directory-restore", "new-dc",
        "--writer-option", "samba.newservername=svdc2", "--writer-option", f"samba.targetdir={new}", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lab.start(new / "etc" / "smb.conf")
    assert rootdse_host() == "svdc2.sv.test"
    assert "alice" in _users()
    assert "alice" in _members("engineers")
    lab.stop()


@dataclass
class PointInTime:
    """Backups of the source DC while bob was in auditors; mallory came after them."""

    system_state: str  # backup --component system-state (offline)
    online: str  # backup --writer samba:CONFIG by a writers.d samba writer with method = "online"


@pytest.fixture(scope="module")
def point_in_time(lab: SambaDcLab, env: dict[str, str]) -> PointInTime:
    """One start of the source DC for both backups; it is stopped again, for the recovered DCs."""
    private = lab.scratch("private")  # the per-test private_dirs are function-scoped: a module's own
    (private / "config" / "writers.d").mkdir(parents=True)
    (private / "state").mkdir()
    env = {
        **env,
        "SHADOWVAULT_NO_DAEMON": "1",
        **{f"SHADOWVAULT_{d.upper()}_DIR": str(private / d) for d in ("config", "state", "cache")},
    }
    if lab.proc is None:
        lab.start()
    samba_tool("user", "add", "bob", "Bob-Pass1!")
    samba_tool("group", "add", "auditors")
    samba_tool("group", "addmembers", "auditors", "bob")

    done = _run("backup", "--component", "system-state", "--source-root", lab.root, "--json", env=env)
    assert done.returncode == 0, done.stderr
    system_state = _messages(done.stdout, "summary")[0]["snapshot_id"]

    (private / "config" / "writers.d" / "dc.toml").write_text(
        f'type = "samba"\ninstance = "{lab.config}"\nmethod = "online"\n'
    )
    with loop_filesystem("btrfs") as fs:
        (fs.mount / "marker").write_text("x")
        done = _run("backup", "--writer", f"samba:{lab.config}", fs.mount / "marker", "--json", env=env)
    assert done.returncode == 0, done.stderr
    online = _messages(done.stdout, "summary")[0]["snapshot_id"]

    samba_tool("user", "add", "mallory", "Mallory-Pass1!")  # after the backups: must not come back
    samba_tool("group", "addmembers", "auditors", "mallory")
    lab.stop()  # two DCs cannot share 127.0.0.1
    return PointInTime(system_state, online)


def _run(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI as the `cli` fixture runs it, for module-scoped fixtures."""
    argv = [sys.executable, "-m", "shadowvault.cli.launch", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)


def _holds_the_point_in_time(host: str) -> None:
    assert rootdse_host() == host
    users = _users()
    assert "bob" in users
    assert "mallory" not in users
    assert _members("auditors") >= {"bob"}
    assert "mallory" not in _members("auditors")


def test_system_state_recovers_the_domain_on_a_new_dc(lab: SambaDcLab, point_in_time: PointInTime, cli, env):
    """`restore --component system-state --directory-restore new-dc`: the domain of the backup on svdc3."""
    target = make_root(lab.scratch("ss-new"))
    done = cli(
        "restore", point_in_time.system_state, "--component", "system-state", "--no-packages", "--json",
        "--target-root", target, "--directory-restore", "new-dc",
        "--writer-option", "samba.newservername=svdc3", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    action = _plan(done)[("load", "samba-dc")]
    assert action["target"] == LABEL and "new-dc SVDC3" in action["reason"]
    config = target / HOME / "etc" / "smb.conf"  # the DC's own directory inside the target root
    assert config.is_file()
    lab.start(config)
    try:
        _holds_the_point_in_time("svdc3.sv.test")
    finally:
        lab.stop()


def test_online_backup_seeds_a_new_dc_and_is_refused_as_the_same_dc(
    lab: SambaDcLab, point_in_time: PointInTime, cli, env
) -> None:
    """An online backup (writers.d samba writer): the manifest says online; new-dc works, same-dc refused."""
    snap = json.loads(cli("cat", "snapshot", point_in_time.online, env=env).stdout)
    manifest = json.loads(cli("cat", "blob", snap["manifest"], env=env).stdout)
    (report,) = [w for w in manifest["writers"] if w["name"] == "samba"]
    (component,) = report["components"]
    assert component["name"] == f"samba DC {LABEL}"
    assert component["metadata"]["method"] == "online"
    assert component["metadata"]["archive_bytes"] > 0

    same = lab.scratch("online-same") / "dc"
    as_same_dc = (
        "restore", point_in_time.online, "--writer", "samba", "--directory-restore", "same-dc",
        "--writer-option", f"samba.targetdir={same}",
    )  # fmt: skip
    _one_line_error(cli(*as_same_dc, "--dry-run", env=env), "was backed up online")  # the plan says so too
    _one_line_error(cli(*as_same_dc, env=env), "was backed up online")
    assert not same.exists()  # refused before anything is written

    new = lab.scratch("online-new") / "dc"
    done = cli(
        "restore", point_in_time.online, "--writer", "samba", "--directory-restore", "new-dc",
        "--writer-option", "samba.newservername=svdc4", "--writer-option", f"samba.targetdir={new}", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lab.start(new / "etc" / "smb.conf")
    try:
        _holds_the_point_in_time("svdc4.sv.test")
    finally:
        lab.stop()


def _interrupting_samba_tool(base: Path) -> dict[str, str]:
    """A PATH whose samba-tool kills the restore that runs it (SIGKILL, no cleanup) at one step: at
    `ntacl sysvolreset` (same-dc's last step), and right after `domain backup restore` has written its
    directory (new-dc)."""
    real = shutil.which("samba-tool")
    assert real
    (base / "samba-tool").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *"ntacl sysvolreset"*) kill -KILL $PPID; exit 1;;\n'
        f'  *"domain backup restore"*) {real} "$@"; kill -KILL $PPID; exit 1;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
    )
    (base / "samba-tool").chmod(0o755)
    return {"PATH": f"{base}:{os.environ['PATH']}"}


@pytest.mark.parametrize(("mode", "name", "host"), [("same-dc", "", "svdc1"), ("new-dc", "svdc5", "svdc5")])
def test_interrupted_recovery_leaves_no_dc_and_a_rerun_recovers_it(
    lab: SambaDcLab, point_in_time: PointInTime, cli, env, mode: str, name: str, host: str
) -> None:
    """A restore killed half-way leaves nothing under the DC's final name; running it again works."""
    interrupting = _interrupting_samba_tool(lab.scratch(f"interrupting-{mode}"))
    target = make_root(lab.scratch(f"interrupted-{mode}"))
    restore = (
        "restore", point_in_time.system_state, "--component", "system-state", "--no-packages",
        "--target-root", target, "--directory-restore", mode,
        *(("--writer-option", f"samba.newservername={name}") if name else ()),
    )  # fmt: skip
    dc = target / HOME
    killed = cli(*restore, env={**env, **interrupting})
    assert killed.returncode != 0
    assert not (dc / "etc" / "smb.conf").exists()  # no DC that would start under the final name
    assert not dc.exists() or not any(dc.iterdir())

    done = cli(*restore, env=env)
    assert done.returncode == 0, done.stderr
    assert not [p for p in dc.parent.iterdir() if p.name.endswith(".shadowvault-partial")]  # leftover gone
    assert f"private dir = {dc}/private" in (dc / "etc" / "smb.conf").read_text()
    files = [p for p in dc.rglob("*") if p.is_file() and not p.is_symlink()]
    mentioning_staging = [str(p) for p in files if b".shadowvault-partial" in p.read_bytes()]
    assert not mentioning_staging  # every path the DC keeps names its final directory
    lab.start(dc / "etc" / "smb.conf")
    try:
        _holds_the_point_in_time(f"{host}.sv.test")
    finally:
        lab.stop()
