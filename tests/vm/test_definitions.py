"""How VMs are recognised from QEMU command lines, which disks are excluded, and how a definition is
rewritten to start a restored copy (no QEMU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shadowvault.errors import ConfigError
from shadowvault.vm.definition import rewrite
from shadowvault.vm.discovery import declared_vms, spec_from_argv
from shadowvault.vm.disks import _exclusion

PLAIN = [
    "qemu-system-x86_64",
    "-name",
    "web",
    "-qmp",
    "unix:/run/web/qmp.sock,server=on,wait=off",
    "-serial",
    "file:/run/web/serial.log",
    "-blockdev",
    "driver=file,filename=/srv/vm/web.qcow2,node-name=web-file",
    "-blockdev",
    "driver=qcow2,file=web-file,node-name=vda,backing=base0",
    "-drive",
    "if=none,id=data0,file=/srv/vm/data.raw,format=raw",
    "-chardev",
    "socket,path=/run/web/qga.sock,server=on,wait=off,id=qga0",
    "-device",
    "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    "-enable-kvm",
    "-daemonize",
]


def test_a_qemu_command_line_names_its_monitor_agent_and_name() -> None:
    spec = spec_from_argv(PLAIN, pid=42)
    assert spec is not None
    assert (spec.name, spec.qmp, spec.agent, spec.pid) == (
        "web",
        "/run/web/qmp.sock",
        "/run/web/qga.sock",
        42,
    )


def test_a_libvirt_command_line_is_found_through_its_monitor_chardev() -> None:
    argv = [
        "/usr/bin/qemu-system-x86_64",
        "-name",
        "guest=db01,debug-threads=on",
        "-chardev",
        "socket,id=charmonitor,fd=31,server=on,wait=off",
        "-chardev",
        "socket,id=charmon2,path=/var/lib/libvirt/qemu/domain-3-db01/monitor.sock,server=on,wait=off",
        "-mon",
        "chardev=charmon2,id=monitor,mode=control",
    ]
    spec = spec_from_argv(argv)
    assert spec is not None
    assert (spec.name, spec.qmp, spec.agent) == (
        "db01",
        "/var/lib/libvirt/qemu/domain-3-db01/monitor.sock",
        None,
    )


def test_qemu_without_a_unix_monitor_is_not_a_vm_we_can_reach() -> None:
    assert spec_from_argv(["qemu-system-x86_64", "-qmp", "tcp:127.0.0.1:4444,server=on"]) is None


def test_a_vms_d_entry_must_name_absolute_sockets(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text('qmp = "/run/good/qmp.sock"\nagent = "/run/good/qga.sock"\n')
    [vm] = declared_vms([tmp_path])
    assert (vm.name, vm.qmp, vm.agent, vm.source) == (
        "good",
        "/run/good/qmp.sock",
        "/run/good/qga.sock",
        "vms.d",
    )
    (tmp_path / "bad.toml").write_text('qmp = "qmp.sock"\n')
    with pytest.raises(ConfigError, match="absolute path of its QMP socket"):
        declared_vms([tmp_path])


def test_network_disks_and_host_devices_are_excluded(tmp_path: Path) -> None:
    assert "network disk" in _exclusion("nbd://10.0.0.1:10809/export")
    assert "network disk" in _exclusion("iscsi://10.0.0.2/iqn.2001-04.com.example:storage/1")
    assert "network disk" in _exclusion("rbd:pool/image")
    assert "host block device" in _exclusion("/dev/loop0")  # only stat()ed: a block device node
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")
    assert _exclusion(str(image)) == ""
    # a disk opened with options of its own is named json:{...}: what counts is where its data is
    local = {"driver": "qcow2", "file": {"driver": "file", "filename": str(image)}}
    assert _exclusion("json:" + json.dumps(local | {"backing": {"driver": "nbd", "export": "base"}})) == ""
    over_nbd = {"driver": "throttle", "file": {"driver": "raw", "file": {"driver": "nbd", "export": "x"}}}
    assert "network disk QEMU opens itself (nbd)" in _exclusion("json:" + json.dumps(over_nbd))
    device = {"driver": "raw", "file": {"driver": "host_device", "filename": "/dev/sdz", "aio": "native"}}
    assert "host block device" in _exclusion("json:" + json.dumps(device))


def test_the_restored_definition_runs_the_restored_disks_beside_the_original(tmp_path: Path) -> None:
    target = str(tmp_path)
    restored = rewrite(
        PLAIN,
        {
            "/srv/vm/web.qcow2": (f"{target}/vda.raw", "raw"),
            "/srv/vm/data.raw": (f"{target}/data0.qcow2", "qcow2"),
        },
        target,
        tcg=True,
    )
    joined = " ".join(restored.argv)
    assert f"driver=file,filename={target}/vda.raw,node-name=web-file" in restored.argv
    assert "driver=raw,file=web-file,node-name=vda" in restored.argv  # a whole image: no backing, raw now
    assert f"if=none,id=data0,file={target}/data0.qcow2,format=qcow2" in restored.argv
    assert f"unix:{target}/qmp.sock,server=on,wait=off" in restored.argv
    assert f"socket,path={target}/qga.sock,server=on,wait=off,id=qga0" in restored.argv
    assert f"file:{target}/serial.log" in restored.argv
    assert "-daemonize" not in restored.argv and "-enable-kvm" not in restored.argv
    assert "/srv/vm" not in joined and "/run/web" not in joined
    assert restored.unresolved == []
