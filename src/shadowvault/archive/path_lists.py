"""Lists of paths and patterns read from files: --files-from (and its -verbatim and -raw forms) and
--exclude-file, with restic's rules.

- `--files-from`: one path per line; surrounding whitespace is trimmed; blank lines and lines
  starting with `#` are ignored; a line holding `*`, `?` or `[` is a glob expanded to the paths it
  matches (sorted), as restic does with Go's filepath.Glob (`*` matches a leading dot there too).
  A glob that matches nothing stays as written, so the backup names it as a path that does not exist
  (restic skips it with a warning; a list that no longer matches is worth stopping for).
- `--files-from-verbatim`: one path per line, taken as it is (only empty lines are ignored): for
  names that start with `#` or a space.
- `--files-from-raw`: paths separated by NUL bytes (`find -print0`): for names holding a line break.
- `--exclude-file` (and `--iexclude-file`): one glob per line, the same syntax as --exclude; blank
  lines and `#` comments are ignored; `$VAR` and `${VAR}` are replaced by the variable's value (empty
  when unset; `$$` is `$`), as restic does with Go's os.Expand: a shared file says `$HOME/.cache`.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from enum import StrEnum

from shadowvault.errors import UsageError


class ListFormat(StrEnum):
    LINES = "files-from"
    VERBATIM = "files-from-verbatim"
    RAW = "files-from-raw"


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise UsageError(f"--{option} {path}: {err.strerror or err}") from err


def read_path_list(path: str, form: ListFormat = ListFormat.LINES) -> list[str]:
    """The paths listed in the file at `path`, in order (names that are not UTF-8 survive)."""
    data = _read(path, form.value)
    if form is ListFormat.RAW:
        entries = data.split(b"\0")
    else:
        entries = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    if form is not ListFormat.LINES:
        return [os.fsdecode(e) for e in entries if e]
    lines = [os.fsdecode(e.strip()) for e in entries if e.strip() and not e.strip().startswith(b"#")]
    return [path for line in lines for path in _expanded(line)]


def _expanded(line: str) -> list[str]:
    """The paths a --files-from line names: a glob's matches, or the line itself."""
    if not glob.has_magic(line):
        return [line]
    return sorted(glob.glob(line, include_hidden=True)) or [line]


# Go's os.Expand: ${NAME}; "${}" and an unclosed "${" are eaten; a shell special character or a
# digit is a name of one character; else the longest run of letters, digits and "_"
_VARIABLE = re.compile(r"\$(?:\{([^}]*)\}|\{|([*#$@!?0-9-])|([A-Za-z0-9_]+))")


def expand_variables(text: str) -> str:
    """`text` with its variables replaced as restic replaces them in an exclude file."""

    def value(match: re.Match[str]) -> str:
        name = next((group for group in match.groups() if group is not None), "")
        return "$" if name == "$" else os.environ.get(name, "") if name else ""

    return _VARIABLE.sub(value, text)


def read_pattern_files(paths: Iterable[str], option: str = "exclude-file") -> list[str]:
    """The globs the --exclude-file options (or --iexclude-file ones, `option`) list, in order."""
    patterns = []
    for path in paths:
        text = _read(path, option).decode("utf-8", errors="surrogateescape")
        lines = (line.strip() for line in text.splitlines())
        patterns += [expand_variables(p) for p in lines if p and not p.startswith("#")]
    return patterns
