"""LDIF (RFC 2849) as slapcat and ldapsearch write it, and change records as ldapmodify reads them.

Only what the directory tools here exchange: content records (folded lines, `attr:: base64`
values, comments), read into entries; add and modify records written back. Attribute names are
kept lowercased: LDAP compares them without case.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

_SAFE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*")


@dataclass
class Entry:
    """One LDAP entry: its DN as written and its attributes (lowercased name -> values in order)."""

    dn: str
    attributes: dict[str, list[bytes]] = field(default_factory=dict)


def _value(raw: bytes) -> bytes:
    """The value after `attr:`: `: base64` or ` text`."""
    if raw.startswith(b":"):
        return base64.b64decode(raw[1:].strip())
    return raw[1:] if raw.startswith(b" ") else raw


def parse_entries(text: bytes) -> list[Entry]:
    """Every content record of `text`, in order."""
    entries: list[Entry] = []
    unfolded = re.sub(rb"\r?\n ", b"", text)
    for record in re.split(rb"\r?\n(?:\r?\n)+", unfolded):
        entry: Entry | None = None
        for line in record.splitlines():
            if not line or line.startswith(b"#") or line.startswith(b"version:"):
                continue
            name, sep, rest = line.partition(b":")
            if not sep:
                continue
            value = _value(rest)
            key = name.decode("ascii", "replace").strip().lower()
            if entry is None:
                if key == "dn":
                    entry = Entry(value.decode())
                continue
            entry.attributes.setdefault(key, []).append(value)
        if entry is not None:
            entries.append(entry)
    return entries


def attribute_line(name: str, value: bytes) -> str:
    """`name: value`, or `name:: base64` when the value is not safe as plain text (RFC 2849)."""
    if value == b"" or (_SAFE.fullmatch(value) and not value.endswith(b" ")):
        return f"{name}: {value.decode('ascii')}" if value else f"{name}:"
    return f"{name}:: {base64.b64encode(value).decode()}"


def dn_line(dn: str) -> str:
    return attribute_line("dn", dn.encode())


def add_record(entry: Entry) -> str:
    lines = [dn_line(entry.dn), "changetype: add"]
    for name, values in entry.attributes.items():
        lines += [attribute_line(name, v) for v in values]
    return "\n".join(lines) + "\n"


def modify_record(dn: str, replace: dict[str, list[bytes]], delete: list[str]) -> str:
    """One modify (atomic on the server): `replace` these attributes' values, `delete` these attributes."""
    lines = [dn_line(dn), "changetype: modify"]
    for name, values in replace.items():
        lines += [f"replace: {name}", *(attribute_line(name, v) for v in values), "-"]
    for name in delete:
        lines += [f"delete: {name}", "-"]
    return "\n".join(lines) + "\n"
