"""How the suite's modules are ordered and grouped for the xdist workers (tests/scheduling.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.scheduling import expected_seconds, longest_modules_first, scope_of


@dataclass
class Item:
    nodeid: str


def test_long_modules_start_first_and_a_shared_guests_modules_run_together() -> None:
    items = [
        Item("tests/a/test_many.py::t1"),
        Item("tests/a/test_many.py::t2"),
        Item("tests/shadow/test_lvm_provider.py::t1"),
        Item("tests/a/test_one.py::t1"),
        Item("tests/recover/test_recover.py::t1"),
        Item("tests/shadow/test_lvm_provider.py::t2"),
        Item("tests/test_guest_lab.py::t1"),
        Item("tests/shadow/test_lvm_validity.py::t1"),
    ]
    longest_modules_first(items)  # only nodeid is read
    assert [item.nodeid for item in items] == [
        "tests/shadow/test_lvm_validity.py::t1",  # the longest group of modules on a shared guest
        "tests/shadow/test_lvm_provider.py::t1",  # the other group: one scope
        "tests/shadow/test_lvm_provider.py::t2",
        "tests/test_guest_lab.py::t1",
        "tests/recover/test_recover.py::t1",
        "tests/a/test_many.py::t1",  # the others by their number of tests, in collection order
        "tests/a/test_many.py::t2",
        "tests/a/test_one.py::t1",
    ]
    assert scope_of("tests/test_guest_lab.py::t1") == scope_of("tests/shadow/test_lvm_provider.py::t2")
    assert scope_of("tests/a/test_one.py::t1") == "tests/a/test_one.py"
    assert expected_seconds("tests/a/test_many.py", 2) < expected_seconds("tests/recover/test_recover.py", 1)
