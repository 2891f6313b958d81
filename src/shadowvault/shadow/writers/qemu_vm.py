"""A QEMU VM as the qemu writer finds, reaches and describes it, before any backup of it.

The writer's events are in qemu.py; this is what `writers list` and `vm list` need too: the VM
found (vms.d, QEMU command lines, libvirt: vm/discovery.py), one monitor connection and one guest
agent channel held for the writer's life, and its disks as components (one per disk, graded and
selected by the VM backup job). Listing many VMs asks them all at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from shadowvault.shadow.manifest import Component, RestoreMethod
from shadowvault.shadow.volumes import Volume
from shadowvault.shadow.writers.base import Writer
from shadowvault.vm import run_state
from shadowvault.vm.agent import GuestAgent
from shadowvault.vm.discovery import VmSpec, all_vms, find_vm
from shadowvault.vm.disks import DiskInfo, list_disks
from shadowvault.vm.qmp import QmpClient

QMP_TIMEOUT = 30.0
LIST_THREADS = 16  # VMs `writers list` asks at once
LIST_TIMEOUT = 3.0  # `writers list`: a monitor another client holds must not hang the listing
NOT_RUNNING = "guest not running"  # the agent state of a declared agent while the guest is stopped


class QemuVm(Writer):
    """A QEMU guest reached through its QMP monitor (instance = the VM's name)."""

    name = "qemu"

    def __init__(
        self,
        instance: str | None = None,
        *,
        spec: VmSpec | None = None,
        agent_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(instance, **options)
        self.spec = spec
        self.agent_timeout = agent_timeout
        self.qmp: QmpClient | None = None
        self.agent: GuestAgent | None = None
        self.agent_state = "none"  # none | answers | no answer | guest not running
        self.status = ""  # QEMU's run state when last asked (query-status)
        self._ahead: list[Component] | Exception | None = None  # identified by running(), not yet asked

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[Self]:
        """VMs are not data on a volume: a set includes one only when named (`--writer qemu:NAME`)."""
        return []

    @classmethod
    def running(cls, volumes: list[Volume] | None = None) -> list[Self]:
        """One writer per VM found (vms.d, QEMU command lines, libvirt): what `writers list` shows.

        Each is identified at once, all in parallel: a monitor or guest agent that does not answer
        costs the listing one timeout (LIST_TIMEOUT, the agent's ping), not one per VM."""
        writers = [cls(vm.name, spec=vm) for vm in all_vms()]
        if writers:
            with ThreadPoolExecutor(min(len(writers), LIST_THREADS), thread_name_prefix="sv-vm-list") as pool:
                list(pool.map(QemuVm._identify_ahead, writers))
        return writers

    def _identify_ahead(self) -> None:
        try:
            self._ahead = self.identify()
        except Exception as err:  # told when the listing asks (identify), as if it had asked then
            self._ahead = err

    def _spec(self) -> VmSpec:
        if self.spec is None:
            assert self.instance
            self.spec = find_vm(self.instance)
        return self.spec

    def _connect(self, timeout: float = QMP_TIMEOUT) -> QmpClient:
        if self.qmp is None or not self.qmp.connected:
            self.qmp = QmpClient(self._spec().qmp, timeout=timeout).connect()
        return self.qmp

    def _agent(self) -> GuestAgent | None:
        spec = self._spec()
        if spec.agent is None:
            return None
        if self.agent is None:
            self.agent = GuestAgent(spec.agent, timeout=self.agent_timeout)
        return self.agent

    def _close(self) -> None:
        for conn in (self.qmp, self.agent):
            if conn is not None:
                conn.close()
        self.qmp = None
        self.agent = None

    def _ask_agent(self, status: str) -> str:
        """The guest agent's state: not asked while the guest does not run (it cannot answer)."""
        agent = self._agent()
        if agent is None:
            return "none"
        if status != run_state.RUNNING:
            return NOT_RUNNING
        return "answers" if agent.answers() else "no answer"

    def identify(self) -> list[Component]:
        ahead, self._ahead = self._ahead, None
        if isinstance(ahead, Exception):
            raise ahead
        if ahead is not None:
            return ahead
        connected_here = self.qmp is None
        try:
            qmp = self._connect(QMP_TIMEOUT if not connected_here else LIST_TIMEOUT)
            self.status = str(qmp.execute("query-status").get("status", ""))
            disks = list_disks(qmp)
            if self.agent_state == "none":
                self.agent_state = self._ask_agent(self.status)
        finally:
            if connected_here:
                self._close()
        return [self._component(disk) for disk in disks]

    def _component(self, disk: DiskInfo) -> Component:
        assert self.instance
        meta: dict[str, Any] = {
            "vm": self.instance,
            "disk": disk.name,
            "node": disk.node,
            "format": disk.format,
            "filename": disk.filename,
            "virtual_size": disk.virtual_size,
            "backing": disk.backing,
            "guest_agent": self.agent_state,
        }
        if disk.excluded:
            meta["excluded"] = disk.excluded
        return Component(
            name=f"{self.instance}/{disk.name}",
            writer=self.name,
            instance=self.instance,
            kind="vm-disk",
            paths=[],
            selectable=not disk.excluded,
            restore_method=RestoreMethod.RESTORE_TO_ALTERNATE_LOCATION,
            metadata=meta,
        )
