"""How names and messages from a repository or a file system are shown: safe on a terminal, exact in JSON.

A file name is any bytes but `/` and NUL: it can hold a newline (a forged second line of `ls`), an
escape sequence (ESC [ ... moves the cursor, retitles the window) or bytes that are not UTF-8. People
get an escaped form (`\\n`, `\\r`, `\\t`, `\\xNN` for every other byte of a control character or a
byte that is not UTF-8); scripts get the exact name in JSON (see docs/archive.md, "Names").
"""

from __future__ import annotations

import base64
import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# characters that reorder or break the line on a terminal though they are not in a control category
_LAYOUT = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) in ("Cc", "Cs") or char in _LAYOUT:
        raw = char.encode("utf-8", "surrogatepass")
        return "".join(f"\\x{byte:02x}" for byte in raw)
    return char


def escape_text(text: str) -> str:
    """`text` with control characters (C0, DEL, C1), line separators, bidi overrides and undecodable
    bytes (surrogateescape) written as escapes: one line that cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def display_name(raw: bytes) -> str:
    """A name or path (bytes) for people: UTF-8 shown as is, everything else escaped (`escape_text`)."""
    return escape_text(raw.decode("utf-8", "surrogateescape"))


def one_component(name: bytes) -> bytes:
    """A crafted name that is not one path component (`..`, `a/b`, a NUL byte) made one, for showing:
    its `/` and NUL, and the dots of `.` and `..`, as \\xNN. `ls`, `diff`, `check` and restore all
    show an unsafe name this way, so that it never reads as a path."""
    if name in (b".", b".."):
        return b"\\x2e" * len(name)
    return name.replace(b"/", b"\\x2f").replace(b"\0", b"\\x00")


def display_component(raw: bytes) -> str:
    """One name of a directory for people, even a crafted one (`one_component`, then `display_name`)."""
    return display_name(one_component(raw))


def human_size(size: int) -> str:
    """A size as a person reads it (binary units), for messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def counted(n: int, noun: str) -> str:
    """`1 pack`, `3 packs`: a count with its noun in the right number (nouns with a plain -s plural)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def exact_fields(key: str, raw: bytes) -> dict[str, str]:
    """A name or path for JSON: `{key: text}` with the exact text when it is UTF-8; otherwise the text
    with undecodable bytes as \\xNN plus `{key}_bytes`, the exact bytes in base64."""
    try:
        return {key: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            key: raw.decode("utf-8", "backslashreplace"),
            f"{key}_bytes": base64.b64encode(raw).decode("ascii"),
        }


def is_utf8(text: str) -> bool:
    """Whether `text` is real text: no undecodable byte held as a surrogate escape (which JSON,
    msgpack and the terminal's UTF-8 all refuse)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable_text(text: str) -> str:
    """`text` made UTF-8: bytes that are not UTF-8 (surrogate escapes) as \\xNN, the rest exactly.
    For records and messages (not names, which JSON gives exactly with `exact_fields`)."""
    if is_utf8(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte: its UTF-8 form
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def exact_bytes(fields: dict[str, str], key: str) -> bytes:
    """The exact bytes of a name or path that `exact_fields` wrote (`{key}_bytes` when there is one)."""
    if f"{key}_bytes" in fields:
        return base64.b64decode(fields[f"{key}_bytes"])
    return fields[key].encode("utf-8")
