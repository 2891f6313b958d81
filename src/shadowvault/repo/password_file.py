"""A repository password kept in a file: its first line, without the line break (restic's convention)."""

from __future__ import annotations

from shadowvault.errors import ShadowvaultError

MAX_LINE = 64 << 10  # bytes: a first line longer than this is not a password (/dev/zero, a log)


def password_text(raw: bytes) -> str:
    """A password's bytes as text, every byte kept: invalid UTF-8 as surrogates, as the environment's
    are (Python decodes it so), turned back into the same bytes by `password_bytes`. Decoding with
    replacement made different passwords one."""
    return raw.decode("utf-8", "surrogateescape")


def password_bytes(password: str | bytes) -> bytes:
    """What the key derivation is given: the bytes the password was read as."""
    return password.encode("utf-8", "surrogateescape") if isinstance(password, str) else password


def first_line(raw: bytes) -> bytes:
    """The first line of `raw` without its break (`\n` or `\r\n`): only a line feed ends it, so
    the other bytes Python counts as line breaks (\x0b, \x1c, ...) stay part of the password."""
    return raw.split(b"\n", 1)[0].removesuffix(b"\r")


def read_password_file(path: str, error: type[ShadowvaultError] = ShadowvaultError) -> str:
    """The password in `path`; `error` (with the file named) when it cannot be read, is empty, or
    its first line runs on past MAX_LINE (read whole, /dev/zero filled the memory)."""
    try:
        with open(path, "rb") as f:
            line = f.readline(MAX_LINE + 1)
    except OSError as err:
        raise error(f"cannot read password file {path}: {err.strerror or err}") from err
    raw = first_line(line)
    password = password_text(raw)
    if len(raw) > MAX_LINE:  # bytes, as read: a decoded length could pass a line cut short
        raise error(f"password file {path}: its first line is longer than {MAX_LINE // 1024} KiB")
    if not password:
        raise error(f"password file {path} is empty")
    return password
