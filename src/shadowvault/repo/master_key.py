"""The master key, which key files wrap (crypto.py) and objects are sealed under (sealing.py).

Apart from both so that unlocking a key (keys.py, crypto.py) loads neither BLAKE3 nor zstd before
scrypt runs: cli/repo_options.py says why that order matters.
"""

from __future__ import annotations

import os
from typing import NamedTuple

NONCE_SIZE = 12  # AES-GCM's, for key files and sealed objects alike


class MasterKey(NamedTuple):
    """The repository's secrets: one key encrypts, the other keys the BLAKE3 blob ids."""

    encrypt: bytes
    id_key: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(32))
