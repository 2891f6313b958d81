"""restic's tag lists: what `--tag a,b` means when tags are given and when snapshots are filtered.

A tag option's value is a comma-separated list (`tag[,tag,...]`, spaces around each trimmed), as in
restic, whose scripts pass `--tag daily,web`:
- where tags are given (`backup --tag`, `tag --add/--remove/--set`), every list is flattened: `--tag
  a,b` and `--tag a --tag b` both give the tags `a` and `b`;
- where snapshots are filtered (`--tag` of `snapshots`, `forget`, `ls`, ..., and `forget
  --keep-tag`), one list asks for all its tags and repeated options for any of the lists: `--tag a,b`
  passes snapshots carrying both, `--tag a --tag b` those carrying either. An empty list (`--tag ''`)
  passes snapshots without tags.
A tag therefore never holds a comma.
"""

from __future__ import annotations

from collections.abc import Iterable

from shadowvault.display import escape_text
from shadowvault.errors import UsageError

MAX_LABEL = 255  # characters of a tag or a host name recorded in a snapshot


def tag_list(value: str) -> tuple[str, ...]:
    """One option's value as its tags (an empty value: no tags)."""
    return tuple(tag for tag in (part.strip() for part in value.split(",")) if tag)


def split_tags(values: Iterable[str]) -> tuple[str, ...]:
    """The tags several options give, each once, in the order given."""
    return tuple(dict.fromkeys(tag for value in values for tag in tag_list(value)))


def checked_label(value: str, what: str) -> str:
    """A tag or host name to record, refused (UsageError) when empty, longer than MAX_LABEL or holding
    a control character: it would break every listing's line and table it is shown in."""
    if not value or not value.isprintable():
        raise UsageError(f"'{escape_text(value)}' is not a {what} (empty, or control characters)")
    if len(value) > MAX_LABEL:
        raise UsageError(f"a {what} is at most {MAX_LABEL} characters, not {len(value)}")
    return value


def given_tags(values: Iterable[str]) -> tuple[str, ...]:
    """split_tags for tags to record (backup --tag, tag --add/--set): each one checked."""
    return tuple(checked_label(tag, "tag") for tag in split_tags(values))


def given_host(host: str | None) -> str | None:
    """A host name to record instead of this machine's (None: this machine's), checked."""
    return checked_label(host, "host name") if host is not None else None


def has_tag_lists(wanted: Iterable[str], tags: Iterable[str]) -> bool:
    """Whether a snapshot carrying `tags` passes the filter values `wanted` (none: every snapshot)."""
    lists = [tag_list(value) for value in wanted]
    if not lists:
        return True
    carried = set(tags)
    return any(set(one) <= carried if one else not carried for one in lists)
