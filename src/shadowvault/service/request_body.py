"""Request bodies: JSON decoded into the typed request it must be, or one line saying what is wrong.

Every POST handler of the daemon decodes its body here, so a malformed, mistyped or unknown field is
the same 400 with the same kind of message whichever call it was. So is a string with a NUL in it
(no path or name can hold one), JSON nested deeper than the decoder goes, and a relative path: the
daemon's working directory is not the caller's, so a relative path would name another place than
the one the caller meant (`absolute`, which the request types call as they are decoded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec

from shadowvault.errors import UsageError
from shadowvault.typed_decoding import decode_json

Body = TypeVar("Body")


def parse(
    body: bytes, kind: type[Body], empty_ok: bool = False, dec_hook: Callable[[type, Any], Any] | None = None
) -> Body:
    """The request body as `kind`, or UsageError in one line (malformed JSON, a wrong or unknown field)."""
    if not body.strip():
        if empty_ok:
            body = b"{}"
        else:
            raise UsageError("the request body must be a JSON object")
    try:
        nul = _first_nul(decode_json(body, object))  # the document untyped: its nesting, every string
        decoded = decode_json(body, kind, dec_hook)
        if nul is not None:  # after the typed decode: a field's own check names it better
            raise msgspec.ValidationError(nul)
    except msgspec.ValidationError as err:
        raise UsageError(f"invalid request: {err}") from None
    except msgspec.DecodeError as err:
        raise UsageError(f"malformed JSON: {err}") from None
    except RecursionError:
        raise UsageError("invalid request: the JSON is nested too deeply") from None
    return decoded


MAX_NESTING = 64  # levels of a request body: far above any request's, far below the interpreter's limit


def _first_nul(document: Any) -> str | None:
    """What the first string (value or key) with a NUL character in it is, and where; None when no
    string has one. RecursionError for a document nested deeper than MAX_NESTING: its decoding no
    longer stops it (a command may recurse 20,000 frames deep, cli/launch.py), and what is built
    from it later may recurse."""
    found: str | None = None
    pending: list[tuple[str, Any, int]] = [("$", document, 0)]
    while pending:  # a loop, not recursion: the nesting is the client's to choose
        where, value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise RecursionError(f"nested deeper than {MAX_NESTING}")
        if isinstance(value, str) and "\0" in value and found is None:
            found = f"a string holds a NUL character - at `{where}`"
        if isinstance(value, dict):
            for key, item in value.items():
                if "\0" in key and found is None:
                    found = f"a key holds a NUL character - at `{where}`"
                pending.append((f"{where}.{key}", item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value))
    return found


def absolute(paths: Iterable[str], field: str) -> None:
    """A ValueError (a 400 naming `field`, raised from a request's __post_init__) unless every path is
    absolute and free of NUL characters."""
    for path in paths:
        if "\0" in path:
            raise ValueError(f"{field}: {path!r} holds a NUL character")
        if not path.startswith("/"):
            raise ValueError(f"{field}: {path!r} is not an absolute path")


def query_path(value: str | None, field: str) -> str | None:
    """A path given in the URL's query (`?at=DIR`): absolute, or UsageError."""
    if value is not None:
        try:
            absolute([value], field)
        except ValueError as err:
            raise UsageError(str(err)) from None
    return value
