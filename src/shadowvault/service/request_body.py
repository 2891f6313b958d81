"""Request bodies: JSON decoded into the typed request it must be, or one line saying what is wrong.

Every POST handler of the daemon decodes its body here, so a malformed, mistyped or unknown field is
the same 400 with the same kind of message whichever call it was.
"""

from __future__ import annotations

from collections.abc import Callable
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
        return decode_json(body, kind, dec_hook)
    except msgspec.ValidationError as err:
        raise UsageError(f"invalid request: {err}") from None
    except msgspec.DecodeError as err:
        raise UsageError(f"malformed JSON: {err}") from None
