"""Who may be frozen, asked before anything is held: the rules shared by fsfreeze and the providers that
freeze a volume themselves (FreezePolicy.NEEDS), and the layering that keeps providers off writers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shadowvault.errors import UsageError
from shadowvault.shadow import planning
from shadowvault.shadow.providers.fanotify import FanotifyProvider
from shadowvault.shadow.volumes import find_volume
from tests.fixtures.loopfs import loop_filesystem

PROVIDERS = Path(__file__).resolve().parents[2] / "src" / "shadowvault" / "shadow" / "providers"


def test_no_provider_module_imports_a_writer_module():
    offenders = []
    for module in sorted(PROVIDERS.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [
                f"{module.name}: {name}" for name in names if name.startswith("shadowvault.shadow.writers")
            ]
    assert offenders == []


def test_a_provider_that_freezes_the_volume_itself_is_refused_on_the_volume_holding_our_state(monkeypatch):
    with loop_filesystem("ext4") as fs:
        monkeypatch.setenv("SHADOWVAULT_STATE_DIR", str(fs.mount / "state"))
        volume = find_volume(str(fs.mount))
        with pytest.raises(UsageError) as refused:
            planning.check_freeze_policies([], [volume], {volume.mount_point: FanotifyProvider()})
        message = str(refused.value)
        assert "provider fanotify" in message and str(fs.mount) in message
        assert "the state directory" in message

        monkeypatch.setenv("SHADOWVAULT_STATE_DIR", "/var/lib/shadowvault")
        planning.check_freeze_policies([], [volume], {volume.mount_point: FanotifyProvider()})
