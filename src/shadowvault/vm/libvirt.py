"""libvirt's running domains, found through its files: their QMP monitor sockets and domain XML.

libvirt starts QEMU with its monitor on `/var/lib/libvirt/qemu/domain-ID-NAME/monitor.sock`
(handed over as a file descriptor, so the command-line scan cannot see it) and keeps each running
domain's status in `/run/libvirt/qemu/NAME.xml` (a `<domstatus>` with the QEMU pid, the monitor
path and the live `<domain>`). The domain's XML is the VM's definition (what `virsh define` takes):
from the status file, else `virsh dumpxml NAME`, else the persistent `/etc/libvirt/qemu/NAME.xml`.
The guest agent's channel is `/var/lib/libvirt/qemu/channel/target/domain-ID-NAME/org.qemu.guest_agent.0`.
We only read files here; the writer alone connects to the sockets. `$SHADOWVAULT_LIBVIRT_ROOT`
names another root for these directories (tests, which cannot run libvirt here).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from shadowvault import proc
from shadowvault.vm.discovery import AGENT_PORT_NAME, VmSpec

log = logging.getLogger(__name__)

ROOT_ENV = "SHADOWVAULT_LIBVIRT_ROOT"
NAME_IN_DIR = 20  # libvirt cuts a domain's name to 20 characters in its directory name
VIRSH_TIMEOUT = 10.0


def root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or "/")


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _short_name(directory: str) -> str:
    """`domain-ID-NAME` -> NAME (as libvirt cut it)."""
    parts = directory.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[1].isdigit() else ""


def _status(run_dir: Path, directory: str, short: str) -> tuple[str, str, int | None] | None:
    """(name, domain XML, QEMU pid) from the status file whose monitor lives in `directory`."""
    if not run_dir.is_dir():
        return None
    for path in sorted(run_dir.glob("*.xml")):
        if not path.stem.startswith(short[:NAME_IN_DIR]):
            continue
        try:
            status = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as err:
            log.warning("libvirt status %s unreadable: %s", path, err)
            continue
        domain = status.find("domain") if status.tag == "domstatus" else None
        monitor = status.find("monitor")
        if domain is None or monitor is None:
            continue
        if Path(monitor.get("path", "")).parent.name != directory:
            continue
        pid = status.get("pid")
        name = domain.findtext("name") or path.stem
        return name, ET.tostring(domain, encoding="unicode"), int(pid) if pid and pid.isdigit() else None
    return None


def _stored_xml(short: str, etc_dir: Path, live_root: bool) -> tuple[str, str | None]:
    """(name, XML) from libvirt itself (virsh, on this machine's root), else from the one config
    file whose name starts with `short` (the directory may hold a cut name)."""
    virsh = shutil.which("virsh") if live_root else None
    if virsh is not None:
        try:
            return short, proc.output([virsh, "dumpxml", short], timeout=VIRSH_TIMEOUT)
        except Exception as err:  # libvirtd not answering: the config file still says what it is
            log.warning("virsh dumpxml %s: %s", short, err)
    exact = etc_dir / f"{short}.xml"
    candidates = [exact] if exact.is_file() else sorted(etc_dir.glob(f"{short}*.xml"))
    if len(candidates) != 1:
        return short, None
    try:
        xml = candidates[0].read_text()
        name = ET.fromstring(xml).findtext("name") or candidates[0].stem
    except (OSError, ET.ParseError) as err:
        log.warning("libvirt config %s unreadable: %s", candidates[0], err)
        return short, None
    return name, xml


def _argv(pid: int | None) -> list[str]:
    if pid is None:
        return []
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    argv = [w.decode(errors="surrogateescape") for w in raw.split(b"\0")[:-1]]
    return argv if argv and os.path.basename(argv[0]).startswith("qemu-system-") else []


def libvirt_domains(base: Path | None = None) -> list[VmSpec]:
    """Every domain with a monitor socket under libvirt's QEMU directory, with its XML and agent."""
    top = base or root()
    lib_dir = top / "var/lib/libvirt/qemu"
    if not lib_dir.is_dir():
        return []
    found = []
    for directory in sorted(lib_dir.glob("domain-*")):
        monitor = directory / "monitor.sock"
        short = _short_name(directory.name)
        if not short or not _is_socket(monitor):
            continue
        status = _status(top / "run/libvirt/qemu", directory.name, short)
        name, xml, pid = status if status else (short, None, None)
        if xml is None:
            name, xml = _stored_xml(short, top / "etc/libvirt/qemu", live_root=top == Path("/"))
        agent = lib_dir / "channel/target" / directory.name / AGENT_PORT_NAME
        found.append(
            VmSpec(
                name=name,
                qmp=str(monitor),
                agent=str(agent) if _is_socket(agent) else None,
                pid=pid,
                argv=_argv(pid),
                source="libvirt",
                libvirt_xml=xml,
            )
        )
    return found
