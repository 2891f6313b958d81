"""LDIF (RFC 2849) as slapcat and ldapsearch write it, and change records as ldapmodify reads them.

Only what the directory tools here exchange: content records (folded lines, `attr:: base64`
values, comments), read into entries; add and modify records written back. Attribute names are
kept lowercased: LDAP compares them without case. Backup exports are hostile input: a value that is
not base64 where it says so, or a DN that is not UTF-8, is an LdifError naming the line and the entry.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from shadowvault.errors import ShadowvaultError

_SAFE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*")


@dataclass
class Entry:
    """One LDAP entry: its DN as written and its attributes (lowercased name -> values in order)."""

    dn: str
    attributes: dict[str, list[bytes]] = field(default_factory=dict)


class LdifError(ShadowvaultError):
    """Text that is not LDIF (a damaged backup export): the one line names the line and the entry."""


def _logical_lines(text: bytes) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, the line unfolded): a line starting with a space continues the one
    before; an empty line ends a record."""
    start, current = 0, None
    for number, line in enumerate(text.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        if current is not None and line.startswith(b" "):
            current += line[1:]
            continue
        if current is not None:
            yield start, bytes(current)
        start, current = number, bytearray(line)
    if current is not None:
        yield start, bytes(current)


def _where(number: int, dn: str | None) -> str:
    return f"line {number}" + (f" (entry {dn})" if dn is not None else "")


def _value(raw: bytes, key: str, number: int, dn: str | None) -> bytes:
    """The value after `attr:`: `: base64` or ` text`."""
    if raw.startswith(b":"):
        try:
            return base64.b64decode(raw[1:].strip(), validate=True)
        except binascii.Error:
            raise LdifError(f"{_where(number, dn)}: the value of {key} is not valid base64") from None
    return raw[1:] if raw.startswith(b" ") else raw


def parse_entries(text: bytes) -> list[Entry]:
    """Every content record of `text`, in order; LdifError names the first line that is not LDIF."""
    entries: list[Entry] = []
    entry: Entry | None = None
    for number, line in _logical_lines(text):
        if not line:
            if entry is not None:
                entries.append(entry)
            entry = None
            continue
        if line.startswith(b"#") or line.startswith(b"version:"):
            continue
        name, sep, rest = line.partition(b":")
        if not sep:
            continue
        key = name.decode("ascii", "backslashreplace").strip().lower()
        if entry is None:
            if key == "dn":
                value = _value(rest, key, number, None)
                try:
                    entry = Entry(value.decode("utf-8"))
                except UnicodeDecodeError:
                    shown = value.decode("utf-8", "backslashreplace")
                    raise LdifError(f"{_where(number, None)}: the DN {shown} is not UTF-8") from None
            continue
        entry.attributes.setdefault(key, []).append(_value(rest, key, number, entry.dn))
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
