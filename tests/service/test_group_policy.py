"""Who may ask the daemon: root, and members of `[api] requester_group` for their own sets of the
volumes `[api] requester_volumes` allows. The member here is uid 65534, whose group is nogroup."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shadowvault.client import Client
from shadowvault.service import private_exposure
from shadowvault.service.peer import Peer
from shadowvault.service.policy import GroupPolicy
from shadowvault.service.set_runs import SetRuns
from shadowvault.service.shadow_sets import ExposeRequest, ShadowSetService
from shadowvault.shadow import exposure as exposing
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.store import ShadowStore
from tests.fixtures.loopfs import loop_filesystem
from tests.fixtures.unprivileged import run_as_nobody
from tests.service.daemon import running_daemon

NOBODY = 65534

MEMBER_SCRIPT = """
import json, os, sys
from shadowvault.client import Client
from shadowvault.errors import ShadowvaultError

def attempt(call):
    try:
        return {"ok": call()}
    except ShadowvaultError as err:
        return {"error": str(err), "kind": type(err).__name__}

allowed, other, foreign_set = sys.argv[1:4]
with Client() as sv:
    out = {}
    out["other_volume"] = attempt(lambda: sv.create_shadow_set([other], persistent=True))
    out["writers"] = attempt(lambda: sv.create_shadow_set([allowed], writers=["fsfreeze"], persistent=True))
    made = sv.create_shadow_set([allowed], persistent=True)
    out["made"] = made["id"]
    out["listed"] = [s["id"] for s in sv.shadow_sets()]
    out["foreign_get"] = attempt(lambda: sv.shadow_set(foreign_set))
    out["foreign_delete"] = attempt(lambda: sv.delete_shadow_set(foreign_set))
    out["expose_elsewhere"] = attempt(lambda: sv.expose(made["id"], at="/tmp/sv-mine"))
    exposure = sv.expose(made["id"])
    at = exposure["at"]
    out["at"] = at
    out["public"] = open(os.path.join(at, "public.txt")).read()
    try:
        open(os.path.join(at, "secret.txt")).read()
        out["secret"] = "read"
    except PermissionError:
        out["secret"] = "refused"
    try:
        open(os.path.join(os.path.dirname(at), "planted"), "w")
        out["plant"] = "written"
    except PermissionError:
        out["plant"] = "refused"
    with open("/proc/self/mountinfo") as mounts:
        out["mount_options"] = next(line.split()[5] for line in mounts if line.split()[4] == at)
print(json.dumps(out))
"""


@pytest.fixture
def two_volumes():
    with loop_filesystem("btrfs") as allowed, loop_filesystem("btrfs") as other:
        yield allowed, other


def _configure(private_dirs: Path, group: str, volumes: list[str]) -> None:
    config = private_dirs / "config" / "shadowvault.toml"
    config.write_text(f'[api]\nrequester_group = "{group}"\nrequester_volumes = {json.dumps(volumes)}\n')
    config.chmod(0o600)


def test_a_member_makes_exposes_and_deletes_only_its_own_sets_of_allowed_volumes(
    two_volumes, private_dirs, nobody_pythonpath
):
    allowed, other = two_volumes
    (allowed.mount / "public.txt").write_text("for everyone\n")
    secret = allowed.mount / "secret.txt"
    secret.write_text("root's only\n")
    secret.chmod(0o600)
    _configure(private_dirs, "nogroup", [str(allowed.mount)])
    with running_daemon(public=True) as daemon, Client(daemon.socket) as root:
        foreign = root.create_shadow_set([str(allowed.mount)], persistent=True)["id"]
        done = run_as_nobody(
            nobody_pythonpath,
            "-c",
            MEMBER_SCRIPT,
            str(allowed.mount),
            str(other.mount),
            foreign,
            env={"SHADOWVAULT_SOCKET": str(daemon.socket)},
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["other_volume"] == {
            "error": f"uid 65534 may not shadow {other.mount}: [api] requester_volumes does not allow it",
            "kind": "PermissionDeniedError",
        }
        assert out["writers"]["kind"] == "PermissionDeniedError"
        assert out["listed"] == [out["made"]]  # root's set is not theirs to see
        assert out["foreign_get"] == {"error": f"no shadow set {foreign}", "kind": "NotFoundError"}
        assert out["foreign_delete"]["kind"] == "NotFoundError"
        assert out["expose_elsewhere"]["kind"] == "PermissionDeniedError"
        assert out["public"] == "for everyone\n"
        assert out["secret"] == "refused"  # a 0600 file of another user stays closed through the shadow
        assert out["plant"] == "refused"  # their private directory is not theirs to write in
        assert {"ro", "nosuid", "nodev"} <= set(out["mount_options"].split(","))
        at = Path(out["at"])
        private = at.parent
        assert private == daemon.socket.parent / "exposed" / "65534"
        info = os.stat(private)
        assert (info.st_uid, info.st_mode & 0o707) == (0, 0o700)
        acl = subprocess.run(["getfacl", "-pn", str(private)], capture_output=True, text=True, check=True)
        entries = {line for line in acl.stdout.splitlines() if line and not line.startswith("#")}
        assert entries == {"user::rwx", "user:65534:r-x", "group::---", "mask::r-x", "other::---"}
        another_user = subprocess.run(
            ["setpriv", "--reuid=12345", "--regid=65534", "--clear-groups", "ls", str(at)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert another_user.returncode != 0 and "Permission denied" in another_user.stderr
        sets = {s["id"]: s for s in root.shadow_sets()}
        assert set(sets) == {foreign, out["made"]}  # root sees everyone's
        assert sets[out["made"]]["requester_uid"] == 65534
        assert [e["at"] for e in sets[out["made"]]["exposures"]] == [str(at)]
        root.delete_shadow_set(out["made"])
        assert not at.exists()  # unexposed and its mount point removed with the set
        root.delete_shadow_set(foreign)


def test_a_user_outside_the_group_is_refused_everything(btrfs, private_dirs, nobody_pythonpath):
    _configure(private_dirs, "root", [str(btrfs.mount)])  # nobody is not in group root
    with running_daemon(public=True) as daemon:
        script = (
            "import json\nfrom shadowvault.client import Client\n"
            "from shadowvault.errors import ShadowvaultError\n"
            "out = []\n"
            "for call in ('volumes', 'shadow_sets'):\n"
            "    try:\n"
            "        getattr(Client(), call)()\n"
            "        out.append('allowed')\n"
            "    except ShadowvaultError as err:\n"
            "        out.append(str(err))\n"
            "print(json.dumps(out))\n"
        )
        done = run_as_nobody(nobody_pythonpath, "-c", script, env={"SHADOWVAULT_SOCKET": str(daemon.socket)})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [
            "uid 65534 may not list volumes: the shadowvault API is root's and the root group's",
            "uid 65534 may not list shadow sets: the shadowvault API is root's and the root group's",
        ]


def test_a_member_uses_the_cli_through_the_daemon(btrfs, private_dirs, nobody_pythonpath):
    _configure(private_dirs, "nogroup", [str(btrfs.mount)])
    with running_daemon(public=True) as daemon:
        env = {"SHADOWVAULT_SOCKET": str(daemon.socket)}
        cli = ("-m", "shadowvault.cli.launch")
        made = run_as_nobody(
            nobody_pythonpath, *cli, "shadows", "create", "--volume", str(btrfs.mount), "--json", env=env
        )
        assert made.returncode == 0, made.stderr
        set_id = json.loads(made.stdout)["id"]
        exposed = run_as_nobody(nobody_pythonpath, *cli, "shadows", "expose", set_id, env=env)
        assert exposed.returncode == 0, exposed.stderr
        at = daemon.socket.parent / "exposed" / "65534" / f"{set_id}-0"
        assert exposed.stdout.strip() == f"shadow of {btrfs.mount} (set {set_id}) exposed read-only at {at}"
        refused = run_as_nobody(nobody_pythonpath, *cli, "shadows", "create", "--volume", "/", env=env)
        assert refused.returncode != 0
        assert (
            refused.stderr
            == "shadowvault: error: uid 65534 may not shadow /: [api] requester_volumes does not allow it\n"
        )
        (btrfs.mount / "public.txt").write_text("for everyone\n")
        (btrfs.mount / "secret.txt").write_text("root's only\n")
        (btrfs.mount / "secret.txt").chmod(0o600)
        shell = "cat {shadow}/public.txt; cat {shadow}/secret.txt 2>/dev/null || echo refused"
        executed = run_as_nobody(
            nobody_pythonpath, *cli, "exec", "--volume", str(btrfs.mount), "--", "sh", "-c", shell, env=env
        )
        assert executed.returncode == 0, executed.stderr
        assert executed.stdout == "for everyone\nrefused\n"  # read through their private exposure
        deleted = run_as_nobody(nobody_pythonpath, *cli, "shadows", "delete", "--all", env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout.strip() == f"deleted shadow set {set_id}"
        with Client(daemon.socket) as root:
            assert root.shadow_sets() == []


def test_a_member_cannot_evict_root_s_sets_from_a_full_volume(btrfs, private_dirs, nobody_pythonpath):
    config = private_dirs / "config" / "shadowvault.toml"
    api = f'[api]\nrequester_group = "nogroup"\nrequester_volumes = ["{btrfs.mount}"]\n'
    config.write_text("max_shadows_per_volume = 1\n" + api)
    config.chmod(0o600)
    with running_daemon(public=True) as daemon, Client(daemon.socket) as root:
        kept = root.create_shadow_set([str(btrfs.mount)], persistent=True)["id"]
        script = (
            "from shadowvault.client import Client\n"
            "from shadowvault.errors import PermissionDeniedError\n"
            f"try:\n    Client().create_shadow_set([{str(btrfs.mount)!r}], persistent=True)\n"
            "except PermissionDeniedError as err:\n    print(err)\n"
        )
        done = run_as_nobody(nobody_pythonpath, "-c", script, env={"SHADOWVAULT_SOCKET": str(daemon.socket)})
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{btrfs.mount} already holds 1 shadow sets, the most allowed"), (
            done.stdout
        )
        assert [s["id"] for s in root.shadow_sets()] == [kept]
        root.delete_shadow_set(kept)
        long_freeze = script.replace("persistent=True)", "persistent=True, freeze_timeout=3600)")
        done = run_as_nobody(
            nobody_pythonpath, "-c", long_freeze, env={"SHADOWVAULT_SOCKET": str(daemon.socket)}
        )
        assert done.stdout.strip() == "only root may give timeouts above 60 s (freeze) and 10 s (commit)"


def test_a_member_s_symlink_swapped_after_the_check_never_moves_the_mount(
    btrfs, private_dirs, tmp_path, monkeypatch
):
    """The member names its private directory through a symlink of its own, and points the symlink
    elsewhere between the daemon's check and the mount: the shadow is still mounted where the check
    looked, never where the symlink points now."""
    sets = SetRuns()
    manifest = sets.make([str(btrfs.mount)], SetOptions(persistent=True, requester_uid=NOBODY))
    service = ShadowSetService(GroupPolicy(), sets, tmp_path / "exposed")
    private = private_exposure.mount_point(tmp_path / "exposed", NOBODY, manifest.id, 0)
    link, elsewhere = tmp_path / "link", tmp_path / "elsewhere"
    elsewhere.mkdir()
    link.symlink_to(private)
    mount = exposing.expose

    def swapped_then_mounted(store, set_id, index, at):
        link.unlink()  # the member's move, after the check
        link.symlink_to(elsewhere)
        return mount(store, set_id, index, at)

    monkeypatch.setattr(exposing, "expose", swapped_then_mounted)
    member = Peer(pid=1, uid=NOBODY, gid=NOBODY)
    try:
        exposure = service.expose(member, manifest.id, ExposeRequest(at=str(link)))
        assert exposure.at == str(private)
        assert os.path.ismount(private) and not os.path.ismount(elsewhere)
    finally:
        exposing.unexpose(ShadowStore(), set_id=manifest.id)
        sets.release(manifest.id)
