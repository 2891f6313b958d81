"""The QMP connection lost in the point-in-time transaction, while the guest agent holds the guest's
filesystems frozen (issue 13): the guest is thawed, and the backup fails in one line.

The tiny guest runs its workload with qemu-ga; `vm backup` reaches its monitor through a proxy of
the test's own that passes everything on but drops the connection at the `transaction` command:
before QEMU sees it (no copy started), or right after handing it over (the copies start in QEMU,
the answer is lost). Either way the guest was frozen (its freeze hook ran) and must be thawed
through the agent: the agent says `thawed` and the workload acknowledges new records; nothing of
the backup is left in QEMU and the repository holds no snapshot.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.vm.agent import GuestAgent
from tests.fixtures.tiny_vm import TinyVM, tiny_vm
from tests.vm.helpers import cli, declare, leftovers, new_repository, qmp
from tests.vm.unix_server import serving

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

FREEZE_HOOK = "tinyvm: freeze hook"


@pytest.fixture(scope="module")
def guest() -> Iterator[TinyVM]:
    with tiny_vm(workload=True, name="cut") as vm:
        vm.wait_for_ack(3)
        yield vm


def cutting_proxy(path: Path, monitor: Path, hand_over: bool) -> contextlib.AbstractContextManager[None]:
    """A monitor socket at `path` that relays to `monitor` and drops the connection at `transaction`,
    after passing it on when `hand_over`."""

    def relay(client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            upstream.connect(str(monitor))

            def down() -> None:
                with contextlib.suppress(OSError):
                    while data := upstream.recv(65536):
                        client.sendall(data)
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)

            threading.Thread(target=down, daemon=True).start()
            with contextlib.suppress(OSError), client.makefile("rb") as lines:
                for line in lines:
                    if json.loads(line).get("execute") == "transaction":
                        if hand_over:
                            upstream.sendall(line)
                        break
                    upstream.sendall(line)
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    return serving(path, relay)


@pytest.mark.parametrize("hand_over", [False, True], ids=["before-qemu-saw-it", "after-qemu-ran-it"])
def test_the_guest_is_thawed_when_the_monitor_is_lost_in_the_transaction(
    guest: TinyVM, tmp_path: Path, private_dirs: Path, hand_over: bool
) -> None:
    proxy = tmp_path / "qmp-proxy.sock"
    declare(private_dirs / "config", "cut", proxy, guest.agent_socket)
    repo = tmp_path / "repo"
    new_repository(repo).close()
    hooks_before = guest.console().count(FREEZE_HOOK)
    with cutting_proxy(proxy, guest.qmp_socket, hand_over):
        done = cli("vm", "backup", "cut", "--agent-timeout", "30", repo=repo, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "VM cut: the point-in-time transaction failed: QEMU monitor" in done.stderr, done.stderr
    assert guest.console().count(FREEZE_HOOK) == hooks_before + 1  # the guest was frozen

    with GuestAgent(str(guest.agent_socket), timeout=30) as agent:
        assert agent.execute("guest-fsfreeze-status") == "thawed"
    acked = guest.acked()
    guest.wait_for_ack(acked + 2, timeout=120)  # the workload writes on: its filesystem is thawed
    assert qmp(guest.qmp_socket, "query-status")["status"] == "running"
    assert leftovers(guest.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": []}
    listed = cli("snapshots", "--json", repo=repo)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout + listed.stderr
