"""VM tests reach only their own guests: other QEMU guests on this machine (other tests') are not ours."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def vms_from_vms_d_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWVAULT_VM_SCAN", "0")
