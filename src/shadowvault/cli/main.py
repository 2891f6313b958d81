"""The `shadowvault` entry point: builds the command tree and turns every failure into one line.

SIGTERM and SIGHUP unwind like Ctrl-C (every cleanup runs, see shadowvault.interrupts) and exit with
143 and 129 (128 + the signal number); Ctrl-C exits with 130.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from shadowvault import __version__, interrupts
from shadowvault.cli import output
from shadowvault.errors import ShadowvaultError


class _Root(click.Group):
    """A click group whose failures are one line on stderr: exit 1 for errors, 2 for usage."""

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
        except click.ClickException as err:
            output.error_line(err.format_message(), err.exit_code, as_json=as_json)
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
def cli(verbose: int, quiet: bool, no_daemon: bool) -> None:
    """Shadow copies for Linux, and the backup agent built on them."""
    click.get_current_context().meta[output.QUIET] = quiet
    level = logging.WARNING - 10 * min(verbose, 2)
    if os.environ.get("SHADOWVAULT_DEBUG"):
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if click.get_current_context().meta.get(output.JSON_REQUESTED):
        handler.setFormatter(output.JsonLogFormatter())  # under --json every line is JSON
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _register() -> None:
    from shadowvault.cli import (
        backup,
        exec_cmd,
        jobs_cmd,
        maintenance,
        mount_cmd,
        repository,
        restore,
        shadows,
        versions_cmd,
        vm_cmd,
        volumes,
        writers,
    )

    for module in (volumes, shadows, writers, exec_cmd, repository, backup, restore, maintenance, jobs_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)
    for command in [*mount_cmd.COMMANDS, *versions_cmd.COMMANDS]:  # browsing the past (docs/mount.md)
        cli.add_command(command)
    for command in vm_cmd.COMMANDS:  # VMs through their hypervisor (docs/vms.md)
        cli.add_command(command)
    from shadowvault.cli import inspect_cmds  # find, dump, cat, stats, tag (docs/commands-inspect.md)

    for command in inspect_cmds.COMMANDS:
        cli.add_command(command)
    from shadowvault.cli.daemon import daemon  # the service (docs/api.md)

    cli.add_command(daemon)
    from shadowvault.cli.completion_cmd import completion_cmd  # docs/coming-from-restic-and-borg.md

    cli.add_command(completion_cmd)
    from shadowvault.cli.copy_cmd import copy_cmd  # docs/coming-from-restic-and-borg.md

    cli.add_command(copy_cmd)
    from shadowvault.cli.recover_cmd import recover_cmd  # bare-metal recovery (docs/recover.md)

    cli.add_command(recover_cmd)


_register()


def main() -> None:
    """Console-script entry point."""
    interrupts.install_handlers()
    cli()


if __name__ == "__main__":
    main()
