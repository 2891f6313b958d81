"""How `make test` spreads the test modules over its xdist workers: the long ones first, and never
one long module queued behind another.

`--dist loadscope` keeps each module on one worker (its module fixtures: a booted guest, a server)
and, by default, starts the modules with the most tests first. The modules that run for minutes (an
emulated machine, a directory server; a few tests each) then started last, and the run waited for
them at its end. And a worker whose module is down to its last test is handed the next module at
once (it cannot run that test before it knows what comes after it), so a long module could wait
behind another long one while a second worker had nothing to do.

So the collection is put in order of each module's expected run time (LONG_SCOPES, else a few
seconds a test), which loadscope then keeps, and a worker still busy with a long module is handed
the shortest module waiting rather than the longest. The modules on the guest lab's shared guest
come in groups (SHARED_GUEST_GROUPS), each one unit of work: one worker runs its modules one after
another on one boot.
"""

from __future__ import annotations

from collections import Counter

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

# The modules on tests/fixtures/guest_lab.py's shared guest, in two groups of about equal length:
# each group is one scope, so one worker and one boot runs its modules one after another (one group
# of all four was the whole lab run's last ten minutes on one worker).
SHARED_GUEST_GROUPS = {
    "tests/shadow/test_lvm_provider.py": "the LVM provider on a shared guest",
    "tests/test_guest_lab.py": "the LVM provider on a shared guest",
    "tests/shadow/test_lvm_postgresql.py": "LVM validity and PostgreSQL on a shared guest",
    "tests/shadow/test_lvm_validity.py": "LVM validity and PostgreSQL on a shared guest",
}

# Seconds each scope took in a full run on a 2-CPU machine (the durations reports of `make test`
# and `make test-lab`), for the scopes over about a minute; only the order they give matters.
# Update it when a module grows.
LONG_SCOPES: dict[str, float] = {
    # make test-lab
    "LVM validity and PostgreSQL on a shared guest": 600,  # its first setup may build the guest image
    "the LVM provider on a shared guest": 400,
    "tests/recover/test_recover_bios_gpt.py": 280,
    "tests/writers/test_samba_dc.py": 280,
    # its first setup builds the debootstrap minbase on a fresh checkout (2-4 min, under a lock the
    # guest image, the recovery machines and the systemd modules wait on)
    "tests/components/test_system_state.py": 200,
    "tests/recover/test_recover_uefi.py": 160,
    "tests/vm/test_guest.py": 155,
    "tests/recover/test_recover.py": 150,
    "tests/recover/test_recover_grub.py": 145,
    "tests/vm/test_guest_left_out_disk.py": 80,
    "tests/vm/test_qmp_lost_while_frozen.py": 70,
    "tests/vm/test_run_states.py": 65,
    # make test
    "tests/repo/test_damage_matrix.py": 165,
    "tests/writers/test_postgresql.py": 135,
    "tests/archive/test_hostile_restore.py": 120,
    "tests/jobs/test_scheduled.py": 115,
    "tests/service/test_cli_through_daemon.py": 95,
    "tests/repo/test_s3_many_hosts.py": 90,
    "tests/service/test_daemon.py": 75,
    "tests/writers/test_mariadb.py": 75,
    "tests/shadow/test_fanotify_provider.py": 70,
    "tests/repo/test_crash_campaign.py": 65,
    "tests/writers/test_restore_cli.py": 60,
}
SECONDS_PER_TEST = 2.0  # what the other modules took, on average


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or its group of modules on a shared guest."""
    module = nodeid.split("::", 1)[0]
    return SHARED_GUEST_GROUPS.get(module, module)


def expected_seconds(scope: str, tests: int) -> float:
    return LONG_SCOPES.get(scope, SECONDS_PER_TEST * tests)


def longest_modules_first(items: list[pytest.Item]) -> None:
    """Sort `items` in place: scopes by expected run time, longest first; the tests of a scope, and
    scopes expected to take as long, in the order they were collected."""
    tests = Counter(scope_of(item.nodeid) for item in items)
    position = {scope: index for index, scope in enumerate(tests)}
    items.sort(key=lambda item: (-expected_seconds(s := scope_of(item.nodeid), tests[s]), position[s]))


class LongestFirstScheduling(LoadScopeScheduling):
    """loadscope over a collection already in the order wanted, that never queues a long module
    behind another."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # keep the collection's order (longest_modules_first)

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)

    def _assign_work_unit(self, node: WorkerController) -> None:
        if self._busy_with_a_long_module(node) and len(self.workqueue) > 1:
            shortest = next(reversed(self.workqueue))
            self.workqueue.move_to_end(shortest, last=False)  # the one the base class takes next
        super()._assign_work_unit(node)

    def _busy_with_a_long_module(self, node: WorkerController) -> bool:
        return any(
            scope in LONG_SCOPES and not all(unit.values())
            for scope, unit in self.assigned_work.get(node, {}).items()
        )
