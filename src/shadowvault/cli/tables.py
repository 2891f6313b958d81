"""Tables as lines of text: every value whole into a pipe, and fitting the terminal's width on one.

A cell is broken only where a person would break it: at spaces, and after a `/` in a path (a size
and its unit stay together); then, where a column is still too narrow, after a `-` or after the `.`
of a host name; a piece longer than its column is cut only when nothing else fits. Columns are
separated by two spaces, with no box drawing, so the same lines read well in a terminal, a log and
`grep`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.cells import cell_len

GAP = "  "
# "12.5 MiB ", "a/", "b ", "word": where a line may break
_PIECES = re.compile(r"\d[\d.]* [KMGTPE]?i?B\b\s*|[^\s/]*/+|\S+?(?=/)|\S+\s*|\s+")


def render_table(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int | None) -> list[str]:
    """The table's lines: a header line, then each row (a row whose cells wrap takes several lines).

    `width` None: no limit (every cell whole on its lines). Otherwise the widest columns give way first.
    """
    table = [list(columns), *([str(c) for c in row] for row in rows)]
    natural = [
        max(cell_len(line) for row in table for line in row[i].split("\n")) for i in range(len(columns))
    ]
    widths = natural if width is None else _fit(table, natural, width - cell_len(GAP) * (len(columns) - 1))
    cells = [[_wrap(cell, w) for cell, w in zip(row, widths, strict=True)] for row in table]
    widths = [  # no wider than what a column shows once wrapped
        max(cell_len(line) for row in cells for line in row[i]) for i in range(len(columns))
    ]
    lines = []
    for wrapped in cells:
        for n in range(max(len(cell) for cell in wrapped)):
            parts = [
                _pad(cell[n] if n < len(cell) else "", w) for cell, w in zip(wrapped, widths, strict=True)
            ]
            lines.append(GAP.join(parts).rstrip())
    return lines


# a piece's parts, each ending after a hyphen or a dot before a letter (host.example.org; never 12.5)
_HYPHENED = re.compile(r".*?(?:-|\.(?=[A-Za-z]))|.+")
LONG_PIECE = 20  # a column holding pieces this long (path components, names) is cut before the others
MIN_CUT = 8  # how narrow such a column gets before other columns are cut too


def _fit(table: list[list[str]], natural: list[int], available: int) -> list[int]:
    """Column widths summing to at most `available`: the widest column narrows first, down to its
    longest unbreakable piece; then columns of long pieces (paths) are cut; then pieces are broken
    after hyphens (and dots of names) everywhere; then columns of long pieces (paths) are cut; then
    (only if it must) any column is cut."""
    widths = list(natural)
    columns = range(len(widths))
    pieces = [[p.rstrip() for row in table for p in _pieces(row[i])] for i in columns]
    floors = [min(max((cell_len(p) for p in pieces[i]), default=1), natural[i]) for i in columns]
    hyphened = [
        min(max((cell_len(part) for p in pieces[i] for part in _HYPHENED.findall(p)), default=1), floors[i])
        for i in columns
    ]
    long = [hyphened[i] > LONG_PIECE for i in columns]  # long even between hyphens: a path
    steps = (
        lambda i: floors[i],  # wrapped at spaces and slashes only
        lambda i: hyphened[i],  # words broken after a hyphen or a name's dot
        lambda i: LONG_PIECE if long[i] else hyphened[i],  # long pieces cut
        lambda i: MIN_CUT if long[i] else hyphened[i],
        lambda i: 1,
    )
    # The first way of breaking that lets the table fit is applied widest column first, so that the
    # columns share the width (rather than the first ones squeezed to their floors while one cannot
    # give way). When only cutting anything fits, each way is tried in turn, widest first.
    feasible = [
        step for step in steps[:-1] if sum(min(widths[i], max(step(i), 1)) for i in columns) <= available
    ]
    for floor_of in feasible[:1] or steps:
        while sum(widths) > available:
            shrinkable = [i for i in columns if widths[i] > max(floor_of(i), 1)]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    return widths


def _pieces(cell: str) -> list[str]:
    return [piece for line in cell.split("\n") for piece in _PIECES.findall(line)]


def _wrap(cell: str, width: int) -> list[str]:
    """The cell's lines within `width`: broken at spaces and after slashes; a piece too long is cut."""
    out: list[str] = []
    for line in cell.split("\n"):
        current = ""
        for piece in _PIECES.findall(line) or [""]:
            if cell_len(current + piece.rstrip()) <= width:
                current += piece
                continue
            if current.strip():
                out.append(current.rstrip())
            current = piece.lstrip() if current.strip() else (current + piece).lstrip()
            while cell_len(current.rstrip()) > width:  # a piece wider than the column: cut it
                head, current = _cut(current, width)
                out.append(head)
        out.append(current.rstrip())
    return out


def _cut(text: str, width: int) -> tuple[str, str]:
    """The head of `text` that fits `width` (ending after its last `-` or name's `.` when it has one),
    and the rest."""
    taken = 0
    for at, char in enumerate(text):
        taken += cell_len(char)
        if taken > width:
            ends = [m.end() for m in _HYPHENED.finditer(text) if 0 < m.end() <= at]
            at = ends[-1] if ends else max(at, 1)
            return text[:at], text[at:]
    return text, ""


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - cell_len(text), 0)
