"""VM tests reach only their own guests: other QEMU guests on this machine (other tests') are not ours."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.vm.helpers import new_repository


@pytest.fixture(autouse=True)
def vms_from_vms_d_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWVAULT_VM_SCAN", "0")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """A new repository in the test's directory, closed after it."""
    repository = new_repository(tmp_path / "repo")
    try:
        yield repository
    finally:
        repository.close()
