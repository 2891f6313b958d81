"""A files restore the daemon does names what it kept, warned about and could not restore by the
same places in the target as one in process (tests/archive/test_restore_places.py): the daemon is
given the absolute target, the user sees the target as they named it."""

from __future__ import annotations

from pathlib import Path

from shadowvault.client import Client
from tests.archive.test_restore_places import (
    Snap,
    assert_latin1_said,
    assert_latin1_text,
    assert_text,
    entries_said,
    expected_lines,
    latin1,  # noqa: F401 - the fixture
    prepare,
    prepare_latin1,
    restore,
    snap,  # noqa: F401 - the fixture
)
from tests.service.daemon import running_daemon


def test_the_daemon_names_the_same_places(snap: Snap, tmp_path: Path):  # noqa: F811 - the fixture
    with running_daemon() as daemon:
        env = {k: v for k, v in snap.env.items() if k != "SHADOWVAULT_NO_DAEMON"}
        env["SHADOWVAULT_SOCKET"] = str(daemon.socket)
        here = tmp_path / "here"

        whole = here / "whole"
        place = f"{whole}{snap.www}"
        prepare(Path(place))
        done = restore(env, "latest", whole, "--json")
        assert done.returncode == 3, done.stderr
        assert entries_said(done) == expected_lines(snap.www, place)

        prepare(here / "sub")  # a relative target: named as given, not as the daemon was given it
        done = restore(env, f"latest:{snap.www}", "sub", "--json", cwd=here)
        assert done.returncode == 3, done.stderr
        assert entries_said(done) == expected_lines(snap.www, "sub")
        assert_text(restore(env, f"latest:{snap.www}", "sub", cwd=here), "sub")

        for name, code in (("index.html", 0), ("sealed", 0), ("blocked", 1)):
            done = restore(env, f"latest:{snap.www}/{name}", "sub", "--json", cwd=here)
            assert done.returncode == code, done.stderr
            assert entries_said(done) == expected_lines(snap.www, "sub", (name,))

        with Client(daemon.socket) as client:
            assert [r["kind"] for r in client.runs()] == ["restore"] * 6


def test_the_daemon_gives_names_that_are_not_utf8_exactly(latin1: Snap, tmp_path: Path):  # noqa: F811
    """The daemon's run reports the paths exactly (path_bytes), so the command shows the same."""
    with running_daemon() as daemon:
        env = {k: v for k, v in latin1.env.items() if k != "SHADOWVAULT_NO_DAEMON"}
        env["SHADOWVAULT_SOCKET"] = str(daemon.socket)
        here = tmp_path / "here"
        prepare_latin1(here / "sub")
        done = restore(env, f"latest:{latin1.www}", "sub", "--json", cwd=here)
        assert_latin1_said(done, latin1.www, "sub", cwd=here)
        assert_latin1_text(restore(env, f"latest:{latin1.www}", "sub", cwd=here), "sub")
        with Client(daemon.socket) as client:
            assert [r["kind"] for r in client.runs()] == ["restore"] * 2
