"""The VM commands beyond the guest itself: `restore SNAP --vm NAME` on the main restore command, VM
backups and restores through the daemon, and `writers list` with guest agents that do not answer.

The VM here is a QEMU without a guest (`-machine none`) whose disk `vda` holds an ext4 made with
`mkfs.ext4 -d` (so a path inside it is known); the repository and the VM are made once per module.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from shadowvault.cli.main import cli
from shadowvault.client import Client
from tests.fixtures.bare_qemu import bare_vm, running_qemu
from tests.service.daemon import running_daemon
from tests.service.test_cli_through_daemon import _masked
from tests.vm.helpers import PASSWORD, declare, new_repository

HOSTS = b"127.0.0.1 localhost\n10.0.0.7 box.example box\n"


@dataclass
class Box:
    directory: Path
    qmp_socket: Path
    repo: Path


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    where = tmp_path_factory.mktemp("box")
    tree = where / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hosts").write_bytes(HOSTS)
    raw, disk = where / "vda.raw", where / "vda.qcow2"
    subprocess.run(["truncate", "-s", "32M", str(raw)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw)], check=True, timeout=60)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()
    qmp_socket = where / "qmp.sock"
    argv = [
        "qemu-system-x86_64",
        "-name",
        "box",
        "-accel",
        "tcg",
        "-machine",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-drive",
        f"if=none,id=vda,node-name=vda0,file={disk},format=qcow2",
        "-qmp",
        f"unix:{qmp_socket},server=on,wait=off",
    ]
    with running_qemu(argv, qmp_socket):  # its monitor greets: QEMU has opened the disk
        new_repository(where / "repo").close()
        yield Box(where, qmp_socket, where / "repo")


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str, repo: Path, daemon: Path | None = None) -> Ran:
    """The CLI as a user runs it (in this process): on its own, or through the daemon on `daemon`."""
    env: dict[str, str | None] = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_REPOSITORY": str(repo)}
    env.update({"SHADOWVAULT_NO_DAEMON": "1"} if daemon is None else {"SHADOWVAULT_NO_DAEMON": None})
    env["SHADOWVAULT_SOCKET"] = str(daemon) if daemon else None
    done = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return Ran(done.exit_code, done.stdout, done.stderr)


@pytest.fixture
def declared(box: Box, private_dirs: Path) -> Box:
    declare(private_dirs / "config", "box", box.qmp_socket)
    return box


def _backed_up(box: Box) -> str:
    done = run("vm", "backup", "box", "--json", repo=box.repo)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["snapshot_id"]


def test_restore_takes_a_vm_a_disk_and_a_path_inside_it_like_vm_restore(
    declared: Box, tmp_path: Path
) -> None:
    snapshot = _backed_up(declared)
    main = run(
        "restore",
        "latest",
        "--vm",
        "box",
        "--disk",
        "vda",
        "--path",
        "/etc/hosts",
        "--target",
        str(tmp_path / "a"),
        repo=declared.repo,
    )
    assert main.returncode == 0, main.stderr
    assert (tmp_path / "a" / "hosts").read_bytes() == HOSTS
    same = run(
        "vm",
        "restore",
        snapshot[:8],
        "box",
        "--disk",
        "vda",
        "--path",
        "/etc/hosts",
        "--target",
        str(tmp_path / "b"),
        repo=declared.repo,
    )
    assert (tmp_path / "b" / "hosts").read_bytes() == HOSTS
    assert main.stdout.replace("/a/", "/b/") == same.stdout and main.stderr == same.stderr
    # the whole VM, from the main command: its disk and definition
    whole = run(
        "restore", snapshot, "--vm", "box", "--target", str(tmp_path / "w"), "--json", repo=declared.repo
    )
    assert whole.returncode == 0, whole.stderr
    answer = json.loads(whole.stdout)
    assert answer["disks"] == {"vda": str(tmp_path / "w" / "vda.qcow2")} and answer["booted_in"] is None
    assert json.loads((tmp_path / "w" / "box.json").read_text())["disks"][0]["disk"] == "vda"
    # the same errors, one line each, from either command
    for command in (
        ["restore", "latest", "--vm", "box", "--disk", "vdz", "--path", "/etc/hosts"],
        ["vm", "restore", "latest", "box", "--disk", "vdz", "--path", "/etc/hosts"],
    ):
        bad = run(*command, "--target", str(tmp_path / "c"), repo=declared.repo)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
        assert "VM box has no disk vdz in this snapshot (disks: vda)" in bad.stderr
    missing = run(
        "restore",
        "latest",
        "--vm",
        "box",
        "--disk",
        "vda",
        "--path",
        "/etc/nosuch",
        "--target",
        str(tmp_path / "c"),
        repo=declared.repo,
    )
    assert missing.returncode != 0 and "/etc/nosuch: not on disk vda of VM box" in missing.stderr
    for refused, why in (
        (["--include", "/x"], "not --include"),
        (["--disk", "vda"], None),  # --path without --target below
        (["--verify-boot", "--path", "/etc/hosts", "--disk", "vda"], "--verify-boot boots a VM restored"),
    ):
        args = ["restore", "latest", "--vm", "box", *refused]
        bad = run(*args, *(["--target", str(tmp_path / "d")] if why else []), repo=declared.repo)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        assert (why or "give the directory to restore into with --target DIR") in bad.stderr
    nosuch = run("restore", "latest", "--vm", "nosuch", "--target", str(tmp_path / "e"), repo=declared.repo)
    assert nosuch.returncode != 0 and nosuch.stderr.count("\n") == 1 and "Traceback" not in nosuch.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_vm_backups_and_restores_run_in_the_daemon_and_print_the_same(declared: Box, tmp_path: Path) -> None:
    outputs: dict[str, list[str]] = {}
    with running_daemon() as daemon:
        for mode in ("daemon", "in-process"):
            through = daemon.socket if mode == "daemon" else None
            runs = [
                run("vm", "backup", "box", repo=declared.repo, daemon=through),
                run("vm", "backup", "box", "--json", repo=declared.repo, daemon=through),
                run(
                    "vm",
                    "restore",
                    "latest",
                    "box",
                    "--target",
                    str(tmp_path / mode),
                    "--format",
                    "raw",
                    repo=declared.repo,
                    daemon=through,
                ),
                run(
                    "restore",
                    "latest",
                    "--vm",
                    "box",
                    "--disk",
                    "vda",
                    "--path",
                    "/etc/hosts",
                    "--target",
                    str(tmp_path / f"{mode}-files"),
                    repo=declared.repo,
                    daemon=through,
                ),
                run(
                    "vm",
                    "restore",
                    "latest",
                    "box",
                    "--disk",
                    "vdz",
                    "--target",
                    str(tmp_path / "x"),
                    repo=declared.repo,
                    daemon=through,
                ),
            ]
            assert [r.returncode for r in runs] == [0, 0, 0, 0, 2], [r.stderr for r in runs]
            assert (tmp_path / f"{mode}-files" / "hosts").read_bytes() == HOSTS
            image = (tmp_path / mode / "vda.raw").read_bytes()
            assert image.find(HOSTS) >= 0  # the file's bytes are in the restored disk
            outputs[mode] = [
                re.sub(r'"(duration|freeze_window)": ?[0-9.]+', "<n>", _masked(text.replace(mode, "<mode>")))
                for r in runs
                for text in (r.stdout, r.stderr)
            ]
        with Client(daemon.socket) as client:
            described = [r["description"] for r in client.runs()]
    assert outputs["daemon"] == outputs["in-process"]
    assert described[:2] == ["backup of VM box", "backup of VM box"], described  # its sets were the daemon's
    assert [d.split(" of VM box")[0] for d in described[2:]] == ["restore"] * 3, described


class SilentAgent:
    """A guest agent socket that accepts and never answers (a guest whose qemu-ga hangs); it counts
    the pings that were waiting at the same time."""

    def __init__(self, path: Path, shared: dict[str, int], lock: threading.Lock) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.shared, self.lock = shared, lock
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with self.lock:
            self.shared["open"] += 1
            self.shared["most"] = max(self.shared["most"], self.shared["open"])
        with conn:
            while conn.recv(4096):
                pass  # read the sync and the ping, answer nothing, until the host gives up
        with self.lock:
            self.shared["open"] -= 1

    def close(self) -> None:
        self.server.close()


def test_writers_list_asks_every_vm_at_once(private_dirs: Path, tmp_path: Path) -> None:
    shared, lock = {"open": 0, "most": 0}, threading.Lock()
    agents: list[SilentAgent] = []
    with (
        bare_vm(size="1M", name="q1") as one,
        bare_vm(size="1M", name="q2") as two,
        bare_vm(size="1M", name="q3") as three,
    ):
        for name, machine in (("q1", one), ("q2", two), ("q3", three)):
            agents.append(SilentAgent(tmp_path / f"{name}.qga", shared, lock))
            declare(private_dirs / "config", name, machine.qmp_socket, tmp_path / f"{name}.qga")
        try:
            done = run("writers", "list", "--json", repo=tmp_path / "none")
        finally:
            for agent in agents:
                agent.close()
    assert done.returncode == 0, done.stderr
    entries = {e["writer"]: e for e in json.loads(done.stdout) if e["writer"].startswith("qemu:q")}
    assert sorted(entries) == ["qemu:q1", "qemu:q2", "qemu:q3"]
    for entry in entries.values():
        [disk] = entry["components"]
        assert disk["metadata"]["guest_agent"] == "no answer"
    assert shared["most"] == 3  # the three pings waited together: one timeout for the listing, not three
