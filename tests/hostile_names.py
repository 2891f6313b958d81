"""A source tree of hostile names, and the checks every command's output must pass on it.

Names are any bytes but `/` and NUL (docs/archive.md, "Names"): text for people must show them in
one escaped line, JSON must give them exactly (`*_bytes` where they are not UTF-8), and no command
may end in a traceback or "internal error" because of one (project rule 7).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from click.testing import Result

from shadowvault.display import exact_bytes

LATIN1 = b"caf\xe9"
NEWLINE = b"new\nFORGED"  # shown raw, a second line would start with FORGED
TAB = b"tab\tTABBED"
ESCAPE = b"\x1b[31mred"
DIR = b"\xe9t\xe9"
LINK = b"link\xe9"
LINK_TARGET = b"\xfftarget"
FILES = {
    LATIN1: b"latin-1 name\n",
    b"\xff\xfe": b"not utf-8 at all\n",
    NEWLINE: b"newline\n",
    TAB: b"tab\n",
    ESCAPE: b"escape\n",
    b"-dash": b"an option?\n",
    b"L" * 255: b"longest name\n",
    b"plain.txt": b"plain\n",
    DIR + b"/inner\xe9": b"inner\n",
    DIR + b"/ok": b"ok\n",
}
XATTR = (b"user.binary", b"\x00\xff\xfe\x1b[31m\n")
NAME_KEYS = ("path", "name", "link_target", "target", "source")
# bytes a terminal acts on (all C0 but the line break, DEL, ESC); \n and \t are checked by FORGED/TABBED
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def build_tree(src: Path) -> None:
    """`src` holding every hostile name: files, a directory named in Latin-1, a symlink whose target
    is not UTF-8, a FIFO (its content is never read), a binary xattr."""
    root = os.fsencode(src)
    os.makedirs(root + b"/" + DIR)
    for name, data in FILES.items():
        with open(root + b"/" + name, "wb") as f:
            f.write(data)
    os.symlink(LINK_TARGET, root + b"/" + LINK)
    os.mkfifo(root + b"/fifo\xe9")
    os.setxattr(root + b"/plain.txt", *XATTR)


def tree_paths(top: bytes) -> set[bytes]:
    """Every path below `top` (bytes), `top` itself included."""
    found = {top}
    for here, dirs, files in os.walk(top):
        found.update(os.path.join(here, name) for name in [*dirs, *files])
    return found


def arg(value: object) -> str:
    """A command-line argument as Python's argv holds one (undecodable bytes as surrogate escapes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


@dataclass
class Outcome:
    """A command's output, checked: its JSON lines (under --json), its text otherwise."""

    argv: tuple[str, ...]
    lines: list[dict]
    stdout: bytes
    stderr: bytes

    def names(self, key: str = "path") -> set[bytes]:
        """The exact bytes of every `key` the JSON lines name (`key_bytes` decoded where given)."""
        return {exact_bytes(line, key) for line in self.lines if key in line and line[key] is not None}


def checked(result: Result, argv: tuple[str, ...], *, code: int = 0, binary: bool = False) -> Outcome:
    """Assert what every run must satisfy: its exit code, no traceback, JSON lines with a
    message_type (restic's single documents aside), and text that cannot drive the terminal."""
    out, err = result.stdout_bytes, result.stderr_bytes
    where = f"{argv}: exit {result.exit_code}\n{out[:2000]!r}\n{err[:2000]!r}"
    assert result.exit_code == code, where
    assert b"Traceback" not in err and b"internal error" not in err, where
    as_json = "--json" in argv
    lines: list[dict] = []
    streams = [err] if binary else [out, err]
    for stream in streams:
        stream.decode("utf-8")  # strict: a byte that is not UTF-8 reached the terminal or a JSON line
        if as_json:
            single = stream is out and argv[0] == "snapshots"  # restic's one array
            for line in [] if single else stream.splitlines():
                doc = json.loads(line)
                assert isinstance(doc, dict) and isinstance(doc.get("message_type"), str), (argv, line)
                lines.append(doc)
            continue
        assert not _RAW_CONTROL.search(stream), where
        assert stream.count(b"FORGED") == stream.count(b"new\\nFORGED"), where
        assert stream.count(b"TABBED") == stream.count(b"tab\\tTABBED"), where
    return Outcome(argv, lines, out, err)
