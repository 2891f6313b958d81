"""Finding the running QEMU guests: their names, QMP monitor sockets, guest agent sockets, command lines.

Three sources: declarations (TOML files naming a VM's sockets: `vms.d` under the configuration
directory or /run/shadowvault/vms.d, and `writers.d` entries of `type = "qemu"`), the command
lines of running QEMU processes (`-qmp unix:PATH`, or `-chardev socket,id=X,path=PATH` with `-mon
chardev=X,mode=control`), and libvirt's domains through their files (vm/libvirt.py). Reading /proc
and those files touches no VM; only the writer connects to the sockets it is asked to use.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from shadowvault import paths
from shadowvault.config_file import read_toml
from shadowvault.errors import ConfigError, NotFoundError

RUN_DIR = Path("/run/shadowvault/vms.d")
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
SCAN_ENV = "SHADOWVAULT_VM_SCAN"  # "0": VMs only from vms.d (tests sharing a machine with other guests)


class VmSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A VM as found: what the writer needs to reach it, and its definition (the QEMU command line)."""

    name: str
    qmp: str  # the QMP monitor's Unix socket
    agent: str | None = None  # the guest agent's Unix socket (host side of its virtio-serial port)
    pid: int | None = None
    argv: list[str] = []
    source: str = "scan"  # scan | vms.d | writers.d | libvirt
    libvirt_xml: str | None = None  # the domain's XML, for a libvirt domain (its definition)


def qemu_options(text: str) -> tuple[str, dict[str, str]]:
    """QEMU's `first,key=value,...` syntax: the first bare word and the pairs (`,,` is a comma)."""
    parts = text.replace(",,", "\0").split(",")
    first = ""
    pairs: dict[str, str] = {}
    for index, part in enumerate(p.replace("\0", ",") for p in parts):
        key, sep, value = part.partition("=")
        if not sep and index == 0:
            first = key
        else:
            pairs[key] = value
    return first, pairs


def _arguments(argv: list[str], flag: str) -> list[str]:
    values = []
    for index, word in enumerate(argv[:-1]):
        if word in (flag, "-" + flag):
            values.append(argv[index + 1])
    return values


def _unix_path(spec: str) -> str | None:
    first, pairs = qemu_options(spec)
    if first.startswith("unix:"):
        return first[len("unix:") :]
    return pairs.get("path") if first == "unix" else None


def spec_from_argv(argv: list[str], pid: int | None = None) -> VmSpec | None:
    """The VM a QEMU command line describes, None when it has no QMP monitor on a Unix socket."""
    chardevs: dict[str, str] = {}
    for value in _arguments(argv, "-chardev"):
        kind, pairs = qemu_options(value)
        if kind == "socket" and "path" in pairs and "id" in pairs:
            chardevs[pairs["id"]] = pairs["path"]
    qmp = next((p for p in map(_unix_path, _arguments(argv, "-qmp")) if p), None)
    if qmp is None:
        for value in _arguments(argv, "-mon"):
            _, pairs = qemu_options(value)
            if pairs.get("mode") == "control" and pairs.get("chardev") in chardevs:
                qmp = chardevs[pairs["chardev"]]
                break
    if qmp is None:
        return None
    agent = None
    for value in _arguments(argv, "-device"):
        driver, pairs = qemu_options(value)
        if driver == "virtserialport" and pairs.get("name") == AGENT_PORT_NAME:
            agent = chardevs.get(pairs.get("chardev", ""))
    name = ""
    for value in _arguments(argv, "-name"):
        first, pairs = qemu_options(value)
        name = pairs.get("guest") or first
    return VmSpec(name=name or f"pid{pid}", qmp=qmp, agent=agent, pid=pid, argv=argv)


def scan_processes(proc: str = "/proc") -> list[VmSpec]:
    """Every running QEMU system emulator with a QMP monitor on a Unix socket."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        argv = [w.decode(errors="surrogateescape") for w in raw.split(b"\0")[:-1]]
        if not argv or not os.path.basename(argv[0]).startswith("qemu-system-"):
            continue
        spec = spec_from_argv(argv, int(entry))
        if spec is not None:
            found.append(spec)
    return found


def declared_vms(directories: list[Path] | None = None) -> list[VmSpec]:
    """The VMs named in vms.d files (`name`, `qmp` = the absolute socket path, optional `agent`),
    and in writers.d entries of `type = "qemu"` with the same keys."""
    found = []
    for directory in directories if directories is not None else [paths.config_dir() / "vms.d", RUN_DIR]:
        for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
            found.append(_declared(read_toml(path, "VM declaration"), path, "vms.d"))
    writers_d = paths.config_dir() / "writers.d"
    for path in sorted(writers_d.glob("*.toml")) if directories is None and writers_d.is_dir() else []:
        try:
            data = read_toml(path, "writer declaration")
        except ConfigError:
            continue  # an unreadable writers.d file is listed (refused) as itself, not as the VMs' error
        if data.get("type") == "qemu":
            found.append(_declared(data, path, "writers.d"))
    return found


def _declared(data: dict[str, object], path: Path, source: str) -> VmSpec:
    qmp, agent = data.get("qmp"), data.get("agent")
    if not isinstance(qmp, str) or not qmp.startswith("/"):
        raise ConfigError(f"{path}: a VM needs `qmp` = the absolute path of its QMP socket")
    if agent is not None and (not isinstance(agent, str) or not agent.startswith("/")):
        raise ConfigError(f"{path}: `agent` must be the absolute path of the guest agent socket")
    return VmSpec(name=str(data.get("name", path.stem)), qmp=qmp, agent=agent, source=source)


def all_vms() -> list[VmSpec]:
    """Declared VMs (with their command line when they run here), then libvirt's domains and scanned
    ones no declaration names (libvirt's too when $SHADOWVAULT_LIBVIRT_ROOT says where to look)."""
    from shadowvault.vm.libvirt import ROOT_ENV, libvirt_domains

    declared = declared_vms()
    scanned = scan_processes()
    by_socket = {os.path.realpath(s.qmp): s for s in scanned}
    merged = []
    for vm in declared:
        running = by_socket.get(os.path.realpath(vm.qmp))
        if running is not None:
            vm = msgspec.structs.replace(
                vm, pid=running.pid, argv=running.argv, agent=vm.agent or running.agent
            )
        merged.append(vm)
    scanning = os.environ.get(SCAN_ENV, "1") != "0"
    known = {os.path.realpath(v.qmp) for v in declared}
    if scanning or os.environ.get(ROOT_ENV):
        domains = [d for d in libvirt_domains() if os.path.realpath(d.qmp) not in known]
        merged += domains
        known |= {os.path.realpath(d.qmp) for d in domains}
    if scanning:
        merged += [s for s in scanned if os.path.realpath(s.qmp) not in known]
    return merged


def find_vm(name: str) -> VmSpec:
    """The VM called `name` (NotFoundError naming the ones there are)."""
    vms = all_vms()
    for vm in vms:
        if vm.name == name:
            return vm
    names = ", ".join(sorted(v.name for v in vms)) or "no QEMU guest with a QMP socket runs here"
    raise NotFoundError(f"no VM named {name!r} (VMs: {names})")
