"""The console script: derive the repository's key ahead where the environment names it, then run
the command tree (cli/main.py).

scrypt takes 32 MiB for a moment. Run once click and a command's options are loaded, it comes on top
of ~24 MiB; run here, on top of the bare interpreter (~13 MiB): this set the peak memory of a
no-change backup (55 -> 47 MiB for the 2 GiB bench; restic's 76-82). Only the plain invocation is
taken, a repository command with the repository and password in the environment (as cron jobs and
systemd units run it) and neither on the command line; its first key file's scrypt is run with that
password and kept (repo/kdf.py). Opening the repository later goes through every usual step
(cli/repo_options.py) and takes the result only for exactly the same password, salt and
parameters, so a wrong guess here costs one scrypt and changes nothing; any failure here is left
for that later step to report.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping, Sequence

from shadowvault.cli.repo_env import PASSWORD_COMMAND_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV, REPO_ENV
from shadowvault.errors import ShadowvaultError
from shadowvault.fsutil import open_regular
from shadowvault.repo import kdf
from shadowvault.repo.password_file import password_bytes, read_password_file

# Python's cyclic collector runs a young-generation pass every 700 net allocations by default, and
# every tenth pass an older one over what survived: a backup or restore keeps a directory's nodes
# (hundreds of thousands of objects) alive while it works, and those passes went over them again
# and again. Decoding the 2 GiB bench's 1,015 trees (100k nodes) while keeping them took 0.9 s at
# 700 and 0.17 s at 50,000; our objects rarely form cycles, so little waits longer to be freed.
# Set before the command's imports too: their ~400 modules made 58 young passes (50 ms of a start).
COLLECTOR_THRESHOLDS = (50_000, 10, 10)

# The walk of a backup and a restore's directories recurse a few frames per level: Python's default
# limit of 1,000 frames stopped a backup of a tree ~500 directories deep (any user who may write into
# it could stop every backup of it). A path reaches PATH_MAX (4096 bytes) at ~2,000 levels; 3.11
# calls Python functions without growing the C stack.
RECURSION_LIMIT = 20_000


def tune_interpreter() -> None:
    """The collector's thresholds and the recursion limit a command runs with."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))


# Commands that open an existing repository with its password (cli/main.py's COMMAND_MODULES).
OPENING_COMMANDS = frozenset(
    {"backup", "restore", "ls", "diff", "snapshots", "copy", "mount", "versions", "key"}
    | {"check", "forget", "prune", "repair", "find", "dump", "cat", "stats", "tag", "rewrite"}
)
GLOBAL_FLAGS = frozenset({"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet", "--no-daemon", "--json"})
# Options that name the repository or its password, or make the command open nothing.
_ON_COMMAND_LINE = ("-r", "--repo", "--password", "-h", "--help", "--version")


def opening_command(argv: Sequence[str]) -> str | None:
    """The command of `argv` when it opens a repository and nothing on its command line names the
    repository or a password (None otherwise, or when in doubt)."""
    if any(arg.startswith(_ON_COMMAND_LINE) for arg in argv):
        return None
    for arg in argv:
        if arg not in GLOBAL_FLAGS:
            return arg if arg in OPENING_COMMANDS else None
    return None


def environment_password(environ: Mapping[str, str]) -> str | None:
    """The password the environment gives (cli/repo_options.py's order); None if it comes from a
    command, which must run once and only where the command line is parsed."""
    if environ.get(PASSWORD_COMMAND_ENV):
        return None
    if environ.get(PASSWORD_FILE_ENV):
        return read_password_file(environ[PASSWORD_FILE_ENV])
    return environ.get(PASSWORD_ENV) or None


def first_key_file(repository: str) -> bytes | None:
    """The key file a local repository's unlocking tries first (LocalBackend.list's order)."""
    if ":" in repository:  # a URL (s3:, file://) is left to the backends
        return None
    keys = os.path.join(repository, "keys")
    for name in os.listdir(keys):
        if not name.startswith(".") and not name.endswith(".tmp"):
            with os.fdopen(open_regular(os.path.join(keys, name)), "rb") as key_file:
                return key_file.read(1 << 16)  # a key file is ~0.5 KiB; anything longer is not one
    return None


def derive_ahead(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Run the scrypt of a plain invocation now (module docstring); True when it ran."""
    repository = environ.get(REPO_ENV)
    if not repository or opening_command(argv) is None:
        return False
    try:
        password = environment_password(environ)
        raw = first_key_file(repository) if password else None
        if password is None or raw is None:
            return False
        salt, params, _sealed = kdf.key_file_kdf(raw)
        kdf.derive_ahead(password_bytes(password), salt, params)
    except (OSError, ValueError, KeyError, TypeError, ShadowvaultError):
        return False  # opening the repository reports it, with the context the user needs
    return True


def main() -> None:
    """Console-script entry point."""
    tune_interpreter()
    argv = sys.argv[1:]
    try:
        derive_ahead(argv, os.environ)
    except KeyboardInterrupt:
        from shadowvault.cli import output

        output.error_line("interrupted", 130, as_json=output.json_requested(argv))
        sys.exit(130)
    from shadowvault.cli.main import main as run_command_line

    run_command_line()


if __name__ == "__main__":
    main()
