"""Include/exclude globs, matched against absolute paths as stored in a snapshot.

The rules are the ones users know from restic and gitignore:
- `*` and `?` never cross a `/`; `**` matches any number of directories (including none);
  `[...]` is a character class.
- A pattern that starts with `/` is anchored at the root of the snapshot (`/home/*/.cache`).
- A pattern without `/` matches the last path component anywhere (`*.tmp`, `node_modules`).
- A pattern with a `/` but no leading `/` matches at any depth (`.cache/thumbnails`).
A pattern that matches a directory covers everything below it. A pattern is cleaned first, as Go's
filepath.Clean does for restic (`/srv//www/./x/` is `/srv/www/x`).
- A pattern starting with `!` (restic 0.14's negation) takes back what the patterns before it in its
  list matched: with `/home/*` and `!/home/ann`, `/home/ann` and everything below it are kept. An
  excluded directory is not walked into, so `!` takes back from `dir/*`, not from `dir` itself.

restic's --iexclude and --iinclude (and their -file forms) are the same globs matched ignoring case
(`ignore_case`: restic lowers both the pattern and the path).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from shadowvault.errors import UsageError
from shadowvault.paths_within import is_within


def glob_regex(pattern: str) -> str:
    """Turn one glob into the body of a regular expression (no anchors)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")  # `**/` : zero or more whole directories
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def compile_glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """The regex for `pattern`; it matches a path equal to, or a parent of, something covered."""
    if not pattern or pattern.strip() == "":
        raise UsageError("empty pattern")
    body = posixpath.normpath(pattern)
    body = "/" + body.lstrip("/") if body.startswith("/") else body  # normpath keeps a leading "//"
    if body.startswith("/"):
        regex = "^" + glob_regex(body)
    elif "/" not in body:
        regex = "(?:^|/)" + glob_regex(body)
    else:
        regex = "(?:^|/)" + glob_regex(body)
    try:
        return re.compile(regex + "(?:/.*)?$", re.DOTALL | (re.IGNORECASE if ignore_case else 0))
    except re.error as err:
        raise UsageError(f"invalid pattern {pattern!r}: {err.msg}") from err  # err.pos: in our regex


Rule = tuple[re.Pattern[str], bool]  # a compiled pattern, and whether it was negated with "!"


def compile_rules(patterns: Iterable[str], ignore_case: bool = False) -> list[Rule]:
    """Each pattern compiled, in order, with its `!` (restic's negation) taken off and noted."""
    return [(compile_glob(p.removeprefix("!"), ignore_case), p.startswith("!")) for p in patterns]


def matches_rules(rules: Sequence[Rule], text: str) -> bool:
    """restic's filter.List: a pattern that matches marks the path, a later negated one that matches
    unmarks it."""
    matched = False
    for regex, negated in rules:
        if negated:
            matched = matched and not regex.search(text)
        elif not matched:
            matched = bool(regex.search(text))
    return matched


def path_text(path: bytes | str) -> str:
    """A path as text for matching; undecodable bytes survive as surrogates."""
    if isinstance(path, bytes):
        return path.decode("utf-8", errors="surrogateescape")
    return path


class PathFilter:
    """Decides which paths a backup or restore takes, from include and exclude globs.

    With no includes everything is included; excludes always win.
    """

    def __init__(
        self,
        includes: Iterable[str] = (),
        excludes: Iterable[str] = (),
        *,
        iincludes: Iterable[str] = (),
        iexcludes: Iterable[str] = (),
    ):
        includes, iincludes = list(includes), list(iincludes)
        # each list on its own, as restic's are: a `!` takes back only from its own list
        self._include_lists = [compile_rules(includes), compile_rules(iincludes, True)]
        self._exclude_lists = [compile_rules(excludes), compile_rules(iexcludes, True)]
        self.includes = [rx for rules in self._include_lists for rx, negated in rules if not negated]
        self.excludes = [rx for rules in self._exclude_lists for rx, _ in rules]
        # a case-blind include names no literal directories to prune the walk with
        self._include_prefixes = [self._anchor_prefix(p) for p in includes if not p.startswith("!")]
        self._include_prefixes += [None for p in iincludes if not p.startswith("!")]

    @staticmethod
    def _anchor_prefix(pattern: str) -> str | None:
        """For an anchored include, the literal leading directories (to prune the walk); else None."""
        if not pattern.startswith("/"):
            return None
        literal = []
        for part in pattern.strip("/").split("/"):
            if any(ch in part for ch in "*?["):
                break
            literal.append(part)
        return "/" + "/".join(literal)

    def excluded(self, path: bytes | str) -> bool:
        if not self.excludes:
            return False
        text = path_text(path)
        return any(matches_rules(rules, text) for rules in self._exclude_lists)

    def included(self, path: bytes | str) -> bool:
        """True when `path` itself is selected (it or a parent matches an include, none excludes it)."""
        text = path_text(path)
        if self.excluded(text):
            return False
        return not self.includes or any(matches_rules(rules, text) for rules in self._include_lists)

    def may_contain(self, directory: bytes | str) -> bool:
        """True when something below `directory` could be selected (walk into it)."""
        text = path_text(directory)
        if self.excluded(text):
            return False
        if not self.includes:
            return True
        for rx, prefix in zip(self.includes, self._include_prefixes, strict=True):
            if rx.search(text) or prefix is None:
                return True
            here = text.rstrip("/") or "/"
            if is_within(prefix, here) or is_within(here, prefix):
                return True
        return False
