"""`shadowvault completion SHELL`: print the shell's completion script (click's own completion).

The script calls `shadowvault` back with `_SHADOWVAULT_COMPLETE=<shell>_complete` to complete each word,
so commands, options and choices are always those of the installed version.
See docs/coming-from-restic-and-borg.md, "Shell completion".
"""

from __future__ import annotations

import sys

import click
from click.shell_completion import get_completion_class

PROG_NAME = "shadowvault"
COMPLETE_VAR = "_SHADOWVAULT_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish), to be installed as below.

    \b
    bash: eval "$(shadowvault completion bash)"    (in ~/.bashrc)
    zsh:  eval "$(shadowvault completion zsh)"     (in ~/.zshrc)
    fish: shadowvault completion fish > ~/.config/fish/completions/shadowvault.fish
    """
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # click ships all three SHELLS
    root = ctx.find_root().command
    sys.stdout.write(completion_class(root, {}, PROG_NAME, COMPLETE_VAR).source())


COMMANDS: list[click.Command] = [completion_cmd]
