"""Running an administrator's program as root: only files nobody but root could change, and the very
file that was checked.

A writers.d command runs as root at every backup, so whoever can replace it owns the machine.
Checking the file's owner and mode is not enough: a user who owns a directory on its path swaps
the checked file for another (rename, renameat2 RENAME_EXCHANGE) between the check and the exec.
So, as OpenSSH's safe_path and sudo do:

- every directory from / down to the file is owned by root and not writable by group or others.
  A root-owned sticky directory (/tmp) is the one exception: in it only an entry's owner may
  rename or remove the entry, so the root-owned entry below it cannot be swapped;
- the path is walked from / one component at a time, each opened relative to the one before
  with O_NOFOLLOW and checked through the open descriptor (fstat), so what is checked is what
  is walked, whatever happens to the names meanwhile. Symbolic links are followed by hand, and
  only when they are root's and lie in a checked directory;
- the program is opened O_PATH, checked through that descriptor (a regular file, root's, not
  writable by group or others, executable) and executed through it (/proc/self/fd/N, kept open
  in the child): renaming something else over the path after the check changes nothing.

A #! script run this way sees $0 = /proc/self/fd/N (the kernel hands the interpreter that path).

Standard library (and errors, proc) only: the watchdog process uses it too.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Sequence
from typing import Any

from shadowvault.errors import ConfigError
from shadowvault.proc import DEFAULT_PATH

MAX_SYMLINKS = 40
_OPEN_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _refuse(path: str, why: str) -> ConfigError:
    return ConfigError(f"{path}: refused: {why}")


def _check_directory(st: os.stat_result, path: str, what: str) -> None:
    if st.st_uid != 0:
        raise _refuse(
            path, f"a directory on the path of {what} must be owned by root (it is owned by uid {st.st_uid})"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise _refuse(
            path,
            f"a directory on the path of {what} must not be writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
        )


def _check_file(st: os.stat_result, path: str, what: str, *, executable: bool) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, f"{what} is not a regular file")
    if st.st_uid != 0:
        raise _refuse(path, f"{what} must be owned by root (it is owned by uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refuse(
            path, f"{what} must not be writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        )
    if executable and not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise _refuse(path, f"{what} is not executable (mode {stat.S_IMODE(st.st_mode):04o})")


def _above_stdio(fd: int) -> int:
    """A descriptor >= 3: a child's stdin/stdout/stderr replace 0-2, and /proc/self/fd/N must survive."""
    if fd >= 3:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _open_root() -> int:
    return os.open("/", _OPEN_FLAGS | os.O_DIRECTORY)


def _walk(path: str, what: str) -> tuple[int, str, os.stat_result]:
    """Open `path` from / without trusting any name: (O_PATH descriptor, real path, its stat).

    Every directory passed through is checked; the last component is returned for the caller to check.
    """
    if not path.startswith("/"):
        raise ConfigError(f"{path!r}: {what} is a relative path; give an absolute path")
    dir_fd, current = _open_root(), "/"
    links = 0
    try:
        _check_directory(os.fstat(dir_fd), current, what)
        pending = _parts(path)
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":  # `current` is a real path: walk to its parent again, from /
                pending = _parts(os.path.dirname(current)) + pending
                os.close(dir_fd)
                dir_fd, current = _open_root(), "/"
                continue
            here = os.path.join(current, name)
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                raise ConfigError(f"{here}: {what} does not exist") from None
            except PermissionError:
                raise ConfigError(f"{here}: cannot check {what}: permission denied") from None
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise _refuse(path, f"too many symbolic links on the path of {what}")
                if st.st_uid != 0:  # in a sticky directory anyone may have planted it
                    raise _refuse(here, f"a symbolic link on the path of {what} must be owned by root")
                target = os.readlink(name, dir_fd=dir_fd)
                pending = _parts(target) + pending
                if target.startswith("/"):
                    os.close(dir_fd)
                    dir_fd, current = _open_root(), "/"
                continue
            if not pending:
                return _above_stdio(fd), here, st
            try:
                if not stat.S_ISDIR(st.st_mode):
                    raise ConfigError(f"{here}: not a directory (on the path of {what})")
                _check_directory(st, here, what)
            except ConfigError:
                os.close(fd)
                raise
            os.close(dir_fd)
            dir_fd, current = fd, here
        fd, dir_fd = dir_fd, -1  # the path ends on a directory already walked ("/", "x/.", a link)
        return _above_stdio(fd), current, os.fstat(fd)
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)


def open_in(dir_fd: int, name: str, path: str, what: str, *, executable: bool = True) -> int:
    """Open `name` in the (checked) directory `dir_fd` without following a link, and check it: its fd."""
    fd = _above_stdio(os.open(name, _OPEN_FLAGS, dir_fd=dir_fd))
    try:
        _check_file(os.fstat(fd), path, what, executable=executable)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_checked(path: str, what: str, *, executable: bool = False) -> tuple[int, str]:
    """Open a file only root could have changed (see the module's rules): (O_PATH fd, real path)."""
    fd, real, st = _walk(path, what)
    try:
        _check_file(st, real, what, executable=executable)
    except BaseException:
        os.close(fd)
        raise
    return fd, real


def check_directory(path: str, what: str) -> str:
    """Refuse a directory that anyone but root could change, or whose path could be; its real path."""
    fd, real, st = _walk(path, what)
    try:
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{real}: {what} is not a directory")
        _check_directory(st, real, what)
    finally:
        os.close(fd)
    return real


def read_checked(path: str, what: str) -> bytes:
    """The content of a file only root could have changed, read through the descriptor that was checked."""
    fd, _ = open_checked(path, what)
    try:
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def find_program(name: str, search_path: str | None = None) -> str | None:
    """The absolute path a command name stands for: itself when it has a '/', else found on the PATH.

    Only absolute PATH entries are searched (a relative one would depend on the working directory).
    """
    if "/" in name:
        return name
    for directory in (search_path or DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory, name)
        if directory.startswith("/") and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class TrustedProgram:
    """An executable, opened and checked: run it with `popen_kwargs()` so the checked file is what runs."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path  # the real path that was checked

    @property
    def exec_path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def popen_kwargs(self) -> dict[str, Any]:
        """For subprocess.Popen/run: exec the descriptor (argv[0] stays as given), kept open in the child."""
        return {"executable": self.exec_path, "pass_fds": (self.fd,)}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TrustedProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_program(program: str, what: str, *, search_path: str | None = None) -> TrustedProgram:
    """Find, open and check the program a command runs (see the module's rules)."""
    if "/" in program and not program.startswith("/"):
        raise ConfigError(f"{program!r}: {what} is a relative path; give an absolute path")
    found = find_program(program, search_path)
    if found is None:
        raise ConfigError(f"{program!r}: {what} not found")
    fd, real = open_checked(found, what, executable=True)
    return TrustedProgram(fd, real)


def check_arguments(args: Sequence[str], what: str) -> None:
    """Refuse a command whose arguments name a file (a script an interpreter runs) that is unsafe.

    An argument that is an absolute path to an existing file is checked like a program (but need not
    be executable); a relative path to a file (the command runs in /) is refused.
    """
    for arg in args:
        if arg.startswith("/"):
            if os.path.isfile(arg):
                fd, _ = open_checked(arg, f"a file {what} runs")
                os.close(fd)
        elif "/" in arg and os.path.isfile(os.path.join("/", arg)):
            raise ConfigError(f"{arg!r}: a file {what} runs is a relative path; give an absolute path")
