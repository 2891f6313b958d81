"""Tables (issue 16, "Honest output" 6): plain text into a pipe, and fitting the terminal's width on a
terminal, with ids, times and words never cut."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

BOX_DRAWING = re.compile("[\u2500-\u257f]")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def two_snapshots(cli, env, tmp_path) -> list[str]:
    src = tmp_path / "a-directory-with-a-rather-long-name-to-show-in-a-table" / "and-a-source-below-it"
    src.mkdir(parents=True)
    (src / "file").write_text("x")
    for tag in ("first-tag", "second-tag"):
        done = cli("backup", "--provider", "none", "--tag", tag, str(src), env=env)
        assert done.returncode == 0, done.stderr
    done = cli("snapshots", "--json", env=env)

    return [s["id"] for s in json.loads(done.stdout)]


def on_terminal(argv: list[str], env: dict[str, str], columns: int) -> str:
    """Run the CLI with stdout on a terminal `columns` wide; everything it wrote there."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {k: v for k, v in {**os.environ, **env}.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", *argv],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
        env={**environment, "TERM": "xterm"},
    )
    os.close(child)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        assert ready, out
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the last writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return ANSI.sub("", out.decode()).replace("\r\n", "\n")


def test_tables_are_plain_text_into_a_pipe(cli, env, two_snapshots):
    done = cli("snapshots", env=env)
    assert done.returncode == 0, done.stderr
    assert not BOX_DRAWING.search(done.stdout), done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "Time", "Host", "Paths", "Tags", "Size", "Consistency"]
    for sid, tag in zip(two_snapshots, ("first-tag", "second-tag"), strict=True):
        (row,) = [line for line in lines if line.startswith(sid[:8])]
        assert tag in row.split() and "and-a-source-below-it" in row  # one row, whole values


def test_tables_fit_the_terminal_and_cut_no_word(env, two_snapshots):
    shown = on_terminal(["snapshots"], env, columns=80)
    lines = shown.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), shown
    for sid in two_snapshots:
        assert sid[:8] in shown
    words = set(re.findall(r"[\w=.:-]+", shown))
    assert {"first-tag", "second-tag", "files=none"} <= words, shown
    wide = on_terminal(["snapshots"], env, columns=250)
    assert "and-a-source-below-it" in wide and all(len(line) <= 250 for line in wide.splitlines())


def test_a_crowded_table_keeps_sizes_and_grades_whole_and_breaks_a_long_tag_at_its_hyphen(cli, env, tmp_path):
    """At 80 columns, with a tag too long for its column: sizes and `component=grade` stay whole,
    and the tag is broken after a hyphen, never mid-word."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "file").write_bytes(os.urandom(900_000))
    tag = "verylongtagname-for-testing"
    done = cli("backup", "--provider", "none", "--tag", tag, str(src), env=env)
    assert done.returncode == 0, done.stderr
    shown = on_terminal(["snapshots"], env, columns=80)
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    assert re.search(r"\b\d+(\.\d)? KiB\b", shown), shown  # number and unit on one line
    assert "files=none" in shown
    pieces = set(re.findall(r"[\w-]+", shown))
    assert {"verylongtagname-", "for-testing"} <= pieces or tag in pieces, shown


def test_a_long_host_name_and_several_tags_break_where_a_person_would(cli, env, tmp_path):
    """At 80 columns a host name breaks at its dots and hyphens and tags after their commas, never
    mid-word: the columns share the width, none is squeezed for another's sake."""
    src = tmp_path / "src"
    src.mkdir()
    host = "a-really-long-hostname.example.internal"
    tags = ("--tag", "production-webserver", "--tag", "nightly-full")
    done = cli("backup", "--provider", "none", "--host", host, *tags, str(src), env=env)
    assert done.returncode == 0, done.stderr
    shown = on_terminal(["snapshots"], env, columns=80)
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    pieces = set(re.findall(r"[\w.,-]+", shown))
    assert {"hostname.", "internal", "nightly-full"} <= pieces, shown  # broken only where a person would
    assert not {"hostnam", "interna", "nightly"} & pieces, shown


def test_snapshots_takes_restics_latest_and_snapshot_ids_and_lists_nothing_without_a_header(
    cli, env, two_snapshots
):
    def listed(*args: str) -> list[str]:
        done = cli("snapshots", "--json", *args, env=env)
        assert done.returncode == 0, done.stderr
        return [s["id"] for s in json.loads(done.stdout)]

    assert listed("--latest", "1") == two_snapshots[-1:]  # one host, one set of paths: the last one
    assert listed("latest") == two_snapshots[-1:]
    assert listed(two_snapshots[0][:8]) == two_snapshots[:1]
    none = cli("snapshots", "--host", "elsewhere", env=env)
    assert none.returncode == 0 and none.stdout == "0 snapshots\n", none  # no header above nothing
    bad = cli("snapshots", "--latest", "0", env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
