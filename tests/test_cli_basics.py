"""The CLI contract every command shares: usage errors are one line with exit 2."""

import importlib
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
