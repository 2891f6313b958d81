"""A repository password kept in a file: its first line, without the line break (restic's convention)."""

from __future__ import annotations

from shadowvault.errors import ShadowvaultError

MAX_LINE = 64 << 10  # characters: a first line longer than this is not a password (/dev/zero, a log)


def read_password_file(path: str, error: type[ShadowvaultError] = ShadowvaultError) -> str:
    """The password in `path`; `error` (with the file named) when it cannot be read, is empty, or
    its first line runs on past MAX_LINE (read whole, /dev/zero filled the memory)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline(MAX_LINE + 1)
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise error(f"cannot read password file {path}: {why}") from err
    password = line.rstrip("\r\n")
    if len(password) > MAX_LINE:
        raise error(f"password file {path}: its first line is longer than {MAX_LINE // 1024} KiB")
    if not password:
        raise error(f"password file {path} is empty")
    return password
