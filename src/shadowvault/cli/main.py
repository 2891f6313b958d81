"""The `shadowvault` entry point: builds the command tree and turns every failure into one line.

SIGTERM and SIGHUP unwind like Ctrl-C (every cleanup runs, see shadowvault.interrupts) and exit with
143 and 129 (128 + the signal number); Ctrl-C exits with 130.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys

import click

from shadowvault import __version__, interrupts
from shadowvault.cli import global_options, output
from shadowvault.cli.launch import tune_interpreter
from shadowvault.cli.repo_options import root_repo_options
from shadowvault.errors import ShadowvaultError

# command -> the module of shadowvault.cli that defines it (in its COMMANDS list, or as `module:attr`).
# A command's module is imported when that command runs (or help lists them all): importing every
# command made each run start ~0.3 s later, a fifth of a no-change backup (tests/test_cli_basics.py
# checks this table against the modules).
COMMAND_MODULES = {
    "volumes": "volumes",
    "shadows": "shadows",
    "writers": "writers",
    "exec": "exec_cmd",
    "init": "repository",
    "snapshots": "snapshots_cmd",
    "key": "repository",
    "backup": "backup",
    "restore": "restore",
    "ls": "ls_diff",
    "diff": "ls_diff",
    "check": "maintenance",
    "forget": "forget_cmd",
    "prune": "maintenance",
    "repair": "maintenance",
    "jobs": "jobs_cmd",
    "mount": "mount_cmd",  # browsing the past (docs/mount.md)
    "versions": "versions_cmd",
    "vm": "vm_cmd",  # VMs through their hypervisor (docs/vms.md)
    "find": "inspect_cmds",  # docs/commands-inspect.md
    "dump": "inspect_cmds",
    "cat": "inspect_cmds",
    "stats": "inspect_cmds",
    "tag": "inspect_cmds",
    "rewrite": "rewrite_cmd",  # remove what was backed up by mistake (docs/commands-backup-forget.md)
    "daemon": "daemon:daemon",  # the service (docs/api.md)
    "completion": "completion_cmd:completion_cmd",  # docs/coming-from-restic-and-borg.md
    "copy": "copy_cmd:copy_cmd",
    "recover": "recover_cmd:recover_cmd",  # bare-metal recovery (docs/recover.md)
}


def load_command(name: str) -> click.Command | None:
    """The command `name`, its module imported now; None if there is no such command."""
    where = COMMAND_MODULES.get(name)
    if where is None:
        return None
    module_name, _, attr = where.partition(":")
    module = importlib.import_module(f"shadowvault.cli.{module_name}")
    if attr:
        command: click.Command = getattr(module, attr)
    else:
        command = next(c for c in module.COMMANDS if c.name == name)
    return global_options.attach(command)  # -v, -q, --no-daemon after the command too


_LINE_BREAK = re.compile(r"[ \t]*[\r\n]+[ \t]*")


def one_line(message: str) -> str:
    """A message laid out on lines as one line: only the breaks and the indentation around them
    are folded, so a value quoted in it keeps its spaces ("2  x" is not "2 x")."""
    return _LINE_BREAK.sub(" ", message).strip()


class _Root(click.Group):
    """A click group whose failures are one line on stderr: exit 1 for errors, 2 for usage; its
    commands are imported when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
        as_json = output.json_requested(argv)  # known before parsing: a usage error is JSON too
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.Abort:
            output.error_line("aborted", 130, as_json=as_json)
            sys.exit(130)
        except click.exceptions.NoArgsIsHelpError as err:  # a bare command group: its help, as restic
            click.echo(err.ctx.get_help() if err.ctx else err.format_message())
            sys.exit(0)
        except click.ClickException as err:  # click lays a choice list out on lines: one line here
            output.error_line(one_line(err.format_message()), err.exit_code, as_json=as_json)
            sys.exit(err.exit_code)
        except ShadowvaultError as err:
            output.error_line(str(err), err.exit_code, as_json=as_json)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            output.error_line("interrupted", 130, as_json=as_json)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)
        except Exception as err:
            logging.getLogger("shadowvault").debug("internal error", exc_info=True)
            output.error_line(f"internal error: {type(err).__name__}: {err}", 1, as_json=as_json)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: object
    ) -> click.Context:
        as_json = output.json_requested(args)  # before parsing consumes the arguments
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[output.JSON_REQUESTED] = as_json
        return ctx

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except interrupts.Terminated as stop:  # its cleanups ran on the way up; click would say "aborted"
            raise interrupts.StoppedBySignal(stop) from None
        except KeyboardInterrupt as stop:
            if not getattr(stop, "__notes__", None):
                raise  # click says "aborted"
            raise interrupts.StoppedBySignal(stop) from None  # with what the interrupted job left


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shadowvault")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress and no informational lines: only what the command shows, warnings and errors.",
)
@click.option(
    "--no-daemon",
    "no_daemon",
    is_flag=True,
    envvar="SHADOWVAULT_NO_DAEMON",
    help="Make shadow sets in this process even when `shadowvault daemon` answers on its socket.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (the command's --json).")
@root_repo_options
def cli(verbose: int, quiet: bool, no_daemon: bool, as_json: bool) -> None:
    """Shadow copies for Linux, and the backup agent built on them.

    -v, -q, --no-daemon and --json go before or after the command, and so do -r/--repo,
    --password-file and --password-command (restic's global flags).
    """
    meta = click.get_current_context().meta
    meta.update(
        {
            output.QUIET: quiet,
            global_options.NO_DAEMON: no_daemon,
            global_options.VERBOSITY: verbose,
            output.JSON_GLOBAL: as_json,
        }
    )
    handler = logging.StreamHandler(sys.stderr)
    if meta.get(output.JSON_REQUESTED):
        handler.setFormatter(output.JsonLogFormatter())  # under --json every line is JSON
    else:
        handler.setFormatter(output.HumanLogFormatter())
    logging.basicConfig(level=global_options.log_level(verbose), handlers=[handler])


def main() -> None:
    """Console-script entry point."""
    tune_interpreter()  # already done where cli/launch.py ran first
    interrupts.install_handlers()
    cli()


if __name__ == "__main__":
    main()
