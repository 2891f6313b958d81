"""The CLI asks the daemon for its shadow sets when one answers, and prints what it prints without one.

Each command runs twice on the same volume, through the daemon and with --no-daemon; what differs
by nature (set ids, times, process ids, durations) is masked, the rest must be the same text.
Who made a set is checked from the store: a set made by the daemon names the daemon as requester.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shadowvault.client import Client
from shadowvault.errors import UsageError
from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.path_map import nested_images
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.unprivileged import run_as_nobody
from tests.service.daemon import running_daemon

SET_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]+")
VARYING = [
    (SET_ID, "<set>"),
    (re.compile(r"\d+(\.\d+)? ?(ms|s|MiB/s|KiB|MiB|B)\b"), "<n>"),
    (re.compile(r"\b[0-9a-f]{8,64}\b"), "<hex>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
]


def _masked(text: str) -> str:
    for pattern, mask in VARYING:
        text = pattern.sub(mask, text)
    return text


def _requester_of_sets_script(python: str) -> str:
    """A command for exec: prints the requester and client pids of every set, read from the store."""
    return (
        f'{python} -c "import json; from shadowvault.shadow.store import ShadowStore; '
        'print(json.dumps([[m.requester_pid, m.client_pid] for m in ShadowStore().list()]))"'
    )


def test_shadows_and_exec_print_the_same_through_the_daemon_and_without(btrfs, cli):
    import sys

    (btrfs.mount / "data.txt").write_text("in the shadow\n")
    with running_daemon() as daemon:
        env = {"SHADOWVAULT_SOCKET": str(daemon.socket)}
        runs = {}
        for mode, flags in (("daemon", []), ("in-process", ["--no-daemon"])):
            created = cli(*flags, "shadows", "create", "--volume", btrfs.mount, env=env)
            assert created.returncode == 0, created.stderr
            set_id = SET_ID.search(created.stdout).group(0)
            listed = cli(*flags, "shadows", "list", "--json", env=env)
            assert listed.returncode == 0, listed.stderr
            assert [s["id"] for s in json.loads(listed.stdout)] == [set_id]
            exposed = cli(*flags, "shadows", "expose", set_id, env=env)  # no --at: the private directory
            assert exposed.returncode == 0, exposed.stderr
            at = daemon.socket.parent / "exposed" / "0" / f"{set_id}-0"
            assert (at / "data.txt").read_text() == "in the shadow\n"
            human_list = cli(*flags, "shadows", "list", env=env)
            assert f"exposed at {at}" in human_list.stdout
            deleted = cli(*flags, "shadows", "delete", set_id, env=env)
            assert deleted.returncode == 0, deleted.stderr
            assert not at.exists()
            executed = cli(
                *flags,
                "exec",
                "--volume",
                btrfs.mount,
                "--",
                "sh",
                "-c",
                f"cat {{shadow}}/data.txt; echo $PPID; {_requester_of_sets_script(sys.executable)}; "
                f"{sys.executable} -m shadowvault.cli.launch {' '.join(flags)} shadows list "
                "| grep persistent",
                env=env,
            )
            assert executed.returncode == 0, executed.stderr
            content, exec_pid, requesters, listed_set = executed.stdout.splitlines()
            assert content == "in the shadow"
            if mode == "daemon":  # made by the daemon, held by the connection of the exec command
                assert json.loads(requesters) == [[daemon.process.pid, int(exec_pid)]]
                held = f"persistent no (released when pid {exec_pid}'s connection to the daemon ends)"
                assert held in listed_set
            else:
                assert json.loads(requesters) == [[int(exec_pid), None]]
                assert f"persistent no (released when pid {exec_pid} ends)" in listed_set
            missing = cli(*flags, "shadows", "delete", "20990101T000000-abc", env=env)
            runs[mode] = [
                _masked(created.stdout),
                _masked(exposed.stdout),
                _masked(human_list.stdout),
                _masked(deleted.stdout),
                _masked(executed.stderr),
                (missing.returncode, missing.stderr),
            ]
        assert runs["daemon"] == runs["in-process"]


def test_backup_reads_a_set_the_daemon_made_and_prints_the_same(btrfs, cli, tmp_path):
    (btrfs.mount / "app").mkdir()
    (btrfs.mount / "app" / "state.bin").write_bytes(b"\x00\x01" * 50_000)
    env = {"SHADOWVAULT_PASSWORD": PASSWORD}
    with running_daemon() as daemon:
        env["SHADOWVAULT_SOCKET"] = str(daemon.socket)
        outputs = {}
        for mode, flags in (("daemon", []), ("in-process", ["--no-daemon"])):
            repo = tmp_path / mode
            Repository.init(repo, PASSWORD, kdf_params=FAST_KDF)
            done = cli(*flags, "backup", "--repo", repo, btrfs.mount / "app", env=env)
            assert done.returncode == 0, done.stderr
            outputs[mode] = (_masked(done.stdout), _masked(done.stderr))
            snapshots = json.loads(cli("snapshots", "--repo", repo, "--json", env=env).stdout)
            assert [s["consistency"]["files"] for s in snapshots] == ["crash"]
            target = tmp_path / f"restored-{mode}"
            restored = cli(*flags, "restore", "--repo", repo, snapshots[0]["id"], "--target", target, env=env)
            assert restored.returncode == 0, restored.stderr
            assert next(target.rglob("state.bin")).read_bytes() == b"\x00\x01" * 50_000
            outputs[mode] += (_masked(restored.stdout), _masked(restored.stderr))
            again = cli(*flags, "restore", "--repo", repo, "latest", "--target", target, "--json", env=env)
            summary = json.loads(again.stdout.splitlines()[-1])
            assert summary["message_type"] == "summary" and summary["kept"] >= 1, again.stdout
            wrong = cli(
                *flags,
                "restore",
                "--repo",
                repo,
                "latest",
                "--target",
                target,
                env={**env, "SHADOWVAULT_PASSWORD": "x"},
            )
            outputs[mode] += (wrong.returncode, wrong.stderr)
        assert outputs["daemon"] == outputs["in-process"]
        with Client(daemon.socket) as client:
            assert [r["kind"] for r in client.runs()] == ["restore", "restore", "restore"]
        assert "shadow set" in daemon.log_text()  # the daemon made (and released) the first one


def test_a_backup_through_the_daemon_images_only_the_nested_subvolumes_it_reads(btrfs, cli, tmp_path):
    """The backup tells the daemon what it reads (read_paths, left_out): the daemon's set snapshots
    the nested subvolume below the path and none elsewhere, nor another tool's snapshot left out."""
    vol = btrfs.mount
    (vol / "app").mkdir()
    for sub in ("app/db", "app/.snapshots", "docker/layer"):
        (vol / sub).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["btrfs", "subvolume", "create", str(vol / sub)], check=True, capture_output=True)
    (vol / "app/db/rows").write_text("in a nested subvolume\n")
    (vol / "app/.snapshots/1").mkdir()
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(vol / "app/db"), str(vol / "app/.snapshots/1/db")],
        check=True,
        capture_output=True,
    )
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    with running_daemon() as daemon:
        env = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_SOCKET": str(daemon.socket)}
        done = cli("backup", "--repo", repo, vol / "app", env=env)
        assert done.returncode == 0, done.stderr
        assert "1 read-only btrfs snapshot below the backed-up paths not read" in done.stderr
        assert "shadow set" in daemon.log_text()  # the daemon made the set
        with Repository.open(str(repo), PASSWORD) as opened:
            _, snap = opened.find_snapshot("latest")
            manifest = manifest_doc.decode(opened.load_blob(snap.manifest))
        imaged = sorted(live for shadow in manifest.shadows for live in nested_images(shadow))
        assert imaged == [f"{vol}/app/.snapshots", f"{vol}/app/db"]
        target = tmp_path / "restored"
        restored = cli("restore", "--repo", repo, "latest", "--target", target, env=env)
        assert restored.returncode == 0, restored.stderr
        assert (target / str(vol).lstrip("/") / "app/db/rows").read_text() == "in a nested subvolume\n"
        refused = r"^read_paths and left_out must be absolute paths, not 'app'$"
        with Client(daemon.socket) as client, pytest.raises(UsageError, match=refused):
            client.create_shadow_set([str(vol)], read_paths=["app"])
    assert list((vol / ".shadowvault").iterdir()) == []


def _home_of_nobody() -> Path:
    """A directory of uid 65534's own, reachable by it (tmp_path is below a directory of root's)."""
    home = Path(tempfile.mkdtemp(prefix="sv-home-"))
    os.chown(home, 65534, 65534)
    return home


@pytest.mark.parametrize("member", [False, True], ids=["outsider", "member"])
def test_a_user_restores_their_own_repository_with_a_daemon_running(member, private_dirs, nobody_pythonpath):
    """The daemon restores for root only: a user's restore runs in their process, as with --no-daemon,
    whether or not they are in the requester group."""
    if member:
        config = private_dirs / "config" / "shadowvault.toml"
        config.write_text('[api]\nrequester_group = "nogroup"\n')
        config.chmod(0o600)
    home = _home_of_nobody()
    try:
        (home / "data" / "sub").mkdir(parents=True)
        (home / "data" / "sub" / "notes.txt").write_text("mine\n")
        (home / "data" / "big.bin").write_bytes(os.urandom(300_000))
        Repository.init(home / "repo", PASSWORD, kdf_params=FAST_KDF).close()
        subprocess.run(["chown", "-R", "65534:65534", str(home)], check=True)
        with running_daemon(public=True) as daemon:
            env = {
                "SHADOWVAULT_SOCKET": str(daemon.socket),
                "SHADOWVAULT_REPOSITORY": str(home / "repo"),
                "SHADOWVAULT_PASSWORD": PASSWORD,
                "HOME": str(home),
            }
            cli = ("-m", "shadowvault.cli.launch")
            backed_up = run_as_nobody(
                nobody_pythonpath, *cli, "backup", "--provider", "none", str(home / "data"), env=env
            )
            assert backed_up.returncode == 0, backed_up.stderr
            outputs = {}
            for mode, flags in (("daemon", []), ("in-process", ["--no-daemon"])):
                target = home / f"r-{mode}"
                restored = run_as_nobody(
                    nobody_pythonpath, *cli, *flags, "restore", "latest", "--target", str(target), env=env
                )
                assert restored.returncode == 0, restored.stderr
                data = target / str(home).lstrip("/") / "data"
                assert (data / "sub" / "notes.txt").read_text() == "mine\n"
                assert (data / "big.bin").read_bytes() == (home / "data" / "big.bin").read_bytes()
                assert (data / "big.bin").stat().st_uid == 65534
                as_json = run_as_nobody(
                    nobody_pythonpath,
                    *cli,
                    *flags,
                    "restore",
                    "latest",
                    "--target",
                    str(target),
                    "--json",
                    env=env,
                )
                summary = json.loads(as_json.stdout.splitlines()[-1])
                assert summary["kept"] >= 2, as_json.stdout
                del summary["duration"]
                outputs[mode] = (
                    _masked(restored.stdout),
                    _masked(restored.stderr),
                    as_json.returncode,
                    summary,
                )
            assert outputs["daemon"] == outputs["in-process"]
            with Client(daemon.socket) as root:
                assert root.runs() == []  # nothing was asked of the daemon
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_socket_that_never_answers_is_one_warning_and_the_command_works_in_process(cli, tmp_path):
    """Something accepts connections on the socket and never answers (a wedged daemon, a stray
    listener): the command says so once and runs in process, promptly."""
    path = tmp_path / "api.sock"
    held: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    held.append(listener.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        start = time.monotonic()
        listed = cli("shadows", "list", env={"SHADOWVAULT_SOCKET": str(path)}, timeout=120)
        took = time.monotonic() - start
        listener.shutdown(socket.SHUT_RDWR)
    for conn in held:
        conn.close()
    assert listed.returncode == 0, listed.stderr
    assert held, "the command did connect"
    assert took < 30, took
    in_process = cli("--no-daemon", "shadows", "list", env={"SHADOWVAULT_SOCKET": str(path)})
    warning = f"shadowvault: warning: the shadowvault daemon on {path} did not answer within 5 s;"
    warning += " working without it"
    assert listed.stderr == f"{warning}\n{in_process.stderr}"
    assert listed.stdout == in_process.stdout
