"""A stored file's name: the unkeyed BLAKE3 of its bytes (checkable with b3sum, no password).

Apart from format.py so that checking a key file's name (keys.py) loads no zstd or msgspec documents.
"""

from __future__ import annotations

import blake3


def file_id(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()
