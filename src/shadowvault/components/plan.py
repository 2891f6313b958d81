"""Restore plans: what a component restore would create, replace and leave alone, before it does it.

Every scenario builds a Plan first; `--dry-run` prints it and stops, a real restore applies exactly
the actions it lists (so the preview and the result cannot drift apart).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shadowvault.display import escape_text, exact_bytes, exact_fields, readable_text

VERBS = ("create", "replace", "leave", "remove", "install", "enable", "disable", "mask", "add", "run", "load")
DONE = {  # each verb as what was done
    "create": "created",
    "replace": "replaced",
    "leave": "left",
    "remove": "removed",
    "install": "installed",
    "enable": "enabled",
    "disable": "disabled",
    "mask": "masked",
    "add": "added",
    "run": "ran",
    "load": "loaded",
}
FILE_KINDS = ("file", "dir", "symlink")  # an applied restore counts the ones it left alone


@dataclass
class Action:
    """One step of a restore. `source` is the entry's path in the snapshot (relative), if any."""

    verb: str  # one of VERBS
    kind: str  # file | dir | symlink | user | group | member | package | unit | fstab | crontab
    target: str  # path inside the target root ("/etc/hostname") or a name (account, package, unit)
    reason: str = ""
    source: str | None = None

    def line(self, *, applied: bool = False) -> str:
        """The step as the plan says it, or (`applied`) as done."""
        text = (
            f"{DONE[self.verb]:<9} {self.kind:<8} {escape_text(self.target)}"
            if applied
            else (f"{self.verb:<8} {self.kind:<8} {escape_text(self.target)}")
        )
        return f"{text}  ({escape_text(self.reason)})" if self.reason else text  # names in it too


@dataclass
class Plan:
    component: str
    target_root: str
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # steps that failed while applying (the others were carried out): (what, why)
    errors: list[tuple[str, str]] = field(default_factory=list)
    # component-specific data the apply step needs (id maps, package lists); not printed
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, verb: str, kind: str, target: str, reason: str = "", source: str | None = None) -> Action:
        if verb not in VERBS:
            raise ValueError(f"unknown plan verb {verb}")
        action = Action(verb, kind, target, reason, source)
        self.actions.append(action)
        return action

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def counts(self) -> dict[str, int]:
        return dict(Counter(a.verb for a in self.actions))

    def of(self, verb: str, kind: str | None = None) -> list[Action]:
        return [a for a in self.actions if a.verb == verb and (kind is None or a.kind == kind)]

    def targets(self, verb: str, kind: str | None = None) -> set[str]:
        return {a.target for a in self.of(verb, kind)}

    def summary(self, *, applied: bool = False) -> str:
        """The counts per verb: what the plan would do, or (`applied`) what was done."""
        counts = self.counts()
        for verb in ("create", "replace", "leave"):
            counts.setdefault(verb, 0)
        if applied:
            parts = [f"{n} {'left alone' if verb == 'leave' else DONE[verb]}" for verb, n in counts.items()]
        else:
            parts = [f"{n} {'left alone' if verb == 'leave' else 'to ' + verb}" for verb, n in counts.items()]
        return f"{self.component} -> {self.target_root}: " + ", ".join(parts)

    def lines(self) -> list[str]:
        return [a.line() for a in self.actions]

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Plan:
        """The plan as to_dict wrote it (without its apply data): the daemon sends plans as JSON."""
        return cls(
            component=doc["component"],
            target_root=doc["target_root"],
            actions=[_action_of(a) for a in doc["actions"]],
            warnings=list(doc["warnings"]),
            errors=[(e["what"], e["why"]) for e in doc["errors"]],
        )

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON: a name that is not UTF-8 (held as surrogate escapes) as `ls` gives it,
        text with \\xNN plus `target_bytes`/`source_bytes`; messages with such names as text."""
        return {
            "component": self.component,
            "target_root": readable_text(self.target_root),
            "counts": self.counts(),
            "actions": [_action_fields(a) for a in self.actions],
            "warnings": [readable_text(w) for w in self.warnings],
            "errors": [{"what": readable_text(what), "why": readable_text(why)} for what, why in self.errors],
        }


def _name_fields(key: str, name: str | None) -> dict[str, str | None]:
    if name is None:
        return {key: None}
    return {**exact_fields(key, name.encode("utf-8", "surrogateescape"))}


def _name_of(fields: dict[str, Any], key: str) -> str | None:
    if fields.get(key) is None:
        return None
    return exact_bytes(fields, key).decode("utf-8", "surrogateescape")


def _action_fields(action: Action) -> dict[str, Any]:
    return {
        "verb": action.verb,
        "kind": action.kind,
        **_name_fields("target", action.target),
        "reason": readable_text(action.reason),
        **_name_fields("source", action.source),
    }


def _action_of(fields: dict[str, Any]) -> Action:
    target = _name_of(fields, "target")
    assert target is not None
    return Action(fields["verb"], fields["kind"], target, fields["reason"], _name_of(fields, "source"))
