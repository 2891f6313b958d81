"""How `make test` spreads the test modules over its xdist workers: the long ones first, and never
one long module queued behind another.

`--dist loadscope` keeps each module on one worker (its module fixtures: a booted guest, a server)
and, by default, starts the modules with the most tests first. The modules that run for minutes (an
emulated machine, a directory server; a few tests each) then started last, and the run waited for
them at its end. And a worker whose module is down to its last test is handed the next module at
once (it cannot run that test before it knows what comes after it), so a long module could wait
behind another long one while a second worker had nothing to do.

So the collection is put in order of each module's expected run time (LONG_MODULES, else a few
seconds a test), which loadscope then keeps, and a worker still busy with a long module is handed
the shortest module waiting rather than the longest.
"""

from __future__ import annotations

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

# Seconds each module took in a full `make test` on a 2-CPU machine (its durations report), for the
# modules over about a minute; only the order they give matters. Update it when a module grows.
LONG_MODULES: dict[str, float] = {
    "tests/shadow/test_lvm_provider.py": 600,
    "tests/shadow/test_lvm_validity.py": 340,
    "tests/writers/test_samba_dc.py": 320,
    "tests/recover/test_recover.py": 240,
    "tests/recover/test_recover_bios_gpt.py": 240,
    "tests/shadow/test_lvm_postgresql.py": 210,
    "tests/recover/test_recover_grub.py": 190,
    "tests/recover/test_recover_uefi.py": 170,
    "tests/vm/test_guest.py": 170,
    "tests/vm/test_hostile_vm_snapshots.py": 100,
    "tests/writers/test_postgresql.py": 100,
    "tests/repo/test_s3_many_hosts.py": 85,
    "tests/repo/test_damage_matrix.py": 80,
    "tests/test_guest_lab.py": 80,
    "tests/repo/test_crash_campaign.py": 75,
    "tests/archive/test_hostile_restore.py": 70,
    "tests/vm/test_run_states.py": 70,
}
SECONDS_PER_TEST = 2.0  # what the other modules took, on average


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def expected_seconds(module: str, tests: int) -> float:
    return LONG_MODULES.get(module, SECONDS_PER_TEST * tests)


def longest_modules_first(items: list[pytest.Item]) -> None:
    """Sort `items` in place: modules by expected run time, longest first; each module's tests, and
    modules expected to take as long, in the order they were collected."""
    tests: dict[str, int] = {}
    for item in items:
        tests[module_of(item.nodeid)] = tests.get(module_of(item.nodeid), 0) + 1
    position = {module: index for index, module in enumerate(tests)}
    items.sort(key=lambda item: (-expected_seconds(m := module_of(item.nodeid), tests[m]), position[m]))


class LongestFirstScheduling(LoadScopeScheduling):
    """loadscope over a collection already in the order wanted, that never queues a long module
    behind another."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # keep the collection's order (longest_modules_first)

    def _assign_work_unit(self, node: WorkerController) -> None:
        if self._busy_with_a_long_module(node) and len(self.workqueue) > 1:
            shortest = next(reversed(self.workqueue))
            self.workqueue.move_to_end(shortest, last=False)  # the one the base class takes next
        super()._assign_work_unit(node)

    def _busy_with_a_long_module(self, node: WorkerController) -> bool:
        return any(
            scope in LONG_MODULES and not all(unit.values())
            for scope, unit in self.assigned_work.get(node, {}).items()
        )
