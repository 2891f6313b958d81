"""libvirt's domains as its files describe them (no libvirt, no QEMU: the monitors are bare listening
sockets, never connected to); the tiny guest's test (test_guest.py) backs one up through them."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.vm.libvirt import libvirt_domains
from shadowvault.vm.libvirt_definition import domain_xml

LONG_NAME = "accounting-database-primary"  # libvirt's directory keeps its first 20 characters


@pytest.fixture
def root() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="sv-lv-"))  # short: a socket path is at most 107 bytes
    sockets: list[socket.socket] = []

    def listen(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sockets.append(sock)

    lib = top / "var/lib/libvirt/qemu"
    listen(lib / "domain-1-web01/monitor.sock")
    listen(lib / "channel/target/domain-1-web01/org.qemu.guest_agent.0")
    listen(lib / f"domain-7-{LONG_NAME[:20]}/monitor.sock")
    (lib / "domain-9-stopped").mkdir()  # no monitor: not running
    (top / "run/libvirt/qemu").mkdir(parents=True)
    (top / "run/libvirt/qemu/web01.xml").write_text(
        f"<domstatus state='running' pid='{os.getpid()}'>"
        "<monitor path='/var/lib/libvirt/qemu/domain-1-web01/monitor.sock' type='unix'/>"
        "<domain type='kvm' id='1'><name>web01</name></domain></domstatus>"
    )
    (top / "etc/libvirt/qemu").mkdir(parents=True)
    (top / f"etc/libvirt/qemu/{LONG_NAME}.xml").write_text(
        f"<domain type='kvm'><name>{LONG_NAME}</name></domain>"
    )
    try:
        yield top
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(top, ignore_errors=True)


def test_running_domains_come_with_their_name_xml_agent_and_command_line(root: Path) -> None:
    web, long = libvirt_domains(root)
    lib = root / "var/lib/libvirt/qemu"
    assert (web.name, web.source, web.qmp) == ("web01", "libvirt", str(lib / "domain-1-web01/monitor.sock"))
    assert web.agent == str(lib / "channel/target/domain-1-web01/org.qemu.guest_agent.0")
    assert web.libvirt_xml == '<domain type="kvm" id="1"><name>web01</name></domain>'
    assert web.pid == os.getpid() and web.argv == []  # this process is no QEMU: no command line taken
    # no status file: the persistent definition, found by the name libvirt cut, gives the full name
    assert (long.name, long.agent, long.pid) == (LONG_NAME, None, None)
    assert long.libvirt_xml is not None and f"<name>{LONG_NAME}</name>" in long.libvirt_xml


def test_the_restored_domain_names_the_restored_disks() -> None:
    xml = (
        "<domain type='kvm' id='4'><name>web01</name><devices>"
        "<disk type='file'><driver name='qemu' type='qcow2'/><source file='/srv/web.qcow2'/>"
        "<backingStore type='file'><source file='/srv/base.qcow2'/></backingStore><target dev='vda'/></disk>"
        "<disk type='network'><source protocol='rbd' name='pool/img'/><target dev='vdb'/></disk>"
        "</devices></domain>"
    )
    out = domain_xml(xml, {"/srv/web.qcow2": ("/r/vda.raw", "raw")})
    assert out == (
        '<domain type="kvm"><name>web01</name><devices>'
        '<disk type="file"><driver name="qemu" type="raw" /><source file="/r/vda.raw" />'
        '<target dev="vda" /></disk>'
        '<disk type="network"><source protocol="rbd" name="pool/img" /><target dev="vdb" /></disk>'
        "</devices></domain>\n"
    )
