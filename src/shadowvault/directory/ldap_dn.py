"""Distinguished names (RFC 4514): checked, and normalized so two spellings of one DN compare equal.

A user types `OU=People, dc=Example,dc=com`; slapcat writes `ou=people,dc=example,dc=com`. The
normal form lowercases attribute types and values (the naming attributes used in practice, cn, ou,
dc, uid, o, match without case), drops the spaces around separators and re-escapes values one way
(slapcat's `cn=\\23x` and a user's `cn=\\#x` are one DN).

A value that starts with an unescaped `#` is RFC 4514's BER form (`cn=#04024869`: the hex of the
value's BER encoding), not the text after the `#`: it is kept as `#` and lowercase hex, so it never
equals the text value `cn=\\#04024869`. slapd refuses BER-form DNs, so no slapcat DN has one.
"""

from __future__ import annotations

import re

from shadowvault.errors import UsageError

_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)*")
_HEX = re.compile(r"[0-9A-Fa-f]{2}")
_BER = re.compile(r"#(?:[0-9A-Fa-f]{2})+")
_SPECIAL = ',+"\\<>;='


class BadDn(UsageError):
    """Not a DN: the message says where."""


def _split(text: str, separators: str) -> list[str]:
    """Split at unescaped `separators` (escapes are kept for the value parser)."""
    parts, current, i = [], "", 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            current += text[i : i + 3] if _HEX.fullmatch(text[i + 1 : i + 3]) else text[i : i + 2]
            i += 3 if _HEX.fullmatch(text[i + 1 : i + 3]) else 2
            continue
        if char in separators:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    return parts


def _unescape(value: str, dn: str) -> str:
    out, raw, i = "", b"", 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            pair = value[i + 1 : i + 3]
            if _HEX.fullmatch(pair):
                raw += bytes.fromhex(pair)
                i += 3
                continue
            if i + 1 >= len(value) or value[i + 1] not in _SPECIAL + " #":
                raise BadDn(f"not a DN: {dn} (a backslash must escape a special character or two hex digits)")
            char, i = value[i + 1], i + 1
        if raw:
            out += raw.decode("utf-8", "replace")
            raw = b""
        out += char
        i += 1
    return out + (raw.decode("utf-8", "replace") if raw else "")


def _escape(value: str) -> str:
    last = len(value) - 1
    return "".join(
        "\\" + c if c in _SPECIAL or (c in " #" and i == 0) or (c == " " and i == last) else c
        for i, c in enumerate(value)
    )


def _strip(value: str) -> str:
    """`value` without the spaces around it, but an escaped trailing space (`a\\ `) kept."""
    value = value.lstrip(" ")
    while value.endswith(" "):
        body = value[:-1]
        if (len(body) - len(body.rstrip("\\"))) % 2:  # an odd number of backslashes escapes it
            break
        value = body
    return value


def _value(value: str, dn: str) -> str:
    """One attribute value in normal form: `#` and lowercase hex for the BER form, else the text."""
    if value.startswith("#"):
        if not _BER.fullmatch(value):
            raise BadDn(
                f"not a DN: {dn} (a value starting with # is the BER form, # and hex digits; "
                "write a leading # of a text value as \\#)"
            )
        return value.lower()
    return _escape(_unescape(value, dn).lower())


def rdns(dn: str) -> list[str]:
    """The normalized RDNs of `dn`, leaf first; BadDn (one line, for the user) when it is not a DN."""
    if not dn.strip():
        raise BadDn("not a DN: it is empty")
    out = []
    for rdn in _split(dn, ",;"):
        avas = []
        for ava in _split(rdn, "+"):
            name, sep, value = ava.partition("=")
            name, value = name.strip(), _strip(value)
            if not sep or not _TYPE.fullmatch(name):
                raise BadDn(
                    f"not a DN: {dn} (each part must be TYPE=VALUE, as in ou=people,dc=example,dc=com)"
                )
            if not value:
                raise BadDn(f"not a DN: {dn} ({name}= has no value)")
            avas.append(f"{name.lower()}={_value(value, dn)}")
        out.append("+".join(sorted(avas)))
    return out


def normalize(dn: str) -> str:
    return ",".join(rdns(dn))


def parent(normal: str) -> str:
    """The parent of a normalized DN ("" above a one-RDN DN)."""
    return ",".join(_split(normal, ",")[1:]) if normal else ""


def within(normal: str, base: str) -> bool:
    """Whether normalized `normal` is `base` or below it."""
    under, above = _split(normal, ","), _split(base, ",")
    return len(under) >= len(above) and under[len(under) - len(above) :] == above
