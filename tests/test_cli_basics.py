"""The CLI contract every command shares: usage errors are one line with exit 2."""

import importlib
import os
import pkgutil
import subprocess
import sys

import shadowvault.cli
from shadowvault.cli.main import COMMAND_MODULES, load_command


def test_unknown_command_is_one_line_exit_2(cli):
    done = cli("no-such-command")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("shadowvault: error:")
    assert "Traceback" not in done.stderr


def test_a_bare_command_group_prints_its_help(cli):
    """`shadowvault`, `shadowvault repair`: the help, as restic prints it, not an error line."""
    for argv in ((), ("repair",), ("key",), ("shadows",)):
        done = cli(*argv)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("Usage: ") and "Commands:" in done.stdout
        assert "\\n" not in done.stdout and done.stderr == ""


def test_version(cli):
    done = cli("--version")
    assert done.returncode == 0
    assert "shadowvault" in done.stdout


def test_every_command_is_found_where_the_table_says_and_none_is_missing():
    """Commands are imported when used (cli/main.py, COMMAND_MODULES): the table must name every
    command the modules define, each in its own module."""
    defined: dict[str, str] = {}
    for info in pkgutil.iter_modules(shadowvault.cli.__path__):
        module = importlib.import_module(f"shadowvault.cli.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            defined[command.name] = info.name
    for name, module_name in defined.items():
        assert COMMAND_MODULES.get(name, "").partition(":")[0] == module_name, name
    for name in COMMAND_MODULES:
        command = load_command(name)
        assert command is not None and command.name == name


def test_a_command_imports_only_what_it_needs():
    """`snapshots` does not import the backup, VM or mount commands (start-up time)."""
    probe = (
        "import sys; from shadowvault.cli.main import load_command; load_command('snapshots');"
        "print(' '.join(m for m in sys.modules if m.startswith('shadowvault.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert "shadowvault.cli.repository" in loaded
    assert not loaded & {"shadowvault.cli.vm_cmd", "shadowvault.cli.mount_cmd", "shadowvault.cli.backup"}


def scrypt_probe(entry: str, heavy: tuple[str, ...]) -> str:
    """Python source that runs `shadowvault ARGS` through `entry`'s main and prints, as it ends, the
    modules named `heavy...` that were loaded each time scrypt ran."""
    return f"""
import sys
from shadowvault.repo import kdf
real_scrypt = kdf.scrypt
loaded_at_unlock = []
def scrypt(*args):
    loaded_at_unlock.append(sorted(m for m in sys.modules if m.startswith({heavy!r})))
    return real_scrypt(*args)
kdf.scrypt = scrypt
sys.argv = ["shadowvault", *sys.argv[1:]]
from {entry} import main
try:
    main()
finally:
    print("LOADED AT UNLOCK", loaded_at_unlock, file=sys.stderr)
"""


UNLOCK_PROBE = scrypt_probe(
    "shadowvault.cli.main",
    (
        "shadowvault.jobs",
        "shadowvault.archive.backup",
        "shadowvault.archive.diff",
        "shadowvault.repo.repository",
        "shadowvault.repo.format",
        "shadowvault.repo.chunker",
        "shadowvault.shadow.providers.registry",
        "zstandard",
    ),
)
LAUNCH_PROBE = scrypt_probe("shadowvault.cli.launch", ("click", "msgspec", "cryptography"))


def test_a_backup_unlocks_the_key_before_it_loads_what_runs_the_backup(tmp_path, cli):
    """scrypt's 32 MiB come on top of the interpreter and the options alone (cli/repo_options.py):
    the jobs, the providers, the repository's own modules and zstd load after the key is unlocked.
    They set the peak memory of a no-change backup (61 -> 55 MiB; restic's: 77-83)."""
    env = {"SHADOWVAULT_REPOSITORY": str(tmp_path / "repo"), "SHADOWVAULT_PASSWORD": "pw"}
    assert cli("init", env=env).returncode == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_text("kept")
    done = subprocess.run(
        [sys.executable, "-c", UNLOCK_PROBE, "backup", "--provider", "none", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED AT UNLOCK [[]]" in done.stderr, done.stderr
    listed = cli("ls", "latest", str(tmp_path / "data"), env=env)
    assert listed.returncode == 0 and "file" in listed.stdout, listed.stderr


def test_the_console_script_runs_scrypt_before_it_loads_the_command_line(tmp_path, cli):
    """Where the environment names the repository and password, cli/launch.py runs scrypt before
    click and the options load: its 32 MiB come on top of the bare interpreter (a no-change backup
    of 100k files peaks at 46 MiB, not 55; restic's: 76-82), and the command uses its result."""
    env = {"SHADOWVAULT_REPOSITORY": str(tmp_path / "repo"), "SHADOWVAULT_PASSWORD": "pw"}
    assert cli("init", env=env).returncode == 0
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH_PROBE, "snapshots"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED AT UNLOCK [[]]" in done.stderr, done.stderr  # once, with none of them loaded


def test_usage_lines_show_an_optional_id_in_brackets(cli):
    """`shadows delete --oldest` works, so its usage must not read as if ID were required."""
    for argv, usage in (
        (("shadows", "delete"), "shadows delete [OPTIONS] [ID]"),
        (("shadows", "unexpose"), "shadows unexpose [OPTIONS] [ID]"),
        (("shadows", "expose"), "shadows expose [OPTIONS] ID"),
    ):
        done = cli(*argv, "--help")
        assert done.returncode == 0, done.stderr
        assert usage in done.stdout.splitlines()[0], done.stdout
