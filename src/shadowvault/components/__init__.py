"""Components: what a backup holds (files, user-profiles, system-state) and how each one is restored.

See docs/components.md for the documents each component stores and the restore scenarios.
"""

from __future__ import annotations

from shadowvault.components.base import Component
from shadowvault.errors import UsageError


def registry() -> dict[str, Component]:
    """Every component by name (imported lazily: system-state pulls in more than files needs)."""
    from shadowvault.components.files import Files
    from shadowvault.components.system_state import SystemState
    from shadowvault.components.user_profiles import UserProfiles

    return {c.name: c for c in (Files(), UserProfiles(), SystemState())}


def get(name: str) -> Component:
    components = registry()
    if name not in components:
        raise UsageError(f"unknown component {name!r} (known: {', '.join(sorted(components))})")
    return components[name]
