"""A repository password kept in a file: its first line, without the line break (restic's convention)."""

from __future__ import annotations

from shadowvault.errors import ShadowvaultError


def read_password_file(path: str, error: type[ShadowvaultError] = ShadowvaultError) -> str:
    """The password in `path`; `error` (with the file named) when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise error(f"cannot read password file {path}: {why}") from err
    if not password:
        raise error(f"password file {path} is empty")
    return password
